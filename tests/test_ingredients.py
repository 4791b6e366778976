"""The ingredient study (SCIENCE.md section 6): each ingredient alone on top of the reference, chosen on one half of
the images (at the first seed) and reported on the other (at every seed); on a tiny seeded model and on hand-made
tables."""
from __future__ import annotations

import numpy as np
from scipy import stats
import pandas as pd
import pytest

from ama.attack import optimizers
from ama.attack.marginal import marginal_attack, quantize
from ama.studies import ablation


@pytest.fixture
def x8(images32):
    return quantize(images32)


def test_each_single_ingredient_differs_from_the_reference_in_that_ingredient_alone():
    ref = ablation.study_settings("reference")
    assert ref == optimizers.settings(optimizers.ORIGINAL)
    singles = {"+margin loss": {"label_loss"}, "+best 8-bit iterate": {"select"}, "+APGD schedule": {"optimizer"},
               "+Adam": {"optimizer"}}
    for variant, changed in singles.items():
        s = ablation.study_settings(variant)
        assert {k for k in s if s[k] != ref[k]} == changed, variant
    for variant, opt in (("APGD (all three)", "apgd"), ("Adam (all three)", "adam")):
        assert ablation.study_settings(variant) == optimizers.settings(opt)
    with pytest.raises(ValueError, match="unknown variant 'momentum'"):
        ablation.study_settings("momentum")


def test_study_halves_alternate_over_an_even_spread():
    names = [f"im{k}" for k in range(10)]
    halves = ablation.study_halves(names, 4)
    assert halves == {"im0": "tune", "im3": "report", "im6": "tune", "im9": "report"}
    assert list(ablation.study_halves(names, 0).values()) == ["tune", "report"] * 5


def test_run_ingredients_attacks_each_variant_and_seed_once_tuning_at_the_first_seed_reusing_given_runs(tiny_model, x8, monkeypatch):
    names = list("abcd")
    halves = {"a": "tune", "c": "report"}
    given = marginal_attack(tiny_model, x8, e=1, n_iter=3, lamb=100.0, seed=1, names=names)  # reference, seed 1
    calls = []
    real = ablation.marginal_attack

    def counting(model, x, **kw):
        calls.append((kw["optimizer"], kw["label_loss"], kw["select"], kw["seed"], len(x)))
        return real(model, x, **kw)

    monkeypatch.setattr(ablation, "marginal_attack", counting)
    table = ablation.run_ingredients(tiny_model, x8, names, halves, e=1, n_iter=3, lamb=100.0, seeds=(0, 1),
                                     made=[given], progress=False)
    n = len(ablation.INGREDIENT_STUDY)
    assert len(calls) == 2 * n - 1                                        # the given run is not attacked again
    assert ("sign", "ce", "last", 1, 1) not in calls                      # (the given run held c at seed 1)
    assert [c[-1] for c in calls if c[3] == 0] == [2] * n                 # seed 0: both halves, only the study's images
    assert [c[-1] for c in calls if c[3] == 1] == [1] * (n - 1)           # seed 1: the reported half only
    assert len(table) == (2 + 1) * n and table.quantized.all()
    assert set(table.image) == {"a", "c"} and (table.half == table.image.map(halves)).all()
    assert set(table[table.image == "a"].seed) == {0} and set(table[table.image == "c"].seed) == {0, 1}
    assert not table.duplicated(["image", "variant", "seed"]).any()
    reused = table[(table.variant == "reference") & (table.seed == 1)].set_index("image")
    mine = given.metrics[given.metrics.quantized].set_index("image").loc[["c"]]
    pd.testing.assert_series_equal(reused.cam_cosine, mine.cam_cosine)


def _table(rows):
    """Rows (image, half, variant, seed, fooled, cam_cosine) of one model at e = 1."""
    return pd.DataFrame([dict(model="m", e=1, n_iter=10, image=i, half=h, variant=v, seed=s, fooled=f, cam_cosine=c)
                         for i, h, v, s, f, c in rows])


REPORTED = [f"r{k}" for k in range(1, 7)]  # six held-out images: the fewest an exact sign test can decide (p = 1/32)


