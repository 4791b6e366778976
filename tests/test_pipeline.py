"""The make reproduce machinery: parameters, the papermill runner, run.json, and make check."""
from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from ama.params import PROFILES, RunParams
from ama.paths import ROOT
from ama.runs import pipeline, check as reference
from ama.store import tables as results


def test_make_params_from_make_variables():
    p = pipeline.make_params(models="lite0 resnet50", images="data/samples", n_images="", e="2 1", n_iter="50",
                             lamb="100", seed="3", device="cpu", fast="1")
    assert p == {**RunParams().to_dict(), **dict(models=["lite0", "resnet50"], images="data/samples",
                                                 n_images=2, e=[1, 2], n_iter=5, seed=3, device="cpu",
                                                 fast=True, auc_steps=4)}  # FAST recorded as it runs
    assert pipeline.make_params(profile="imagenet")["n_images"] == PROFILES["imagenet"]["n_images"]
    assert pipeline.make_params() == RunParams().to_dict()  # empty Make variables: the defaults, from one place
    nb = pipeline.notebook_parameters(p, "results/x", sharded=True)
    assert nb == dict(params=p, out_dir="results/x", recompute=True, sharded=True)


@pytest.mark.parametrize("kwargs, message", [(dict(models=","), "models is empty"), (dict(e="0 1"), "e .*positive"),
                                             (dict(n_iter="0"), "n_iter"), (dict(lamb="-1"), "lamb"),
                                             (dict(lamb="nan"), "lamb"), (dict(seed=str(2 ** 70)), "seed"),
                                             (dict(e="1 x"), "integers")])
def test_bad_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline.make_params(**kwargs)


def test_write_if_changed_keeps_mtime(tmp_path):
    path = tmp_path / "p.json"
    assert pipeline.write_if_changed(path, "a")
    before = path.stat().st_mtime_ns
    assert not pipeline.write_if_changed(path, "a")
    assert path.stat().st_mtime_ns == before
    assert pipeline.write_if_changed(path, "b") and path.read_text() == "b"


def test_params_command_stops_at_once_for_missing_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "run" / "params.json"
    assert pipeline.main(["params", "--out", str(out), "--MODELS", "lite0 resnet50"]) == 1
    err = capsys.readouterr().err
    assert "resnet50 weights not found" in err and "resnet50-0676ba61.pth" in err
    assert not out.exists()  # so the next make tries again


def _table(**over):
    df = pd.DataFrame({"image": ["a", "b"], "cell_kind": ["centre", "edge"], "value": [0.5, 0.25]})
    for k, v in over.items():
        df[k] = v
    return df


def test_compare_tables():
    ref = _table()
    assert reference.compare_tables(_table(), ref, "t") == []
    assert reference.compare_tables(_table(value=[0.5, 0.25 + 1e-7]), ref, "t") == []
    diff = reference.compare_tables(_table(value=[0.5, 0.3]), ref, "misalignment")
    assert len(diff) == 1 and "'value' differs in 1 of 2 rows" in diff[0] and "0.3 vs reference 0.25" in diff[0]
    assert "column 'image'" in reference.compare_tables(_table(image=["a", "c"]), ref, "t")[0]
    assert "1 rows, reference has 2" in reference.compare_tables(ref.iloc[:1], ref, "t")[0]
    assert "columns differ" in reference.compare_tables(ref.drop(columns="value"), ref, "t")[0]
    # rows are matched by their text columns, whatever their order
    assert reference.compare_tables(ref.iloc[::-1], ref, "t") == []
    swapped = _table(value=[0.25, 0.5])  # the same numbers on the other images
    assert "'value' differs in 2 of 2 rows" in reference.compare_tables(swapped, ref, "t")[0]
    # stochastic tables (test_reference.py): a true/false result by a sign test, a class name not at all
    fooled, name = _table(fooled=[True, False], adv_name=["x", "y"]), _table(fooled=[False, True], adv_name=["y", "z"])
    assert reference.compare_tables(name, fooled, "attack_metrics", stochastic=True) == []
    assert "column 'fooled' differs in 2 rows" in reference.compare_tables(name, fooled, "misalignment")[0]


