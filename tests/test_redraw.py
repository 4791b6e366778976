"""tools/redraw_figures.py: a reference's figures redrawn from its tables, and the RunFolder flag it opens folders
with (a finished folder draws a missing figure that attacks images again only when opened to redraw)."""
from __future__ import annotations

import importlib.util
import json
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ama.paths import ROOT  # noqa: E402
from ama.runs import folder as runs  # noqa: E402

FAST = ROOT / "results" / "reference" / "lite0_imagenet_n2_e1-2_it5_lamb100_seed0_auc_steps4_fast"
ATTACK = "03_adversarial_marginal_attack"


def _tool():
    spec = importlib.util.spec_from_file_location("redraw_figures", ROOT / "tools" / "redraw_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finished(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {ATTACK: {"status": "ok"}}}))
    return tmp_path


@pytest.mark.parametrize("redraw, drawn", [(False, False), (True, True)])
def test_a_finished_folder_attacks_again_only_when_opened_to_redraw(tmp_path, capsys, redraw, drawn):
    calls = []

    def draw():
        calls.append(1)
        return plt.figure()

    runs.open_run({}, _finished(tmp_path), ATTACK, redraw=redraw).figure("attack_examples", draw, attacks=True)
    assert bool(calls) == drawn and (tmp_path / "figures" / "attack_examples.png").is_file() == drawn
    assert ("drawing it attacks images again" in capsys.readouterr().out) != drawn


def test_the_module_flag_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "REDRAW", True)
    assert runs.open_run({}, _finished(tmp_path), ATTACK).redraw
    assert not runs.open_run({}, _finished(tmp_path), ATTACK, redraw=False).redraw


def test_the_tool_runs_each_notebook_on_the_scratch_folder(tmp_path):
    tool = _tool()
    code = tool.notebook_code(ROOT / "notebooks" / f"{ATTACK}.ipynb", tmp_path)
    assert code[0] == f"params = None\nout_dir = {str(tmp_path)!r}\nrecompute = False\nsharded = False\n"
    assert any("folder.figure(" in c for c in code)
    assert "figures/attack_examples.png" in tool.report_figures(FAST)


def test_redrawing_one_notebook_leaves_the_others_figures():
    """``--notebooks 05_beyond_the_paper`` redraws notebook 05's figures: the claims' figures are kept (it had removed
    every figure it did not draw)."""
    figures = _tool().report_figures(FAST)
    kept = _tool()._not_drawn_by(["05_beyond_the_paper"], figures)
    assert {"figures/attack_examples.png", "figures/erf_vs_irf.png"} <= kept
    assert "figures/attack_location.png" in figures - kept
    assert _tool()._not_drawn_by(list(_tool().NOTEBOOKS), figures) == set()


@pytest.mark.slow
def test_the_tool_redraws_a_reference_in_full_colour(tmp_path):
    """A copy of the FAST reference redrawn (about a minute): every figure it held is RGB or an exact palette now, its
    tables untouched, the redraw recorded in run.json."""
    ref = ROOT / "results" / f"test_redraw_{tmp_path.name}"
    shutil.copytree(FAST, ref)
    try:
        before = {p.name: p.read_bytes() for p in (ref / "tables").iterdir()}
        record = _tool().redraw(ref, ROOT / "results" / "redraw" / ref.name)
        assert record["drawn"] and set(record["drawn"]) | set(record["removed"]) == \
            {p.stem for p in (FAST / "figures").glob("*.png")}
        for name in record["drawn"]:
            with Image.open(ref / "figures" / f"{name}.png") as im:
                assert im.mode in ("RGB", "P") and (im.mode == "RGB" or len(im.getcolors()) <= 256)
        assert {p.name: p.read_bytes() for p in (ref / "tables").iterdir()} == before
        assert json.loads((ref / "run.json").read_text())["figures_redrawn"]["drawn"] == record["drawn"]
        again = _tool().redraw(ref, ROOT / "results" / "redraw" / ref.name, ["04_report"])  # the report's only
        assert again["earlier"][0]["drawn"] == record["drawn"]  # the first redraw stays on record
        assert not (ROOT / "results" / "redraw" / ref.name).exists()  # the scratch folder is gone
    finally:
        shutil.rmtree(ref, ignore_errors=True)
