"""The padding question (issue 42, item 2): BatchNorm re-estimated under a padding (``-recal``), the held-out images a
run never reports, the paired outcomes' direction and equivalence, and the power plans the profiles follow."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_bn_model

from ama.inputs import padding
from ama.params import PROFILES, RunParams
from ama.stats.power import MeanEffect, PairedEffect, mcnemar_n, mcnemar_power
from ama.studies import padding_leverage
from ama.studies.registry import studies


def test_recalibrate_reestimates_batchnorm_statistics_and_nothing_else():
    model = make_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = padding.recalibrate(model, x, batch=4)
    after = out.state_dict()
    assert out is model and not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(not m.training for m in model.modules())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running_" in k or "num_batches" in k for k in changed)  # weights untouched
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    first = model.backbone[0](model.normalize(x))  # the first BatchNorm's input: the mean of 3 equal batches
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1  # restored


def test_recal_names_parse_to_their_padding_and_base():
    assert padding.recal_base("lite0-zero-pad-recal") == "lite0-zero-pad" and padding.recal_base("lite0") is None
    assert padding.padding_of("lite0-reflect-pad-recal") == "reflect" and padding.base_of("lite0-recal") == "lite0"
    assert padding.padding_of("lite0-recal") == padding.AS_TRAINED


def test_the_held_out_images_are_fixed_and_left_out_of_a_recal_run():
    from ama.inputs.protocol import checked_records

    held = padding.held_out()
    assert len(held) == padding.RECAL_IMAGES and [r.name for r in held] == [r.name for r in padding.held_out()]
    names = {r.name for r in checked_records(RunParams(models=("lite0", "lite0-recal")))}
    assert len(names) == 1000 - padding.RECAL_IMAGES and not names & {r.name for r in held}
    assert len(checked_records(RunParams())) == 1000  # a run without -recal models scores them all


def _rows(values: dict, n=12, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for (pad, recal), (drop, e) in values.items():
        for k in range(n):
            rows.append(dict(image=f"i{k}", model=f"{pad}{'-recal' if recal else ''}", padding=pad, recalibrated=recal,
                             clean_conf=0.8, clean_margin=5.0, margin_drop=1.0 + 0.01 * rng.standard_normal(),
                             cam_drop=drop + 0.01 * rng.standard_normal(), fooled=k < 6, smallest_e=e,
                             log2_e=np.log2(e)))
    return pd.DataFrame(rows)


def test_leverage_tests_point_above_zero_for_more_leverage_and_mark_equivalence():
    table = _rows({("zero", True): (0.05, 4), ("replicate", True): (0.40, 1), ("zero", False): (0.05, 4),
                   ("replicate", False): (0.05, 4)})
    tests = padding_leverage.leverage_tests(table).set_index(["recalibrated", "outcome"])
    recal = tests.loc[True]
    assert recal.loc["cam_drop", "verdict"] == "holds" and recal.loc["cam_drop", "value"] > 0.3
    assert recal.loc["log2_e", "value"] == pytest.approx(2.0)  # fooled at e = 1 instead of 4: two halvings spared
    assert recal.loc["margin_drop", "equivalent"] and not recal.loc["cam_drop", "equivalent"]
    assert recal.loc["fooled", "test"] == "exact sign test" and recal.loc["cam_drop", "test"] == "paired t-test"
    assert tests.loc[True].p_holds.notna().all() and tests.loc[False].p_holds.isna().all()  # only the set judged
    raw = tests.loc[False]
    assert raw.loc["cam_drop", "equivalent"] and raw.loc["log2_e", "value"] == 0


def test_the_finding_and_figure_read_the_tests(tmp_path):
    table = _rows({("zero", True): (0.05, 4), ("replicate", True): (0.40, 1)})
    (tmp_path / "tables").mkdir()
    padding_leverage.leverage_tests(table).to_csv(tmp_path / "tables" / "padding_outcomes_tests.csv", index=False)
    finding = padding_leverage.leverage_finding(tmp_path)
    assert "replicate: more leverage (CAM moved, fools at a narrower frame" in finding.sentence
    assert "nan" not in finding.table.to_string()
    assert padding_leverage.leverage_figure(padding_leverage.leverage_tests(table)) is not None


def test_mcnemars_exact_power_and_the_images_it_plans():
    rng = np.random.default_rng(0)  # the power by simulation, 40 images, 0 vs 30% discordant one way
    from ama.stats.intervals import sign_test

    sims = [sign_test(0, int((rng.random(40) < 0.3).sum())) < 0.05 for _ in range(2000)]
    assert mcnemar_power(40, 0.0, 0.3) == pytest.approx(np.mean(sims), abs=0.03)
    assert mcnemar_n(0.0, 0.2, 0.05 / 12) == 56 and mcnemar_n(0.0, 0.2) < 56  # a larger family needs more images
    assert PairedEffect(0.0, 0.2, family=12).n_images() == 56
    assert MeanEffect(0.5, family=12).n_images() == 60


def test_each_planned_study_has_a_profile_that_gives_it_the_images_its_power_plan_asks():
    import re

    from ama.paths import ROOT

    planned = {name: s for name, s in studies().items() if s.power is not None}
    assert {"location", "padding_leverage", "across_models"} <= set(planned)
    evidence = (ROOT / "docs" / "EVIDENCE.md").read_text()
    for name, study in planned.items():
        if (study.profile or name) in PROFILES:
            profile = RunParams.from_strings(study.profile or name)
            assert (study.always or name in profile.studies) and profile.n_images >= study.power.n_images(), name
        else:  # no profile yet: docs/EVIDENCE.md gives the command with the images the plan asks
            n = re.search(rf"make study STUDIES={name} N_IMAGES=(\d+)", evidence)
            assert n and int(n.group(1)) >= study.power.n_images(), name
