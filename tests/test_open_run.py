"""A notebook opens a finished run folder: it reads the tables back, shows the saved figures, draws only what is
missing (never attacking), and writes nothing into a committed reference."""
from __future__ import annotations

import hashlib
import json

import pytest

from ama.artifacts import FIGURES
from ama.params import RunParams
from ama.paths import ROOT
from ama.runs import folder as runs
from ama.store.tables import read_table

DEFAULT = ROOT / "results" / "reference" / "lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0"
FAST = ROOT / "results" / "reference" / "lite0_imagenet_n2_e1-2_it5_lamb100_seed0_auc_steps4_fast"
ATTACK = "03_adversarial_marginal_attack"


def digest(folder) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_reference_opens_finished_and_read_only():
    folder = runs.open_run(None, FAST, ATTACK)
    assert folder.finished and folder.read_only
    assert folder.params == RunParams.from_dict(json.loads((FAST / "params.json").read_text()))
    tables = folder.compute("attack")
    assert folder.extras is None
    assert read_table(FAST / "tables", "attack_metrics").equals(tables["attack_metrics"])
    assert {"attack_summary", "cam_null", "attack_complete_change"} <= set(tables)


@pytest.mark.parametrize("reference", [DEFAULT, FAST], ids=["default", "fast"])
def test_a_reference_chooses_its_images_again_from_its_saved_predictions(reference):
    params = runs.run_params(None, reference)
    chosen = [r.name for r in runs.chosen_records(params, reference / "tables")]
    shown = list(dict.fromkeys(read_table(reference / "tables", "misalignment").image))
    assert chosen == shown


def test_a_reference_refuses_to_be_recomputed_or_opened_with_other_parameters():
    with pytest.raises(runs.RunFolderError, match="read-only: copy it under results/ to recompute it"):
        runs.open_run(None, FAST, ATTACK, recompute=True)
    with pytest.raises(runs.RunFolderError, match="holds a run of other parameters"):
        runs.open_run({"n_images": 3}, FAST, ATTACK)
    with pytest.raises(runs.RunFolderError, match="has no finished 06_other"):
        runs.open_run(None, FAST, "06_other")


def test_a_run_folder_is_finished_only_when_its_notebook_ended_ok(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {ATTACK: {"status": "running"}}}))
    assert not runs.open_run({}, tmp_path, ATTACK).finished  # killed mid-way: computed again
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {ATTACK: {"status": "ok"}}}))
    assert runs.open_run({}, tmp_path, ATTACK).finished
    assert not runs.open_run({}, tmp_path, ATTACK, recompute=True).finished


@pytest.mark.slow
def test_notebook_03_opens_a_reference_without_attacking_or_writing(tmp_path):
    """The notebook as a JupyterLab user runs it on a committed reference, with a last cell that counts the attacks
    its kernel ran."""
    import nbformat
    import papermill as pm

    nb = nbformat.read(ROOT / "notebooks" / f"{ATTACK}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        'from ama.attack import marginal\nassert sum(marginal.CALLS.values()) == 0, marginal.CALLS\n'
        'print("no attack ran")'))
    source = tmp_path / "03.ipynb"
    nbformat.write(nb, source)
    before = digest(FAST)
    out = pm.execute_notebook(str(source), str(tmp_path / "03_out.ipynb"), kernel_name="ama", progress_bar=False,
                              parameters=dict(out_dir=str(FAST)), cwd=str(ROOT / "notebooks"))
    assert digest(FAST) == before
    texts = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert "no attack ran" in texts
    assert "attack_keep_example: not saved in this run folder, and drawing it attacks images again" in texts
    shown = [o.get("data", {}) for c in out.cells if c.cell_type == "code" for o in c.outputs]
    images = sum("image/png" in d or d.get("text/plain", "").startswith("<Figure") for d in shown)  # (tests: Agg)
    saved = sum(f.notebook == "03" for f in FIGURES
                if (FAST / "figures" / f"{f}.png").is_file())
    assert images >= saved + 2  # the saved ones shown, and the random baseline and history drawn from the tables


@pytest.mark.slow
def test_a_finished_run_is_read_back_and_left_as_it_was(fast_run, tmp_path):
    """Notebook 01 on ``make reproduce FAST=1``'s finished folder: nothing recomputed, nothing rewritten."""
    import papermill as pm

    before = digest(fast_run.dir / "tables")
    pm.execute_notebook(str(ROOT / "notebooks" / "01_occlusion.ipynb"), str(tmp_path / "01.ipynb"),
                        kernel_name="ama", progress_bar=False, parameters=dict(out_dir=str(fast_run.dir)),
                        cwd=str(ROOT / "notebooks"))
    assert digest(fast_run.dir / "tables") == before


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("0[1-5]_*.ipynb")))
def test_each_notebook_opens_the_default_reference_as_committed(notebook):
    """A JupyterLab user's first run of a notebook shows the default reference: its ``out_dir`` is that committed
    folder, whose parameters are the kit's defaults, and the README names the same folder."""
    import papermill as pm

    from ama.params import RunParams

    declared = pm.inspect_notebook(str(ROOT / "notebooks" / notebook))
    out_dir = json.loads(declared["out_dir"]["default"])
    assert ROOT / out_dir == DEFAULT and (DEFAULT / "run.json").is_file()
    assert RunParams.from_dict(json.loads((DEFAULT / "params.json").read_text())) == RunParams()
    assert "params" not in declared or declared["params"]["default"] == "None"
    assert out_dir in (ROOT / "README.md").read_text()
