"""The Makefile's prerequisites from the import graph (ama/deps.py): what each notebook and step imports, and that
make reruns exactly the notebooks whose modules changed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ama.deps import DepsError, Graph, fragment, main
from ama.paths import ROOT

EXPERIMENT_NOTEBOOKS = ["01_occlusion", "02_receptive_field_misalignment", "03_adversarial_marginal_attack",
                        "05_beyond_the_paper"]
RUNNER = ["runs.pipeline:run_notebook", "runs.pipeline:shard_experiment"]  # as the Makefile's RUNNER_DEPS
SELECT = ["runs.pipeline:select_images"]


def _package(tmp_path, files: dict[str, str]):
    """A package folder ``ama/`` under ``tmp_path`` holding ``files`` (module name -> source)."""
    pkg = tmp_path / "ama"
    pkg.mkdir()
    for name, text in files.items():
        (pkg / f"{name}.py").write_text(text)
    return pkg


def _notebook(path, *cells: str):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": c} for c in cells]
                                + [{"cell_type": "markdown", "source": "from ama import nothing"}]}))
    return path


def test_every_kind_of_import_counts(tmp_path):
    pkg = _package(tmp_path, {
        "__init__": "_LAZY = {'compute': 'cam'}\n",
        "a": "from . import b, c\n",
        "b": "from .d import thing\n",
        "c": "def f():\n    import ama.e\n",           # inside a function, absolute
        "d": "from ama import cam\n",
        "e": "import ama\nx = ama.f\n",                # an attribute of the package
        "f": "", "cam": "", "lone": "import os\n"})
    graph = Graph(pkg)
    assert graph.entry("a") == {"__init__", "a", "b", "c", "d", "e", "f", "cam"}
    assert graph.entry("lone") == {"__init__", "lone"}
    nb = _notebook(tmp_path / "x.ipynb", "%matplotlib inline\nfrom ama import compute, lone", "import ama.f\n!ls")
    assert graph.notebook(nb) == {"__init__", "cam", "lone", "f"}  # the lazy name is its module; markdown ignored


def test_a_step_is_narrower_than_its_module(tmp_path):
    pkg = _package(tmp_path, {
        "__init__": "", "top": "", "used": "", "helper_dep": "", "other": "",
        "runner": ("from . import top\n\n\ndef helper():\n    from . import helper_dep\n\n\n"
                   "def step():\n    from . import used\n    return helper()\n\n\n"
                   "def other_step():\n    from . import other\n")})
    graph = Graph(pkg)
    assert graph.entry("runner:step") == {"__init__", "runner", "top", "used", "helper_dep"}
    assert "other" in graph.entry("runner")
    with pytest.raises(DepsError, match="has no function 'nosuch'"):
        graph.entry("runner:nosuch")
    with pytest.raises(DepsError, match="no module ama/nosuch.py"):
        graph.entry("nosuch")


def test_a_cell_that_does_not_parse_is_named(tmp_path):
    graph = Graph(_package(tmp_path, {"__init__": ""}))
    with pytest.raises(DepsError, match=r"bad.ipynb: code cell 1 does not parse"):
        graph.notebook(_notebook(tmp_path / "bad.ipynb", "x = 1", "def ("))


def test_the_notebooks_closures_hold_what_they_import_and_not_the_report():
    graph = Graph()
    closure = {nb: graph.notebook(ROOT / "notebooks" / f"{nb}.ipynb") for nb in [*EXPERIMENT_NOTEBOOKS, "04_report"]}
    assert {"__init__", "kernels.occlusion", "studies.claims", "figures.charts", "runs.folder", "artifacts", "params", "paths",
            "store.tables"} <= closure["01_occlusion"]
    assert {"runs.folder", "studies.experiments", "attack.marginal", "inputs.protocol"} <= closure["03_adversarial_marginal_attack"]
    assert {"report.markdown", "report.verdicts", "studies.claims", "studies.study", "studies.sides"} <= closure["04_report"]
    for nb in EXPERIMENT_NOTEBOOKS:
        assert not {"report.markdown", "report.verdicts", "report.evidence", "runs.check"} & closure[nb], nb
    runner, select = graph.closure(set()), set()
    for entry in RUNNER:
        runner |= graph.entry(entry)
    for entry in SELECT:
        select |= graph.entry(entry)
    assert {"runs.pipeline", "runs.shards", "studies.experiments"} <= runner and not {"report.markdown", "runs.check"} & runner
    assert {"runs.pipeline", "inputs.protocol", "inputs.models", "inputs.images"} <= select and not {"attack.marginal", "studies.experiments", "runs.folder"} & select


def test_the_tool_runs_on_the_standard_library_alone(tmp_path):
    """The Makefile runs it with the system python before .venv exists: no site-packages (-S), no ama on the path."""
    out = tmp_path / "deps.mk"
    proc = subprocess.run([sys.executable, "-S", "ama/deps.py", "--out", str(out), "SEL=runs.pipeline:select_images",
                           "notebooks/04_report.ipynb"], cwd=ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[1].startswith("SEL := ama/__init__.py ") and "ama/inputs/protocol.py" in lines[1]
    assert lines[2].startswith("NB_DEPS_04_report := ") and "ama/report/markdown.py" in lines[2]
    assert out.read_text() == fragment(Graph(), {"SEL": SELECT}, [ROOT / "notebooks" / "04_report.ipynb"])


def test_a_bad_argument_is_one_line(capsys):
    assert main(["lower-case=x"]) == 2 and main(["X=nosuch:f"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: expected NAME=module")
    assert err[1] == "error: no module ama/nosuch.py (entry 'nosuch:f')"


def _finished_run(tmp_path):
    """A copy of the kit's sources with a finished run faked in it (every output newer than every source, in the
    Makefile's order) and the ``make`` arguments that aim at its report without running anything."""
    repo = tmp_path / "repo"
    for folder in ("ama", "notebooks"):
        shutil.copytree(ROOT / folder, repo / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "kernel-ipc-*", ".ipynb_checkpoints"))
    for name in ("Makefile", "pyproject.toml", "requirements-lock.txt"):
        shutil.copy2(ROOT / name, repo / name)
    run = repo / "results" / "fake"
    venv = tmp_path / "venv"
    outputs = [venv / ".ama-env-installed", tmp_path / "manifest.csv", run / "params.json", run / "selection.csv",
               *[run / "notebooks" / f"{nb}.ipynb" for nb in EXPERIMENT_NOTEBOOKS], run / "REPORT.md"]
    stamp = 1_000_000_000
    for path in repo.rglob("*"):
        os.utime(path, (stamp, stamp))
    for k, path in enumerate(outputs, start=1):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (stamp + 100 * k, stamp + 100 * k))
    args = ["-C", str(repo), "-n", "RUN=fake", f"VENV={venv}", f"SAMPLES={tmp_path / 'manifest.csv'}",
            "-o", "results/fake/params.json", "results/fake/REPORT.md"]  # as the rules spell them
    return repo, args


