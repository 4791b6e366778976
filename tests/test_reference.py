"""``make check``: a table's lineage decides how it is compared; stochastic tables by exact sign tests over units,
Holm over the check; a rerun with other float rounding matches, a sabotaged attack does not."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

import ama
from ama.attack import marginal as attack
from ama.params import RunParams
from ama.paths import ROOT
from ama.runs import check as reference
from ama.store import lineage
from ama.store.tables import save_table
from ama.studies import attack_experiments

TINY = "conftest:make_tiny_model"
REFERENCES = ROOT / "results" / "reference"
DEFAULT_REFERENCE = REFERENCES / "lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0"


@pytest.fixture
def fresh_lineage():
    lineage.reset()
    yield
    lineage.reset()


def test_lineage_is_recorded_as_it_happens(tmp_path, tiny_model, images32, fresh_lineage):
    df = pd.DataFrame({"image": ["a"], "value": [1.0]})
    save_table(df, tmp_path, "before")
    ama.marginal_attack(tiny_model, images32[:1], e=1, n_iter=1)
    save_table(df, tmp_path, "after")
    got = lineage.read(tmp_path / "tables")
    assert got["before"] == {"sources": []} and got["after"] == {"sources": [lineage.ATTACK]}
    assert not lineage.is_stochastic(got["before"]) and lineage.is_stochastic(got["after"])
    lineage.reset()
    lineage.inherit(tmp_path / "tables", ["before"])
    assert lineage.sources() == []
    lineage.inherit(tmp_path / "tables", ["after"])  # reading a stochastic table makes what follows stochastic
    assert lineage.sources() == [lineage.ATTACK]
    with pytest.raises(ValueError, match="unknown lineage source"):
        lineage.touch("coin")


def test_evaluating_saved_images_is_a_stochastic_source(tiny_model, images32, fresh_lineage):
    r = ama.marginal_attack(tiny_model, images32[:1], e=1, n_iter=1)
    lineage.reset()
    ama.attack.marginal.evaluate_images(tiny_model, images32[:1], r.adv_q, e=1)
    assert lineage.sources() == [lineage.ADVERSARIAL_IMAGES]


def _attack_table(n_images=40, shift=0.0, flip=(), seed=0):
    """A stochastic table shaped like attack_metrics: image x e x quantized (two rows of one attack)."""
    g = np.random.default_rng(seed)
    rows = []
    for k in range(n_images):
        for e in (1, 2):
            cos = float(g.uniform(0.3, 0.9))
            for q in (False, True):
                rows.append(dict(image=f"im{k}", e=e, quantized=q, adv_name="x", fooled=bool(k % 2),
                                 cam_cosine=cos + shift + (0.05 if (k, e) in flip else 0)))
    return pd.DataFrame(rows)


def test_sign_test_counts_units_not_rows():
    ref = _attack_table()
    up = {(k, 1) for k in range(9)}
    check = reference.table_check(_attack_table(flip=up), ref, "t", stochastic=True)
    cosine = next(t for t in check.tests if t.column == "cam_cosine")
    assert (cosine.units, cosine.up, cosine.down) == (80, 9, 0)  # 160 rows, 80 attacks: the 8-bit row is one unit
    assert cosine.p == pytest.approx(2 * 0.5 ** 9)               # exact: 9 of 9 up
    fooled = next(t for t in check.tests if t.column == "fooled")
    assert (fooled.up, fooled.down, fooled.p) == (0, 0, 1.0)


def test_stochastic_tables_match_a_rerun_and_not_a_shift():
    ref = _attack_table()
    mixed = {(k, 1) for k in range(3)}
    rerun = _attack_table(flip=mixed)
    rerun.loc[rerun.image == "im5", "cam_cosine"] -= 0.1      # three units up, one down: a rerun's draw
    rerun.loc[rerun.image == "im6", "fooled"] = True
    rerun["adv_name"] = "another class"                          # class names are not compared
    assert reference.compare_tables(rerun, ref, "attack_metrics", stochastic=True) == []
    moved = reference.compare_tables(_attack_table(shift=0.02), ref, "attack_metrics", stochastic=True)
    assert len(moved) == 1 and "'cam_cosine' moved in 80 of 80 units (80 up, 0 down" in moved[0]
    # the same rerun as a deterministic table: every changed number counts
    exact = reference.compare_tables(rerun.drop(columns="adv_name"), ref.drop(columns="adv_name"), "t")
    assert any("'cam_cosine' differs in 10 of 160 rows" in d for d in exact)


def test_yes_no_answers_changed_both_ways_are_a_difference():
    """A sign test sees only a direction: 20 units' answers flipped up and 20 down leave it at p = 1. The change
    bound counts them: 40 of 80 units changed is far beyond what a rerun changes; 3 of 80 is a rerun."""
    ref = _attack_table()
    scattered = ref.assign(fooled=ref.fooled ^ (ref.e == 1))  # every image at e = 1 (fooled: odd ones): 20 up, 20 down
    check = reference.table_check(scattered, ref, "attack_metrics", stochastic=True)
    fooled = next(t for t in check.tests if t.column == "fooled")
    assert (fooled.up, fooled.down, fooled.p) == (20, 20, 1.0)
    bound = next(b for b in check.bounds if b.column == "fooled")
    assert (bound.changed, bound.units) == (40, 80)
    assert bound.p == pytest.approx(binomtest(40, 80, reference.CHANGE_RATE, alternative="greater").pvalue)
    problems = reference.compare_tables(scattered, ref, "attack_metrics", stochastic=True)
    assert len(problems) == 1 and "yes/no 'fooled' changed in 40 of 80 units" in problems[0]
    few = ref.assign(fooled=ref.fooled ^ (ref.image.isin(["im0", "im1", "im2"]) & (ref.e == 2)))
    assert reference.compare_tables(few, ref, "attack_metrics", stochastic=True) == []


def _copy_reference(folder, tmp_path):
    """A committed reference copied as a finished run (it holds params.json), its tables stored as they are."""
    run = tmp_path / folder.name
    shutil.copytree(folder, run)
    return run


@pytest.mark.parametrize("folder", sorted(p.parent for p in REFERENCES.glob("*/run.json")), ids=lambda p: p.name[:40])
def test_a_copy_of_a_reference_matches_it(folder, tmp_path):
    """Its large tables are <name>.csv.gz, as the reference stores them: the same tables as <name>.csv."""
    ok, lines = reference.check_run(_copy_reference(folder, tmp_path), REFERENCES)
    assert ok, "\n".join(line for line in lines if "DIFF" in line or line.startswith(" " * 10))
    assert "matches the reference" in lines[0] and not any("missing" in line for line in lines)


def test_a_run_reads_the_same_however_its_tables_are_stored(tmp_path):
    run = _copy_reference(DEFAULT_REFERENCE, tmp_path)
    assert reference.compress_tables(run / "tables", above=0)  # every table as .csv.gz
    assert reference.check_run(run, REFERENCES)[0]
    (run / "tables" / "occlusion_per_area.csv.gz").unlink()  # no claim reads it
    ok, lines = reference.check_run(run, REFERENCES)
    assert not ok and lines[0].endswith("in 1 places:")
    assert [line.strip() for line in lines if "missing" in line] == ["DIFF  occlusion_per_area: missing from this run"]


def test_a_reference_with_scattered_flips_of_fooled_does_not_match(tmp_path):
    """Half of every 8-bit ``fooled`` of the default reference flipped, as many from True to False as back (seeded),
    the tables otherwise untouched: the sign test sees no direction; the change bound fails it."""
    run, g = _copy_reference(DEFAULT_REFERENCE, tmp_path), np.random.default_rng(0)
    flipped = 0
    for path in reference.table_files(run / "tables"):
        df = pd.read_csv(path)
        if not {"fooled", "quantized"} <= set(df.columns):
            continue
        eight_bit = df.index[df.quantized]
        yes, no = eight_bit[df.fooled[eight_bit]], eight_bit[~df.fooled[eight_bit]]
        k = len(eight_bit) // 4
        flip = np.concatenate([g.choice(yes, k, replace=False), g.choice(no, k, replace=False)])
        df.loc[flip, "fooled"] = ~df.loc[flip, "fooled"]
        df.to_csv(path, index=False)
        flipped += 2 * k
    assert flipped >= 80
    ok, lines = reference.check_run(run, REFERENCES)
    assert not ok and any("attack_metrics: yes/no 'fooled' changed in 44 of 88 units" in line for line in lines), lines


def test_a_stochastic_tables_verdicts_are_compared_by_side():
    """A verdict that moves to or from inconclusive is one draw of an interval near its threshold; one that crosses
    from holds to does not hold is a difference."""
    ref = pd.DataFrame({"model": ["m", "n"], "gain": [0.1, 0.2], "verdict": ["holds", "inconclusive"]})
    run = ref.assign(gain=[0.12, 0.18])
    assert reference.compare_tables(run, ref, "s", stochastic=True) == []
    check = reference.table_check(run.assign(verdict=["inconclusive", "holds"]), ref, "s", stochastic=True)
    assert check.ok and "2 moved to or from inconclusive" in check.how
    diff = reference.compare_tables(run.assign(verdict=["does not hold", "inconclusive"]), ref, "s", stochastic=True)
    assert len(diff) == 1 and "1 verdict(s) crossed from one side to the other" in diff[0]


def test_deterministic_numbers_allow_what_rounding_moves_between_layouts():
    """A thousandth of the column's largest magnitude: a difference of CAM values computed in another batch layout
    (measured: -0.0260763 against -0.0260911 where the column reaches 0.52), not a real change."""
    ref = pd.DataFrame({"image": ["a", "b"], "delta": [-0.0260911, 0.52]})
    assert reference.compare_tables(ref.assign(delta=[-0.0260763, 0.52]), ref, "t") == []
    assert "'delta' differs in 1 of 2 rows" in reference.compare_tables(ref.assign(delta=[-0.03, 0.52]), ref, "t")[0]


def test_holm_over_the_check():
    checks = [reference.TableCheck("a", True, tests=[reference.SignTest("x", 1, 0, 1, 0, 0, 0.001),
                                                     reference.SignTest("y", 1, 0, 1, 0, 0, 0.02)]),
              reference.TableCheck("b", True, tests=[reference.SignTest("z", 1, 0, 1, 0, 0, 0.04)])]
    reference.adjust(checks)
    assert [t.p_adjusted for c in checks for t in c.tests] == pytest.approx([0.003, 0.04, 0.04])
    assert len(checks[0].problems) == 1 and "'x'" in checks[0].problems[0] and checks[1].ok


def test_check_run_says_how_each_table_was_compared(tmp_path, fresh_lineage):
    from ama.runs import pipeline

    params = pipeline.make_params()
    ref, run = tmp_path / "reference", tmp_path / "run"
    for folder, table in ((ref, _attack_table()), (run, _attack_table(flip={(0, 1), (1, 2)}))):
        (folder / "tables").mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(params))
        lineage.reset()
        save_table(pd.DataFrame({"image": ["a"], "value": [0.5]}), folder, "occlusion")
        lineage.touch(lineage.ATTACK)
        save_table(table, folder, "attack_metrics")
    (ref / "run.json").write_text(json.dumps({"params": params}))
    ok, lines = reference.check_run(run, ref)
    assert ok, lines
    assert "1 deterministic, 1 stochastic" in lines[0] and "every claim's verdict equal" in lines[0]
    how = {line.split(":")[0].split()[-1]: line for line in lines[1:]}
    assert "stochastic (from attack): 160 rows in 80 units (image x e), 2 numbers by paired sign test" in how[
        "attack_metrics"]
    assert "deterministic: 1 rows" in how["occlusion"]
    save_table(_attack_table(shift=-0.05), run, "attack_metrics")
    ok, lines = reference.check_run(run, ref)
    assert not ok and lines[0].endswith("in 1 places:") and any("DIFF  attack_metrics" in x for x in lines)


def _grid(model, x, names, params):
    tables, _ = attack_experiments.attack_grid(model, x, names, params, progress=False)
    return tables


@pytest.fixture(scope="module")
def grid_setting():
    """40 seeded images and a paper grid on the tiny model: enough attacks (units) for a check to find a change."""
    from conftest import make_tiny_model

    x = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    params = RunParams(models=(TINY,), e=(1, 2), n_iter=10, ablation_images=4)
    model = make_tiny_model()
    names = [f"im{k:02d}" for k in range(len(x))]
    return model, x, names, params, _grid(model, x, names, params)


def _check(got: dict, ref: dict) -> list[str]:
    checks = [reference.table_check(got[k], ref[k], k, stochastic=True) for k in ref]
    reference.adjust(checks)
    return [p for c in checks for p in c.problems]


def _moved(got: dict, ref: dict) -> int:
    """How many (table, number, unit) changed at all."""
    checks = [reference.table_check(got[k], ref[k], k, stochastic=True) for k in ref]
    return sum(t.up + t.down for c in checks for t in c.tests)


@pytest.mark.slow
def test_a_rerun_with_another_layout_batch_and_thread_count_matches(monkeypatch):
    """Another machine's rounding, made here: a random-weight ResNet-18 (deep enough for rounding to flip sign
    steps, unlike the tiny model) attacked again in the default memory layout, 3 images a batch, one thread. Some
    attacks' trajectories part (counted); the check must find no difference.

    (A run at another seed is no such rerun: all images of a batch start from one random frame, a common factor
    across units; the seed is a parameter, and a run is only ever compared with the reference of its own.)"""
    from conftest import make_resnet18

    model, threads = make_resnet18(), torch.get_num_threads()
    x = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    names = [f"im{k:02d}" for k in range(len(x))]
    params = RunParams(models=("conftest:make_resnet18",), e=(1,), n_iter=10, grid="slim", ablation_images=2)
    ref = _grid(model, x, names, params)
    monkeypatch.setitem(attack.ATTACK_BATCH, "cpu", 3)
    monkeypatch.setattr(attack, "CPU_LAYOUT", torch.contiguous_format)
    torch.set_num_threads(1)
    try:
        again = _grid(model, x, names, params)
    finally:
        torch.set_num_threads(threads)
    assert _moved(again, ref) > 10  # the draw did change
    assert _check(again, ref) == []


@pytest.mark.parametrize("sabotage", ["no CAM term", "a tenth of the passes"])
def test_a_sabotaged_attack_does_not_match(grid_setting, sabotage, monkeypatch):
    model, x, names, params, ref = grid_setting
    if sabotage == "no CAM term":
        init = attack.Objective.__init__
        monkeypatch.setattr(attack.Objective, "__init__", lambda self, clean, mode, lamb, *a: init(
            self, clean, mode, 0.0, *a))
    else:
        lengths = ama.attack.optimizers.run_lengths
        monkeypatch.setattr(ama.attack.optimizers, "run_lengths", lambda n, runs: lengths(max(n // 10, runs), runs))
    problems = _check(_grid(model, x, names, params), ref)
    assert problems and any("'cam_cosine' moved" in p for p in problems), problems