def _write_run(folder, params, tables):
    (folder / "tables").mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    for name, df in tables.items():
        df.to_csv(folder / "tables" / f"{name}.csv", index=False)


def test_check_run(tmp_path):
    params = pipeline.make_params()
    ref, run = tmp_path / "reference", tmp_path / "run"
    _write_run(ref, params, {"sizes": _table()})
    (ref / "run.json").write_text(json.dumps({"params": {**params, "device": "cuda"}}))
    _write_run(run, params, {"sizes": _table()})
    ok, lines = reference.check_run(run, ref)
    assert ok and "matches the reference" in lines[0] and ": 1 tables" in lines[0]
    _table(value=[0.5, 0.3]).to_csv(run / "tables" / "sizes.csv", index=False)
    ok, lines = reference.check_run(run, ref)
    assert not ok and "differs from the reference" in lines[0] and "in 1 places" in lines[0]
    (run / "params.json").write_text(json.dumps({**params, "seed": 1}))
    ok, lines = reference.check_run(run, ref)
    assert ok and "seed" in lines[0] and "skipped" in lines[0]
    (run / "params.json").write_text(json.dumps(params))
    (run / "tables" / "sizes.csv").unlink()
    ok, lines = reference.check_run(run, ref)
    assert not ok and "missing from this run" in lines[1]


def _notebook(path, code, tagged=True):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("out_dir = 'x'\nfast = False")
    if tagged:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "ama", "display_name": "Python (ama)", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_run_notebook_failure_names_notebook_and_cell(tmp_path):
    nb = tmp_path / "01_broken.ipynb"
    _notebook(nb, "raise ValueError('the cell broke')")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"notebook 01_broken.ipynb failed in cell \[3\].*the cell broke"):
        pipeline.run_notebook(nb, run, pipeline.make_params(), progress=False)
    assert (run / "notebooks" / "01_broken.FAILED.ipynb").is_file()
    assert not (run / "notebooks" / "01_broken.ipynb").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["notebooks"]["01_broken"]["status"] == "failed" and info["versions"]["torch"]


def test_run_notebook_refuses_untagged_parameters(tmp_path):
    nb = tmp_path / "02_untagged.ipynb"
    _notebook(nb, "print(1)", tagged=False)
    with pytest.raises(RuntimeError, match="no cell tagged 'parameters'"):
        pipeline.run_notebook(nb, tmp_path / "run", pipeline.make_params(), progress=False)


def test_check_run_picks_the_reference_of_the_same_parameters(tmp_path):
    """A references folder holds one sub-folder per parameter set; a run is compared with its own."""
    default, three = pipeline.make_params(), pipeline.make_params(models="lite0 lite1 lite2")
    root, run = tmp_path / "references", tmp_path / "run"
    for name, params, value in (("a", default, 0.25), ("b", three, 0.75)):
        _write_run(root / name, params, {"sizes": _table(value=[0.5, value])})
        (root / name / "run.json").write_text(json.dumps({"params": params}))
    _write_run(run, three, {"sizes": _table(value=[0.5, 0.75])})
    ok, lines = reference.check_run(run, root)
    assert ok and "references/b" in lines[0].replace(str(tmp_path) + "/", "")
    (run / "params.json").write_text(json.dumps(pipeline.make_params(seed=4)))
    ok, lines = reference.check_run(run, root)
    assert ok and "no reference for these parameters among the 2 in" in lines[0]
    assert len(lines[0].replace(str(tmp_path), "")) < 150  # one short line


