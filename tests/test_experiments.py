"""Run parameters (one source), the experiments as per-image functions, and their split across processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ama.artifacts import TABLES
from ama.attack import marginal as attack
from ama.attack.result import GridKey, OptimizerKey
from ama.geometry import check_frame_width
from ama.params import N_IMAGES, PROFILES, ParamsError, RunParams
from ama.params import OWN_MODELS
from ama.params import STUDIES as PARAMS_STUDIES
from ama.runs import folder as runs, shards
from ama.runs.check import compare_tables
from ama.store import lineage
from ama.store.distributed import Launch
from ama.studies import attack_experiments, experiments

TINY = "conftest:make_tiny_model"
TESTS = Path(__file__).parent


# --- parameters -----------------------------------------------------------------------------
def test_defaults_and_fast_resolved_when_made():
    p = RunParams()
    assert (p.models, p.e, p.n_iter, p.lamb, p.seed) == (("lite0",), (1, 2, 4, 8), 100, 100.0, 0)
    assert p.run_name() == f"lite0_imagenet_n{N_IMAGES}_e1-2-4-8_it100_lamb100_seed0"
    assert RunParams(images="data/samples", n_images="all").run_name() == "lite0_samples_all_e1-2-4-8_it100_lamb100_seed0"
    evidence = RunParams.from_strings("imagenet", n_seeds="", e="1 2")  # a profile's values, unless given
    profile = PROFILES["imagenet"]
    assert (evidence.n_images, evidence.n_seeds, evidence.e) == (profile["n_images"], profile["n_seeds"], (1, 2))
    with pytest.raises(ParamsError, match="unknown profile 'paper'"):
        RunParams.from_strings("paper")
    with pytest.raises(ParamsError, match="ablation must be one of strongest, full"):
        RunParams(ablation="some")
    f = RunParams(fast=True, n_images=5)  # FAST is resolved where the parameters are made: named and recorded so
    assert (f.n_images, f.e, f.n_iter, f.auc_steps) == (2, (1, 2), 5, 4)
    assert RunParams.from_dict(f.to_dict()) == f and f.to_dict()["n_iter"] == 5
    assert RunParams(fast="1").run_name() == "lite0_imagenet_n2_e1-2_it5_lamb100_seed0_auc_steps4_fast"
    assert RunParams.from_strings(e="8,2 2", models="a b", seed="") == RunParams(models=("a", "b"), e=(2, 8))
    assert RunParams(auc_steps=16).run_name() == f"lite0_imagenet_n{N_IMAGES}_e1-2-4-8_it100_lamb100_seed0_auc_steps16"
    assert RunParams.from_dict(RunParams(seed=3).to_dict()) == RunParams(seed=3)


def test_frame_width_is_validated_in_one_place():
    assert check_frame_width(np.int64(3), (224, 224)) == 3
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match=r"e \(the frame width in pixels\) must be a positive integer, got"):
            check_frame_width(bad)
    with pytest.raises(ParamsError, match=r"e \(the frame width in pixels\) must be a positive integer, got 0"):
        RunParams(e=(2, 0))  # the run's parameters say it with the same words
    with pytest.raises(ValueError, match=r"below half the smaller image side \(224 px\), i.e. 1..111, got 112"):
        check_frame_width(112, (224, 300))
    with pytest.raises(ParamsError, match="unknown run parameter"):
        RunParams.from_dict({"e_values": [1]})


def test_makefile_bridge_runs_without_the_venv():
    """`python3 ama/params.py` needs only the standard library (the Makefile calls it before .venv exists)."""
    from ama.paths import ROOT

    script = [sys.executable, "-S", str(ROOT / "ama" / "params.py")]
    out = subprocess.run([*script, "run-name", "--E", "1 2", "--FAST", "1"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lite0_imagenet_n2_e1-2_it5_lamb100_seed0_auc_steps4_fast"
    bad = subprocess.run([*script, "json", "--LAMB", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: lamb must be")
    names = subprocess.run([*script, "make-vars"], capture_output=True, text=True, check=True).stdout.split()
    assert names == [n.upper() for n in RunParams.names()] and names[:3] == ["MODELS", "IMAGES", "N_IMAGES"]


# --- experiments: per image, so that any split gives the same rows ---------------------------------
@pytest.fixture
def run_params():
    # the ingredient study on every image: which images it takes is the run folder's choice (selection.csv), and
    # outside one a batch's own
    return RunParams(models=(TINY,), e=(1, 2), n_iter=3, fast=False, ablation_images=0, studies="all")


@pytest.mark.parametrize("experiment", experiments.EXPERIMENTS)
def test_an_images_rows_do_not_depend_on_the_others(experiment, tiny_model, images32, run_params):
    names = ["a", "b", "c", "d"]
    whole = experiments.run(experiment, tiny_model, images32, names, run_params)
    parts = [experiments.run(experiment, tiny_model, images32[i:i + 2], names[i:i + 2], run_params) for i in (0, 2)]
    assert whole and set(whole) == set(parts[0])
    chosen = {"attack_targets", "attack_targeted"}  # a quarter of the run's images (2 to 50): the run's choice
    for table, df in whole.items():
        shown = [n for n in names if n in set(df.image)] if table in chosen else names
        assert list(df.image.drop_duplicates()) == shown, table  # image-major, in the batch's order
        joined = pd.concat([p[table] for p in parts], ignore_index=True)
        joined = joined[joined.image.isin(shown)].reset_index(drop=True)
        if "upsampling" in df and (df.upsampling == "gaussian").any():  # the Gaussian is fitted to the batch's ERFs
            df, joined = (t[t.upsampling != "gaussian"].reset_index(drop=True) for t in (df, joined))
        loose = table.startswith(("attack", "transfer"))  # batched convolutions round differently in the 6th digit
        assert compare_tables(joined, df, table, stochastic=loose) == [], table


def test_attack_grid_runs_the_planned_settings_once(tiny_model, images32, tmp_path):
    """The default plan on a tiny model: the paper's grid (flip at the run's passes at every e and at 50 at e = 1, 2,
    keep at the smallest), the random frame, and the ablation (sign and apgd at every e, adam at e = 1, 2, the quarter budget at
    e = 1, 2, keep for sign and apgd), each setting attacked once: the ablation reuses the grid's sign runs."""
    p = RunParams(models=(TINY,), e=(1, 2, 4), n_iter=8, ablation="full")
    calls = []
    features = tiny_model.features
    tiny_model.features = lambda z: (calls.append(torch.is_grad_enabled()), features(z))[1]
    _, results = attack_experiments.attack_grid(tiny_model, images32[:2], ["a", "b"], p, progress=False)
    grid = {GridKey("attack", e, 8, "flip") for e in (1, 2, 4)} | {GridKey("attack", e, 50, "flip") for e in (1, 2)}
    grid |= {GridKey("attack", 1, 8, "keep")}
    grid |= {GridKey("random_frame", e, 0, "random") for e in (1, 2, 4)}
    abl = {OptimizerKey.default(o, e, 8) for o in ("sign", "apgd") for e in (1, 2, 4)}
    abl |= {OptimizerKey.default("adam", e, 8) for e in (1, 2)}
    abl |= {OptimizerKey.default(o, e, 2) for o in ("sign", "apgd", "adam") for e in (1, 2)}
    abl |= {OptimizerKey.default(o, 1, 8, "keep") for o in ("sign", "apgd")}
    shared = {OptimizerKey.default("sign", k.e, k.n_iter, k.mode) for k in grid if k.n_iter}  # the grid's, renamed
    assert set(results) == grid | abl | shared
    for k in (k for k in grid if k.setting == "attack"):
        assert results[OptimizerKey.default("sign", k.e, k.n_iter, k.mode)] is results[k]
    attacks = {id(r): r for k, r in results.items() if getattr(k, "setting", "") != "random_frame"}.values()  # once
    assert len(attacks) == 6 + 12  # the grid: 5 flip + 1 keep; the ablation: apgd 3, adam 2, quarter budget 6, keep 1
    # the ingredient study at e = 1 adds 4 attacks: sign + margin, sign + best, apgd and adam with ce and the last
    # iterate; the reference and the apgd and adam defaults are the ablation's runs, reused
    study = 4
    # the targeted shapes: sign and apgd at e = 1, 2 (a random frame beside each width, and one clean CAM per image
    # for the targets)
    targeted = 2 * 2
    assert sum(calls) == sum(r.params.n_iter for r in attacks) + (study + targeted) * 8  # every pass: a planned one
    assert len(calls) - sum(calls) == 3 * (len(attacks) + study + targeted) + 3 * (3 + 2) + 1  # clean + 2 evaluations