def _reruns(args) -> list[str]:
    """The steps ``make -n args`` would run: ``select`` and the notebooks' names, in order."""
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    proc = subprocess.run(["make", "--no-print-directory", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    steps = []
    for line in proc.stdout.splitlines():
        if " -m ama.runs.pipeline select " in line:
            steps.append("select")
        elif " -m ama.runs.pipeline notebook " in line:
            steps.append(line.rsplit("/", 1)[-1].removesuffix(".ipynb"))
    return steps


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_reruns_only_the_notebooks_whose_modules_changed(tmp_path):
    repo, args = _finished_run(tmp_path)
    assert _reruns(args) == []
    later = 2_000_000_000  # in the future: make must not remake build/deps.mk forever
    os.utime(repo / "ama" / "report" / "markdown.py", (later, later))
    assert _reruns(args) == ["04_report"]
    os.utime(repo / "ama" / "studies" / "sides.py", (later, later))  # a study: notebook 05 and the report import it
    assert _reruns(args) == ["05_beyond_the_paper", "04_report"]
    os.utime(repo / "ama" / "attack" / "marginal.py", (later, later))  # every experiment, not the image selection
    assert _reruns(args) == [*EXPERIMENT_NOTEBOOKS, "04_report"]
    os.utime(repo / "ama" / "inputs" / "protocol.py", (later, later))
    assert _reruns(args) == ["select", *EXPERIMENT_NOTEBOOKS, "04_report"]
    assert (repo / "build" / "deps.mk").is_file()