def test_ingredient_summary_chooses_on_one_half_and_reports_the_other_per_image_first():
    rows = []
    for v, tune_fooled, report_fooled, cos in (("reference", 0, [(0, 0)] * 3 + [(0, 1)] * 3, 0.9),
                                               ("+margin loss", 1, [(1, 1)] * 6, 0.5),
                                               ("+Adam", 0, [(0, 0)] * 6, 0.2)):
        for s in (0, 1):
            rows.append(("t1", "tune", v, s, tune_fooled, cos))
            for image, f in zip(REPORTED, report_fooled):
                rows.append((image, "report", v, s, f[s], cos + 0.01 * s))
    summary = ablation.ingredient_summary(_table(rows)).set_index("variant")
    assert summary.chosen.to_dict() == {"reference": False, "+margin loss": True, "+Adam": False}
    ref, margin = summary.loc["reference"], summary.loc["+margin loss"]
    assert ref.fooling_rate == pytest.approx(0.25)          # r1-r3 0 of 2 seeds, r4-r6 1 of 2: per image 0, 0.5
    assert (ref.seed_min, ref.seed_max) == (0.0, 0.5)       # seed 0 fools none, seed 1 fools r4-r6
    assert margin.fooling_rate == 1.0 and margin.n_images == 6 and margin.n_seeds == 2
    assert margin.gain == pytest.approx(0.75)               # per image 1 - 0 and 1 - 0.5
    # the paired t-interval over images of means over seeds: gains 1, 1, 1, 0.5, 0.5, 0.5
    assert margin.gain_low == pytest.approx(0.75 - 2.5706 * np.std([1, 1, 1, .5, .5, .5], ddof=1) / 6 ** 0.5, abs=1e-3)
    gains = [1, 1, 1, 0.5, 0.5, 0.5]  # means over seeds: the paired t-test decides
    assert (margin.more_fooled, margin.less_fooled) == (6, 0)
    assert margin.p_value == pytest.approx(stats.ttest_1samp(gains, 0).pvalue)
    assert margin.verdict == "holds" and np.isnan(summary.loc["reference"].gain)
    adam = summary.loc["+Adam"]
    assert adam.verdict == "inconclusive" and (adam.more_fooled, adam.less_fooled) == (0, 3)  # 0 - 0 and 0 - 0.5
    assert adam.cosine_drop == pytest.approx(0.7)
    lines = ablation.ingredient_lines(summary.reset_index())
    assert "chosen on 1 image(s) at the first seed: +margin loss; reported on 6 other image(s) at 2 seed(s)" in lines[0]
    assert any("+margin loss" in line and "6 vs 0 images, paired t-test p = 0.0011): holds" in line for line in lines)


def test_ingredient_summary_without_a_tuning_half_chooses_nothing_and_can_say_does_not_hold():
    rows = [(i, "report", v, 0, f, 0.5) for k, i in enumerate(REPORTED)
            for v, f in zip(("reference", "+margin loss", "+Adam"), (1, int(k >= 3), 0))]
    s = ablation.ingredient_summary(_table(rows)).set_index("variant")
    assert not s.chosen.any() and (s.tune_images == 0).all()
    assert s.loc["+margin loss"].verdict == "inconclusive"   # per image -1 (3 images) and 0 (3): p = 0.25
    assert s.loc["+Adam"].verdict == "does not hold"         # -1 on all six: p = 1/32


def test_capacity_summary_pairs_each_budget_with_the_smallest():
    rows = [dict(model="m", optimizer="apgd", e=1, n_iter=it, image=i, fooled=f, cam_cosine=c)
            for it, fs, c in ((10, (1, 0, 0, 0), 0.8), (100, (1, 1, 1, 0), 0.4)) for i, f in zip("abcd", fs)]
    s = ablation.capacity_summary(pd.DataFrame(rows)).set_index("n_iter")
    assert s.loc[10].fooled == 1 and s.loc[100].fooled == 3 and s.loc[100].newly_fooled == 2
    assert s.loc[100].no_longer_fooled == 0 and s.loc[10].newly_fooled == 0
    assert s.loc[100].fooling_low == pytest.approx(0.1941, abs=1e-3)   # Clopper-Pearson 95% of 3 / 4: 0.19 to 0.99
    assert s.loc[100].cam_cosine == pytest.approx(0.4)


def test_capacity_study_runs_each_budget_on_the_same_images(tiny_model, x8):
    table = ablation.capacity_study(tiny_model, x8, list("abcd"), e=(1,), budgets=(2, 4), progress=False)
    assert sorted(table.n_iter.unique()) == [2, 4] and len(table) == 8 and set(table.optimizer) == {"apgd"}


def test_report_finding_states_the_held_out_result_with_its_interval(tmp_path):
    from ama.report.findings import ingredients_finding

    rows = []
    for v, tune_fooled, report_fooled in (("reference", 0, 0), ("+margin loss", 1, 1), ("+Adam", 0, 0)):
        rows.append(("t1", "tune", v, 0, tune_fooled, 0.5))
        rows += [(i, "report", v, 0, report_fooled, 0.5) for i in REPORTED]
    (tmp_path / "tables").mkdir()
    ablation.ingredient_summary(_table(rows)).to_csv(tmp_path / "tables" / "attack_ingredients_summary.csv",
                                                     index=False)
    section = ingredients_finding(tmp_path)
    assert "+margin loss was the best setting" in section.sentence
    assert "+margin loss fool more than the paper's loop" in section.sentence
    # McNemar's exact interval by hand: 6 of 6 images differ, all one way; pi's Clopper-Pearson lower end is
    # 0.025 ** (1 / 6) = 0.541, so the difference's is (6 / 6)(2 * 0.541 - 1) = 0.08
    rows = section.table.set_index("variant")
    assert rows.loc["+margin loss", "gain over the paper's, paired"] == "+100 points (+8 to +100)"
    assert list(section.table.variant) == ["reference", "+margin loss", "+Adam"]
    assert "nan" not in section.table.to_string()
    assert ingredients_finding(tmp_path / "nothing") is None