def test_attack_grid_shares_the_reference_runs_and_saves_the_adversarial_images(tiny_model, images32, tmp_path):
    """The ablation reuses the grid's reference runs; the saved 8-bit PNGs give back the same result."""
    from ama.attack import marginal as attack

    p = RunParams(models=(TINY,), e=(1, 2), n_iter=4, fast=False, ablation="full")
    names = ["a", "b", "c", "d"]
    tables, results = attack_experiments.attack_grid(tiny_model, images32, names, p, out_dir=tmp_path, progress=False)
    abl = tables["attack_ablation"]
    assert results[OptimizerKey.default("sign", 2, 4)] is results[GridKey("attack", 2, 4, "flip")]
    assert set(abl[abl["mode"] == "keep"].optimizer) == {"sign", "apgd"}
    pngs = sorted(tmp_path.glob("adversarial/tiny/*/*.png"))
    assert sorted({q.parent.name for q in pngs}) == ["apgd_e1_it4", "apgd_e2_it4", "sign_e1_it4", "sign_e2_it4"]
    assert len(pngs) == 4 * len(names)
    x8 = torch.round(images32 * 255) / 255  # images as loaded from files are on the 8-bit grid
    tables, results = attack_experiments.attack_grid(tiny_model, x8, names, p, out_dir=tmp_path, progress=False)
    for opt in ("sign", "apgd"):
        saved = attack_experiments.adversarial_result(tiny_model, x8, names, p, tmp_path, opt, 2)
        made = results[OptimizerKey.default(opt, 2, 4)]
        assert torch.equal(saved.adv_q, made.adv_q)  # the PNGs are exactly the 8-bit images
        assert torch.allclose(saved.adv_q_logits, made.adv_q_logits, atol=1e-5)  # memory layout: rounding only
        assert saved.params.optimizer == opt and saved.params.n_iter == 4
        assert saved.metrics.cam_cosine.tolist() == pytest.approx(made.metrics.query("quantized").cam_cosine.tolist() * 2,
                                                                  abs=1e-5)
    with pytest.raises(ValueError, match="differ from the clean ones outside the mask"):
        attack.evaluate_images(tiny_model, x8, torch.flip(x8, [0]), e=2)
    with pytest.warns(UserWarning, match="attacking again"):
        other = attack_experiments.adversarial_result(tiny_model, 1 - x8, names, p, tmp_path, "sign", 2)
    assert torch.equal(other.clean, 1 - x8)


