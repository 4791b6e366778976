"""Every figure's caption (ama.studies.captions): declared for each figure, written from the committed references'
tables without nan, short, shown under the figure by the notebooks; and the notebooks open with their question."""
from __future__ import annotations

import re

import nbformat
import pandas as pd
import pytest

from ama.artifacts import FIGURES, TABLES
from ama.params import PROFILES
from ama.paths import ROOT
from ama.report.evidence import EVIDENCE_PROFILE, MODELS_PROFILE, profile_reference
from ama.store.tables import read_table
from ama.studies import captions
from ama.studies.claims import aligned_null_gaps
from ama.studies.registry import studies

REFERENCE = ROOT / "results" / "reference"
RUNS = {"default": "lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0",
        "fast": "lite0_imagenet_n2_e1-2_it5_lamb100_seed0_auc_steps4_fast",
        "evidence": profile_reference(EVIDENCE_PROFILE).name,
        "models": profile_reference(MODELS_PROFILE).name}
NOTEBOOKS = ("01_occlusion", "02_receptive_field_misalignment", "03_adversarial_marginal_attack", "04_report",
             "05_beyond_the_paper")
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(?:\.\d+)?")


def test_every_declared_figure_has_a_caption_function():
    studies()  # the studies' figures are declared with them
    missing = [str(f) for f in FIGURES if captions.figure_caption(f) is None]
    assert missing == []
    for study in studies().values():
        assert all(callable(f.caption) for f in study.figures), study.name


@pytest.mark.parametrize("run", sorted(RUNS))
def test_each_drawn_figure_has_a_short_caption_without_nan(run):
    run_dir = REFERENCE / RUNS[run]
    studies()
    drawn = [f for f in FIGURES if (run_dir / "figures" / f"{f}.png").is_file()]
    assert len(drawn) >= 9  # every figure its report shows
    for name in drawn:
        text = captions.caption(run_dir, name)
        assert isinstance(text, str) and text.strip(), name
        assert "nan" not in text.lower().split() and not re.search(r"\bnan\b", text, re.I), (name, text)
        assert len(text.split()) <= 40 and len(NUMBER.findall(text)) <= 6, (name, text)


def test_a_caption_is_the_runs_own_numbers():
    run_dir = REFERENCE / RUNS["default"]
    gaps = aligned_null_gaps(read_table(run_dir / "tables", TABLES.misalignment))
    text = captions.caption(run_dir, FIGURES.misalignment_by_cell_kind)
    low, high = min(g.value for g in gaps.values()), max(g.value for g in gaps.values())
    assert f"{100 * low:+.0f}%" in text and f"{100 * high:+.0f}%" in text and "8 images" in text
    evidence = captions.caption(REFERENCE / RUNS["evidence"], FIGURES.misalignment_by_cell_kind)
    assert f"{PROFILES[EVIDENCE_PROFILE]['n_images']} images" in evidence and evidence != text


def test_missing_or_nan_tables_give_no_caption(tmp_path):
    assert captions.caption(tmp_path, FIGURES.attack_metrics_vs_e) is None  # no tables at all
    assert captions.caption(tmp_path, "no_such_figure") is None
    (tmp_path / "tables").mkdir()
    source = REFERENCE / RUNS["default"] / "tables" / f"{TABLES.attack_summary}.csv"
    summary = pd.read_csv(source)
    summary.to_csv(tmp_path / "tables" / source.name, index=False)
    assert "62%" in captions.caption(tmp_path, FIGURES.attack_metrics_vs_e)
    summary.assign(fooling_rate=float("nan")).to_csv(tmp_path / "tables" / source.name, index=False)
    assert captions.caption(tmp_path, FIGURES.attack_metrics_vs_e) is None
    summary.iloc[:0].to_csv(tmp_path / "tables" / source.name, index=False)
    assert captions.caption(tmp_path, FIGURES.attack_metrics_vs_e) is None


def test_the_run_folder_shows_the_caption_under_the_figure(monkeypatch):
    import IPython.display

    from ama.runs.folder import open_run

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    folder = open_run(None, REFERENCE / RUNS["default"], "02_receptive_field_misalignment")
    folder.figure(FIGURES.misalignment_by_cell_kind, lambda: pytest.fail("a finished folder draws nothing"))
    assert [type(o).__name__ for o in shown] == ["Image", "Markdown"]
    assert captions.caption(folder.out, FIGURES.misalignment_by_cell_kind) in shown[1].data


def test_a_study_figure_is_captioned_in_notebook_05(monkeypatch, tmp_path):
    import IPython.display

    from ama.runs.folder import open_run
    from ama.studies import beyond

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    folder = open_run(None, REFERENCE / RUNS["default"], "05_beyond_the_paper")
    beyond.show(folder, "location")
    texts = [o.data for o in shown if type(o).__name__ == "Markdown"]
    assert captions.caption(folder.out, FIGURES.attack_location) in texts[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_opens_with_its_question(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    lines = [line for line in first.source.splitlines() if line.strip()]
    question = lines[1] if lines[0].startswith("# ") and not lines[0].rstrip().endswith("?") else lines[0]
    assert question.rstrip().endswith(("?", "?**")), (name, question)
    assert question.startswith(("#", "**")), (name, question)  # a heading or bold
    assert len(first.source.split()) <= 160, name  # the opening cell stays short


def test_notebook_05_shows_every_study():
    nb = nbformat.read(ROOT / "notebooks" / "05_beyond_the_paper.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    shown = re.findall(r'beyond\.show\(folder, "(\w+)"\)', code)
    assert sorted(shown) == sorted(studies())