def test_save_reference_copies_the_run(tmp_path):
    from PIL import Image

    run = tmp_path / "runs" / "r1"
    _write_run(run, pipeline.make_params(), {"sizes": _table()})
    (run / "run.json").write_text(json.dumps({"params": pipeline.make_params(), "notebooks": {
        "01": {"git_commit": "abc"}, "02": {"git_commit": "abc"}}}))
    (run / "figures").mkdir()
    gradient = np.zeros((60, 3000, 4), np.uint8)  # every red, 3000 px long, half transparent
    gradient[..., 0], gradient[..., 3] = np.linspace(0, 255, 3000)[None], 255
    gradient[..., 1] = np.arange(60)[:, None]  # and a green per row: more colours than a palette holds
    gradient[30:, :, 3] = 0
    Image.fromarray(gradient, "RGBA").save(run / "figures" / "f.png")
    Image.new("RGB", (20, 10)).save(run / "figures" / "unused.png")
    (run / "REPORT.md").write_text("# r\n![f](figures/f.png)\n")
    dest = reference.save_reference(run, tmp_path / "ref")
    assert dest == tmp_path / "ref" / "r1" and (dest / "tables" / "sizes.csv").is_file()
    assert (dest / "figures" / "f.png").is_file() and not (dest / "figures" / "unused.png").exists()
    saved = Image.open(dest / "figures" / "f.png")
    assert saved.mode == "RGB" and saved.size == (results.REFERENCE_MAX_SIDE, 48)  # full colour, capped in size
    pixels = np.asarray(saved)
    assert len(np.unique(pixels[0, :, 0])) > 200 and (pixels[-1] == 255).all()  # not posterised; flattened on white
    chart = np.full((300, 400, 3), 255, np.uint8)  # a chart of 3 colours: RGB still (never a palette), the same pixels
    chart[100:200, 50:350] = (31, 119, 180)
    chart[150:160] = (214, 39, 40)
    Image.fromarray(chart).save(run / "figures" / "chart.png")
    results.save_reference_png(run / "figures" / "chart.png", tmp_path / "chart.png")
    with Image.open(tmp_path / "chart.png") as kept:
        assert kept.mode == "RGB" and (np.asarray(kept) == chart).all()
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 2000), (1, 2, 3)).save(big)
    with Image.open(results.save_reference_png(big, tmp_path / "big_ref.png")) as small:
        assert small.width * small.height <= results.REFERENCE_MAX_PIXELS
    assert json.loads((dest / "run.json").read_text())["reference"] == {"made_by": "make reference", "commit": "abc",
                                                                        "clean_tree": True}
    ok, lines = reference.check_run(run, tmp_path / "ref")
    assert ok and "matches" in lines[0]
    for commits, refusal in ((("abc", "abc+dirty"), "uncommitted changes"), (("abc", "def"), "different commits")):
        notebooks = {str(k): {"git_commit": c} for k, c in enumerate(commits)}
        (run / "run.json").write_text(json.dumps({"params": pipeline.make_params(), "notebooks": notebooks}))
        with pytest.raises(reference.ReferenceError, match=refusal):
            reference.save_reference(run, tmp_path / "ref")


def test_a_study_runs_reference_leaves_out_the_clean_predictions_and_still_checks(tmp_path):
    """``make study-reference``: a study run alone (no claim's notebook) is saved without the selection's clean
    predictions of every labelled image under every model; a rerun, which has them, still matches it."""
    run = tmp_path / "runs" / "r1"
    _write_run(run, pipeline.make_params(), {"sizes": _table(), "clean_predictions": _table()})
    (run / "run.json").write_text(json.dumps({"params": pipeline.make_params(), "notebooks": {
        "05_beyond_the_paper": {"git_commit": "abc"}}}))
    (run / "REPORT.md").write_text("# r\n")
    dest = reference.save_reference(run, tmp_path / "ref") / "tables"
    assert (dest / "sizes.csv").is_file() and not list(dest.glob("clean_predictions*"))
    ok, lines = reference.check_run(run, tmp_path / "ref")
    assert ok and ": 1 tables" in lines[0]