def test_occlusion_cells():
    assert experiments.occlusion_cells((7, 7)) == [0, 3, 6, 21, 24, 27, 42, 45, 48]
    assert experiments.occlusion_cells((7, 7), fast=True) == [0, 3, 24]


def test_summaries_of_receptive_field_tables(tiny_model, images32, run_params):
    t, erf = experiments.receptive_fields(tiny_model, images32, list("abcd"), run_params)
    assert erf.shape == (4, 64, 32, 32) and torch.allclose(erf.sum((-2, -1)), torch.ones(4, 64))
    s = experiments.summaries(t)
    assert set(s) == {"misalignment_summary", "margin_mass_ratio", "misalignment_upsampling", "receptive_field_sizes",
                      "misalignment_baselines", "misalignment_upsampling_verdicts", "frame_side_mass"}
    sides = s["frame_side_mass"].query("cell_kind == 'all'").set_index("measure").value
    assert sides["left - right"] == pytest.approx(sides["left"] - sides["right"])  # the pair is the sides' difference
    sizes = s["receptive_field_sizes"]
    assert len(sizes) == 1 and sizes.erf90_px.iloc[0] == pytest.approx(t["receptive_field_image_sizes"].erf90_px.mean())
    allrow = s["misalignment_summary"].query("cell_kind == 'all'")
    assert allrow.erf_mass_outside_irf_mean.iloc[0] == pytest.approx(t["misalignment"].erf_mass_outside_irf.mean())


