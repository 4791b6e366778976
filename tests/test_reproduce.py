"""make reproduce end to end (fast mode), Make's dependencies, failures, make check, the paper's setting."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch
import torchvision
from conftest import FastRun, run_make

from ama.artifacts import TABLES
from ama.inputs.models import torchvision_weight_file

pytestmark = pytest.mark.slow
NOTEBOOKS = ("01_occlusion", "02_receptive_field_misalignment", "03_adversarial_marginal_attack", "05_beyond_the_paper",
             "04_report")


def test_fast_run_writes_every_artifact(fast_run):
    run = fast_run.dir
    for nb in NOTEBOOKS:
        assert (run / "notebooks" / f"{nb}.ipynb").is_file()
        assert f"== {nb}: done in" in fast_run.output
    assert (run / "04_report.html").is_file()
    info = json.loads((run / "run.json").read_text())
    assert set(info["notebooks"]) == set(NOTEBOOKS)
    assert all(v["status"] == "ok" and v["wall_s"] >= 0 for v in info["notebooks"].values())
    assert info["params"]["fast"] is True and torch.__version__.startswith(info["versions"]["torch"])
    assert info["device"].startswith("cpu") and info["git_commit"]
    assert list((run / "figures").glob("*.png")) and list((run / "figures").glob("*.pdf"))
    report = (run / "REPORT.md").read_text()
    for number in (1, 2, 3):
        assert f"## Claim {number}:" in report
    assert "not measured on this run" not in report  # every claim found its table
    assert report.count("**Verdict (Holm):") == 3
    for png in (line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")):
        assert (run / png).is_file()
    assert "comparison skipped" in fast_run.output  # fast parameters differ from the reference's
    from ama.artifacts import FIGURES  # every artifact is declared, and a FAST run writes every FAST one
    from ama.studies.registry import studies

    studies()  # the studies declare theirs

    for declared, folder, suffix in ((TABLES, "tables", ".csv"), (FIGURES, "figures", ".png")):
        written = {re.sub(r"_\d+$", "", p.name.removesuffix(suffix)) for p in (run / folder).glob(f"*{suffix}")}
        assert written <= {str(a) for a in declared}, f"undeclared {folder}: {written - set(map(str, declared))}"
        assert {str(a) for a in declared if a.fast} <= written, f"declared, not written: {folder}"
    from ama.store import lineage  # every table's lineage, recorded as it was written
    written = lineage.read(run / "tables")
    assert set(written) == {p.stem for p in (run / "tables").glob("*.csv")}
    for name in ("occlusion_keep_irf", "occlusion_margin", "misalignment", "clean_predictions"):
        assert not lineage.is_stochastic(written[name]), name
    for name in ("attack_metrics", "attack_summary", "attack_targeted", "faithfulness", "transfer",
                 "attack_location", "upsampling_summary"):
        assert lineage.is_stochastic(written[name]), name
    defence = pd.read_csv(run / "tables" / "border_defence.csv")  # the defended image never depends on the frame
    assert defence.same_as_clean.all() and (defence.restored == defence.clean_kept).all()
    assert set(defence.defence) == {"replicate", "crop_resize"} and set(defence.e) == {1, 2}
    cost = pd.read_csv(run / "tables" / "border_defence_cost.csv")
    assert (cost.n_images == 50).all() and "## A border defence: should one worry about 1-pixel frames?" in report
    from ama.studies import claims  # the report's numbers are the tables' (claim 1: the centre cells' mean)
    table = pd.read_csv(run / "tables" / "misalignment.csv")
    centre = (table[table.cell_kind == "centre"].groupby(["model", "image"]).erf_mass_outside_irf.mean()
              .groupby(level="image").mean().mean())  # per model and image, then per image over the models
    estimate = claims.centre_mass_outside(table)
    assert estimate.value == pytest.approx(centre)
    gap = ((table.erf_mass_outside_irf - table.centred_gaussian_mass_outside_irf)[table.cell_kind == "centre"]
           .groupby([table.model, table.image]).mean().groupby(level=1).mean().mean())  # claim 1 against its null
    null = claims.aligned_null_gaps(table)["centre"]
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731 - as the claims table writes it
    assert null.value == pytest.approx(gap)
    assert f"centre {pct(null.value)} ({pct(null.low)} to {pct(null.high)})" in report  # the claims table's statistic


def test_tables_are_tidy(fast_run):
    """One row per unit (no key twice), and each summary is its per-image table aggregated."""
    from ama.stats.rows import original_attack

    tables = {p.stem: pd.read_csv(p) for p in (fast_run.dir / "tables").glob("*.csv")}
    units = {"occlusion_keep_irf": ["model", "image", "fill", "cell"], "occlusion_margin": ["model", "image", "e", "fill"],
             "misalignment": ["model", "image", "cell"], "transfer": ["model", "image", "e", "optimizer", "method"],
             "attack_metrics": ["model", "image", "setting", "e", "n_iter", "mode", "quantized"],
             "upsampling_comparison": ["model", "image", "upsampling"]}
    for name, keys in units.items():
        assert len(tables[name]) > 0 and not tables[name].duplicated(keys).any(), name
    metrics, summary = tables["attack_metrics"], tables["attack_summary"]
    fooled = metrics[metrics.quantized].groupby(["model", "e", "n_iter", "mode", "setting"]).fooled.mean()
    got = summary[summary.quantized].set_index(["model", "e", "n_iter", "mode", "setting"]).fooling_rate
    assert got.sort_index().tolist() == pytest.approx(fooled.sort_index().tolist())
    ref = original_attack(summary)
    assert set(ref.n_iter) == {5} and (ref.setting == "attack").all()
    cells = tables["occlusion_margin_cells"].groupby(["model", "e", "fill", "cell"]).abs_delta.mean()
    means = tables["occlusion_margin_cell_means"].set_index(["model", "e", "fill", "cell"]).abs_delta
    assert means.sort_index().tolist() == pytest.approx(cells.sort_index().tolist(), rel=1e-4)  # CSVs hold 6 digits
    checks = tables["transfer_scale_check"]
    assert (checks.n_images == 2).all() and (checks.max_abs_diff < 1e-4).all()


def test_up_to_date_notebooks_are_not_rerun(fast_run):
    run = fast_run.dir
    before = {nb: (run / "notebooks" / f"{nb}.ipynb").stat().st_mtime_ns for nb in NOTEBOOKS}
    proc = run_make("reproduce", *fast_run.args(fast_run.results))
    assert proc.returncode == 0, proc.stderr
    assert ": running" not in proc.stdout
    assert before == {nb: (run / "notebooks" / f"{nb}.ipynb").stat().st_mtime_ns for nb in NOTEBOOKS}


def test_failing_notebook_stops_the_pipeline(tmp_path):
    from test_pipeline import _notebook

    from ama.paths import ROOT

    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns("kernel-ipc-*", ".ipynb_checkpoints"))
    _notebook(notebooks / "01_occlusion.ipynb", "raise RuntimeError('occlusion broke')")
    proc = run_make("reproduce", "FAST=1", "RUN=broken", f"RESULTS={tmp_path / 'results'}", f"NOTEBOOKS={notebooks}")
    assert proc.returncode != 0
    assert "notebook 01_occlusion.ipynb failed in cell" in proc.stderr and "occlusion broke" in proc.stderr
    assert (tmp_path / "results" / "broken" / "notebooks" / "01_occlusion.FAILED.ipynb").is_file()
    assert not (tmp_path / "results" / "broken" / "notebooks" / "02_receptive_field_misalignment.ipynb").exists()


def _checksums(folder) -> dict:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad, message", [
    ("DEVICE=cuda", "device 'cuda' is not usable here"), ("MODELS=nosuch", "unknown model 'nosuch'"),
    ("E=1 300", "below half the smaller image side"), ("IMAGES=/nonexistent", "/nonexistent: no such file"),
    ("N_IMAGES=abc", "n_images must be an integer"), ("E=0", "must be a positive integer, got 0")])
def test_a_refused_make_command_leaves_the_finished_run_as_it_was(fast_run, bad, message):
    """Every parameter is checked before anything is written, and the last line is the message (not make's own)."""
    before, folders = _checksums(fast_run.dir), sorted(fast_run.results.iterdir())
    args = [a for a in FastRun.args(fast_run.results) if a.split("=")[0] != bad.split("=")[0]]
    refused = run_make("reproduce", *args, bad)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert message in last and last.count("error:") == 1, refused.stderr
    assert "Error 1" not in refused.stderr and "running" not in refused.stdout
    assert _checksums(fast_run.dir) == before and sorted(fast_run.results.iterdir()) == folders


def test_make_check_detects_a_changed_table(fast_run, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(fast_run.dir / "tables", reference / "tables")
    shutil.copy(fast_run.dir / "run.json", reference / "run.json")
    args = ("check", "RUN=fast", f"RESULTS={fast_run.results}", f"REFERENCE={reference}")
    ok = run_make(*args)
    assert ok.returncode == 0 and "matches the reference" in ok.stdout
    table = sorted((reference / "tables").glob("misalignment*.csv"))[0]
    df = pd.read_csv(table)
    column = next(c for c in df.columns if pd.api.types.is_float_dtype(df[c]))
    df.loc[0, column] += 0.5
    df.to_csv(table, index=False)
    changed = run_make(*args)
    assert changed.returncode != 0 and f"'{column}' differs in 1 of" in changed.stdout


def test_paper_setting_stops_at_once_without_weights(tmp_path):
    proc = run_make("reproduce", "MODELS=resnet50 resnet101", f"RESULTS={tmp_path}", "RUN=paper",
                    env={"TORCH_HOME": str(tmp_path / "torch"), "AMA_OFFLINE": "1"}, timeout=120)
    assert proc.returncode != 0
    assert "resnet50 weights not found" in proc.stderr and "resnet50-0676ba61.pth" in proc.stderr
    assert not (tmp_path / "paper" / "notebooks").exists()


def test_paper_setting_loads_weights_from_torch_home(tmp_path):
    """Random-init weights under the expected cache file names: the pipeline's model check passes."""
    home = tmp_path / "torch"
    env = {"TORCH_HOME": str(home), "AMA_OFFLINE": "1"}
    for name in ("resnet50", "resnext50_32x4d"):
        import os

        os.environ["TORCH_HOME"] = str(home)
        try:
            file = torchvision_weight_file(name)
        finally:
            del os.environ["TORCH_HOME"]
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), file)
    proc = run_make(f"{tmp_path}/paper/params.json", "MODELS=resnet50 resnext50_32x4d", f"RESULTS={tmp_path}",
                    "RUN=paper", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "paper" / "params.json").read_text())["models"] == ["resnet50", "resnext50_32x4d"]