def test_a_reference_stores_its_large_tables_compressed_and_is_checked_through_them(tmp_path, monkeypatch):
    import gzip

    from ama.studies import claims

    run = tmp_path / "runs" / "r1"
    big = pd.DataFrame(dict(model="m", image=[f"i{k}" for k in range(4000)], value=np.linspace(0, 1, 4000)))
    _write_run(run, pipeline.make_params(), {"sizes": _table(), "cells": big})
    (run / "run.json").write_text(json.dumps({"params": pipeline.make_params(), "notebooks": {"01": {"git_commit": "a"}}}))
    (run / "REPORT.md").write_text("# r\n")
    monkeypatch.setattr(results, "COMPRESS_ABOVE", 20_000)
    dest = reference.save_reference(run, tmp_path / "ref") / "tables"
    assert sorted(p.name for p in dest.iterdir() if p.suffix != ".json") == ["cells.csv.gz", "sizes.csv"]
    assert gzip.decompress((dest / "cells.csv.gz").read_bytes()) == (run / "tables" / "cells.csv").read_bytes()
    assert results.read_table(dest, "cells").equals(big)
    ok, lines = reference.check_run(run, tmp_path / "ref")
    assert ok and ": 2 tables" in lines[0]
    big.assign(value=big.value[::-1].to_numpy()).to_csv(run / "tables" / "cells.csv", index=False)
    ok, lines = reference.check_run(run, tmp_path / "ref")
    assert not ok and any("cells" in line and "differs" in line for line in lines)


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("0[1-5]_*.ipynb")))
def test_papermill_reads_every_parameter_the_pipeline_gives(notebook):
    """A parameters cell papermill cannot parse (a quote in a comment on an assignment's line) drops that parameter
    silently: the notebook would run on its defaults."""
    import papermill as pm

    declared = set(pm.inspect_notebook(str(ROOT / "notebooks" / notebook)))
    given = set(pipeline.notebook_parameters(pipeline.make_params(), "results/x", sharded=True))
    assert declared == ({"out_dir"} if notebook.startswith("04") else given)
    assert "recompute" in given  # make never reads an earlier run back


def test_a_sharded_run_refuses_a_notebook_without_the_parameter(tmp_path):
    nb = tmp_path / "03_no_sharded.ipynb"
    _notebook(nb, "print(1)")
    with pytest.raises(RuntimeError, match="declares no `sharded` parameter"):
        pipeline.run_notebook(nb, tmp_path / "run", pipeline.make_params(), progress=False, sharded=True)


def test_ctrl_c_during_a_notebook_ends_on_one_line_and_marks_the_run(tmp_path, monkeypatch, capsys):
    import papermill as pm

    nb = tmp_path / "01_slow.ipynb"
    _notebook(nb, "print(1)")
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    (run / "notebooks" / "01_slow.ipynb").write_text("{}")  # an earlier, finished run of it
    params_file = run / "params.json"
    params_file.write_text(json.dumps(pipeline.make_params()))

    def interrupted(*args, **kwargs):
        (run / "notebooks" / "01_slow.running.ipynb").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(pm, "execute_notebook", interrupted)
    code = pipeline.main(["notebook", str(nb), "--params", str(params_file), "--run-dir", str(run)])
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted; rerun the same command to resume (finished notebooks and shards are kept)"]
    assert not (run / "notebooks" / "01_slow.running.ipynb").exists()
    assert json.loads((run / "run.json").read_text())["notebooks"]["01_slow"]["status"] == "interrupted"


def test_make_help_lists_every_variable_with_its_value():
    from conftest import run_make

    out = run_make("help", "PROFILE=imagenet").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert f"PROFILE=imagenet  (a named set of the values below: {', '.join(PROFILES)}; empty: none)" in lines
    assert {f"N_IMAGES={PROFILES['imagenet']['n_images']}", "E=1 2", "FAST=0", "MODELS=lite0"} <= set(lines)
    assert all(f"{name.upper()}=" in out for name in RunParams.names()) and "{" not in out  # not JSON