# --- shards ---------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(5):
        Image.fromarray((np.random.default_rng(i).random((40, 48, 3)) * 255).astype("uint8")).save(d / f"im{i}.png")
    return d


@pytest.fixture
def tiny_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _in_process(params, run_dir, experiment="occlusion"):
    tables, _ = runs.compute(experiment, runs.load_models_and_images(params, run_dir), params, run_dir)
    return tables


def test_shards_merge_to_the_one_process_tables(folder, tmp_path, tiny_on_path):
    params = RunParams(models=(TINY,), images=str(folder), e=(1, 2), device="cpu", fast=True)
    whole = _in_process(params, tmp_path / "one")
    for rank in (1, 0):
        shards.run_shard("occlusion", params, tmp_path / "two", Launch(rank, 2, rank, 2))
    merged = shards.merge("occlusion", params, tmp_path / "two", world=2)
    assert set(merged) == set(whole)
    for name, df in whole.items():
        assert compare_tables(merged[name], df, name) == [], name
    assert shards.merged_tables("occlusion", params, tmp_path / "two").keys() == merged.keys()
    assert shards.merged_tables("occlusion", RunParams.from_dict(params.to_dict(), seed=1), tmp_path / "two") is None


def test_merge_refuses_missing_and_duplicated_parts(folder, tmp_path, tiny_on_path):
    params = RunParams(models=(TINY,), images=str(folder), e=(1,), device="cpu", fast=True)
    shards.run_shard("occlusion", params, tmp_path, Launch(0, 2, 0, 2))
    with pytest.raises(shards.ShardError, match=r"rank\(s\) \[1\] of 2 have not finished"):
        shards.merge("occlusion", params, tmp_path, world=2)
    shards.run_shard("occlusion", params, tmp_path, Launch(1, 2, 1, 2))
    marker = shards.parts_dir(tmp_path, "occlusion", params, 2) / "plan.rank1.json"
    info = json.loads(marker.read_text())
    first = json.loads(marker.with_name("plan.rank0.json").read_text())["images"][TINY][0]
    info["images"][TINY].append(first)  # rank 0's image, claimed by rank 1 too
    marker.write_text(json.dumps(info))
    with pytest.raises(shards.ShardError, match=f"image '{first}' of .* was computed by ranks 0 and 1"):
        shards.merge("occlusion", params, tmp_path, world=2)
    info["images"][TINY] = []
    marker.write_text(json.dumps(info))
    with pytest.raises(shards.ShardError, match=r"1 image\(s\) of .* are in no part"):
        shards.merge("occlusion", params, tmp_path, world=2)


def test_a_killed_rank_is_recomputed_and_a_finished_one_kept(folder, tmp_path, tiny_on_path):
    params = RunParams(models=(TINY,), images=str(folder), e=(1,), device="cpu", fast=True)
    parts = shards.run_shard("occlusion", params, tmp_path, Launch(0, 2, 0, 2))
    kept = (parts / "plan.rank0.json").stat().st_mtime_ns
    (parts / "occlusion_margin.rank1.csv").write_text("image,model\nim1,half-writ")  # a rank killed mid-write
    shards.run_shard("occlusion", params, tmp_path, Launch(0, 2, 0, 2))
    shards.run_shard("occlusion", params, tmp_path, Launch(1, 2, 1, 2))
    assert (parts / "plan.rank0.json").stat().st_mtime_ns == kept
    merged = shards.merge("occlusion", params, tmp_path, world=2)
    margin = merged["occlusion_margin"]
    assert len(margin.image.unique()) == 2  # fast: 2 images, each once
    assert not margin.duplicated(["image", "fill", "e"]).any()