def test_report_compares_the_models(fast_run):
    report = (fast_run.dir / "REPORT.md").read_text()
    assert "## Across models" in report and "2 models, each at its own input size: claim 1 holds for" in report
    section = report.split("## Across models", 1)[1].split("\n## ", 1)[0]
    assert "| lite0 " in section and "| lite1 " in section and "| claim 1 " in section
    assert (fast_run.dir / "figures" / "attack_across_models.png").stat().st_size > 10_000
    from ama.studies.claims import model_table

    table = model_table(fast_run.dir)
    assert list(table.model) == ["lite0", "lite1"] and list(table.grid) == ["7 x 7", "8 x 8"]
    summary = pd.read_csv(fast_run.dir / "tables" / "attack_summary.csv")
    ref = summary[(summary.setting == "attack") & (summary["mode"] == "flip") & summary.quantized & (summary.e == 1)]
    assert table.set_index("model").fooling_e1.to_dict() == pytest.approx(ref.set_index("model").fooling_rate.to_dict())


def test_two_processes_give_the_one_process_tables(fast_run, tmp_path):
    """make NPROC=2 (torchrun, 2 CPU ranks) of notebook 03 on lite0 writes the lite0 rows of the shared run: per image
    and per model the experiments are independent, so the split and the other models change nothing. The run is given
    the shared run's images (its selection.csv: images every one of its models classifies correctly)."""
    from ama.runs import pipeline
    from ama.runs.check import compare_tables
    from ama.store import lineage

    run = tmp_path / "nproc2"
    run.mkdir()
    (run / "params.json").write_text(json.dumps(pipeline.make_params(fast=1, models="lite0", device="cpu"), indent=2)
                                     + "\n")
    shutil.copy(fast_run.dir / "selection.csv", run / "selection.csv")  # newer than params.json: Make keeps it
    # Notebook 03 alone, the sharded attack: its order-only prerequisites 01 and 02 stand in as up-to-date files (their
    # experiments, like 05's, shard by the same code, ama.runs.shards), to keep make test short.
    (run / "notebooks").mkdir()
    for stem in ("01_occlusion", "02_receptive_field_misalignment"):
        (run / "notebooks" / f"{stem}.ipynb").write_text("{}\n")
    proc = run_make(str(run / "notebooks" / "03_adversarial_marginal_attack.ipynb"), "FAST=1", "MODELS=lite0",
                    "NPROC=2", "DEVICE=cpu", "RUN=nproc2", f"RESULTS={tmp_path}")
    assert "== images:" not in proc.stdout  # the given selection was used
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== attack: merged 2 part(s)" in proc.stdout
    two = sorted((tmp_path / "nproc2" / "tables").glob("*.csv"))
    one_process = {p.stem for p in (fast_run.dir / "tables").glob("*.csv")}
    selection = {TABLES.clean_accuracy, TABLES.clean_predictions}  # the image selection's, which this run was given
    expected = {str(t) for t in TABLES if t.notebook == "03" and t not in selection} & one_process
    assert {p.stem for p in two} == expected
    written = lineage.read(tmp_path / "nproc2" / "tables")
    assert lineage.is_stochastic(written["attack_metrics"])  # compared as statistics; a table with no attack exactly
    for path in two:
        one = pd.read_csv(fast_run.dir / "tables" / path.name)
        one = one[one.model == "lite0"].reset_index(drop=True)
        stochastic = lineage.is_stochastic(written[path.stem])
        assert compare_tables(pd.read_csv(path), one, path.stem, stochastic=stochastic) == [], path.stem
    info = json.loads((tmp_path / "nproc2" / "run.json").read_text())["notebooks"]["03_adversarial_marginal_attack"]
    assert 0 < info["sharded_s"] <= info["wall_s"]  # the notebook's time includes its torchrun pre-step


def test_a_study_runs_alone(tmp_path):
    """``make study``: the named studies of notebook 05 on the run's images, then the report; no claim's notebook runs
    (the attacks the study needs are made for it), and the report says the claims were not measured."""
    proc = run_make("study", "FAST=1", "STUDIES=sides", "DEVICE=cpu", "RUN=study", f"RESULTS={tmp_path}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = tmp_path / "study"
    assert sorted(p.stem for p in (run / "notebooks").glob("*.ipynb")) == ["04_report", "05_beyond_the_paper"]
    tables = {p.name.removesuffix(".csv") for p in (run / "tables").glob("*.csv")}
    assert {"attack_sides", "attack_sides_summary"} <= tables and "attack_metrics" not in tables
    assert "attack_location" not in tables  # only the study named
    report = (run / "REPORT.md").read_text()
    assert "it tests none of the paper's claims" in report and "## The claims" not in report and "Confined to one side, the reference attack fools" in report
    assert f"== done: {tmp_path}/study/REPORT.md (studies: sides)" in proc.stdout
