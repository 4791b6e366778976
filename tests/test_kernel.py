"""The kernel's boundary: CAM, receptive fields, occlusion and the attack import no run machinery.

Each check runs in a fresh interpreter, so that what this test process already imported cannot hide an import."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from ama.paths import ROOT

# the kernel, dotted below ama: the packages ama.kernels and ama.attack, with the top level's geometry and defaults
KERNEL = ("geometry", "defaults", *(f"{package}.{module}" for package in ("kernels", "attack")
                                    for module in importlib.import_module(f"ama.{package}").__all__))
RUN_MACHINERY = ("ama.params", "ama.store.parts", "ama.store.lineage", "ama.store.tables", "ama.runs.folder", "ama.runs.shards",
                 "ama.studies.experiments", "ama.runs.pipeline")
HEAVY = ("pandas", "matplotlib", "scipy", "statsmodels", "seaborn")


def loaded_after(code: str) -> set[str]:
    """The top-level packages and the ``ama.*`` modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {m if m.startswith("ama.") else m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


def test_the_probe_sees_what_an_import_loads():
    assert {"pandas", "ama.params"} <= loaded_after("import pandas, ama.params")


def test_the_attack_and_the_cam_load_no_run_machinery_and_no_table_libraries():
    """``ama.marginal_attack`` and ``ama.compute_cam``, with every module behind them: no pandas, matplotlib, scipy,
    run parameters, run store or lineage."""
    loaded = loaded_after("import ama\nama.marginal_attack, ama.compute_cam")
    assert {"torch", "ama.attack.marginal", "ama.kernels.cam"} <= loaded
    assert sorted(loaded & {*HEAVY, *RUN_MACHINERY}) == []


def test_no_kernel_module_imports_the_run_machinery():
    """Occlusion and the receptive-field tables return DataFrames (pandas is theirs); none reaches the run layer or
    the statistics and plotting libraries. One interpreter imports them all: what any one of them loads, the union
    holds."""
    loaded = loaded_after("\n".join(f"import ama.{m}" for m in KERNEL))
    assert sorted(loaded & {*RUN_MACHINERY, "matplotlib", "scipy", "statsmodels", "seaborn"}) == []


@pytest.mark.parametrize("module", KERNEL)
def test_each_kernel_module_says_what_it_exports(module):
    mod = importlib.import_module(f"ama.{module}")
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


def test_the_attack_is_a_stochastic_source_through_its_own_counts(tiny_model, images32):
    """The kernel counts its calls; the run layer's lineage reads the counts (the attack never imports lineage)."""
    from ama.attack import marginal as attack
    from ama.store import lineage

    lineage.reset()
    before = attack.CALLS["marginal_attack"]
    attack.marginal_attack(tiny_model, images32[:1], e=1, n_iter=1)
    assert attack.CALLS["marginal_attack"] == before + 1
    assert lineage.sources() == [lineage.ATTACK]
    lineage.reset()  # counts made before a reset are forgotten
    assert lineage.sources() == []