def test_torchrun_two_processes(folder, tmp_path):
    """The launch line `make reproduce NPROC=2` uses: torchrun, 2 CPU ranks, then the merge."""
    params = RunParams(models=(TINY,), images=str(folder), e=(1, 2), device="cpu", fast=True)
    pfile = tmp_path / "params.json"
    pfile.write_text(params.to_json())
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    run = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "ama.runs.shards", "run", "attack",
                          "--params", str(pfile), "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    merge = subprocess.run([sys.executable, "-m", "ama.runs.shards", "merge", "attack", "--params", str(pfile), "--run-dir",
                            str(tmp_path / "run"), "--world", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert merge.returncode == 0, merge.stderr
    got = pd.read_csv(tmp_path / "run" / "tables" / "attack_metrics.csv")
    sys.path.insert(0, str(TESTS))
    try:
        whole, _ = runs.compute("attack", runs.load_models_and_images(params, tmp_path / "one"), params, tmp_path / "one")
    finally:
        sys.path.remove(str(TESTS))
    one = tmp_path / "one" / "tables"
    assert compare_tables(got, pd.read_csv(one / "attack_metrics.csv"), "attack_metrics", stochastic=True) == []
    assert lineage.is_stochastic(lineage.read(tmp_path / "run" / "tables")["attack_metrics"])  # the ranks' lineage
    assert (tmp_path / "run" / "tables" / "attack_summary.csv").is_file()


def test_attack_grid_in_batches_gives_the_same_rows(tiny_model, images32, monkeypatch):
    """Images are attacked ama.attack.marginal.attack_batch(device) at a time; the rows equal one batch's (float
    rounding aside) and no results
    are kept past one batch; the ingredient study's one image is in the first batch only; the targeted shapes are
    attacked in whichever batch holds their images."""
    p = RunParams(models=(TINY,), e=(1,), n_iter=3, grid="slim", n_seeds=2, ablation_images=1)
    names = ["a", "b", "c", "d"]
    whole, results = attack_experiments.attack_grid(tiny_model, images32, names, p, progress=False)
    monkeypatch.setitem(attack.ATTACK_BATCH, "cpu", 3)
    parts, none = attack_experiments.attack_grid(tiny_model, images32, names, p, progress=False)
    assert results is not None and none is None
    assert set(parts) == set(whole) == {"attack_metrics", "attack_history", "attack_ablation", "attack_seeds",
                                        "attack_ingredients", "attack_targets", "attack_targeted"}
    assert set(whole["attack_ingredients"].image) == {"a"}
    for name, df in whole.items():
        assert list(parts[name].image.drop_duplicates()) == list(df.image.drop_duplicates()), name
        assert compare_tables(parts[name], df, name, stochastic=True) == [], name
    seeds = whole["attack_seeds"]
    assert sorted(seeds.seed.unique()) == [0, 1] and set(seeds.optimizer) == {"sign"}


def test_notebook_05_computes_the_studies_a_run_names(tiny_model, images32):
    """STUDIES: the default run computes the location control alone; each study's tables appear with it."""
    names = [f"im{i}" for i in range(2)]
    base = dict(models=(TINY,), e=(1,), n_iter=2, fast=False)
    assert RunParams().studies == ("location",)
    alone = experiments.run("beyond", tiny_model, images32[:2], names, RunParams(**base))
    assert set(alone) == {TABLES.attack_location}
    sides = experiments.run("beyond", tiny_model, images32[:2], names, RunParams(**base, studies="sides defence"))
    assert set(sides) == {TABLES.attack_sides, TABLES.border_defence, TABLES.border_defence_adaptive}
    everything = [s for s in PARAMS_STUDIES if s not in OWN_MODELS]  # a study with its own model set only when named
    assert RunParams(studies="all").studies == RunParams(studies=list(reversed(everything))).studies
    assert "padding_leverage" in PARAMS_STUDIES and "padding_leverage" not in RunParams(studies="all").studies
    with pytest.raises(ParamsError, match="studies must be one or more of"):
        RunParams(studies="transfer speed")
    assert RunParams(studies="all").run_name().endswith("_studiesall")
    assert "studies" not in RunParams().run_name()
