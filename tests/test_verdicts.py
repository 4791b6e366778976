"""Verdicts in families, Holm within each (ama.report.verdicts), and the one-sided p-values they rest on."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from ama.artifacts import TABLES
from ama.report import verdicts
from ama.stats import intervals


def test_one_sided_p_values_of_each_kind():
    above, below = intervals.Estimate.rate(114, 200).p_values(0.5)
    assert above == pytest.approx(binom.sf(113, 200, 0.5)) and below == pytest.approx(binom.cdf(114, 200, 0.5))
    assert above > intervals.ALPHA  # 2.8%: not decided at 0.025 a side, as its exact interval (49.8-64.0%) says
    paired = intervals.Estimate.paired([0] * 30, [1] * 5 + [0] * 25)
    assert paired.p_values(0.0) == pytest.approx((1.0, 0.5 ** 5))  # 0 vs 5: one-sided 1/32
    median = intervals.Estimate.of([0.2, 0.3, 0.4, 0.15, 0.05], np.median)
    assert median.p_values(0.1) == pytest.approx((binom.sf(3, 5, 0.5), binom.cdf(4, 5, 0.5)))  # 4 of 5 above
    mean = intervals.Estimate.of([1.0, 2.0, 3.0])
    t = 2 / (1 / np.sqrt(3))  # mean 2, sd 1: with 2 degrees of freedom P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2
    assert mean.p_values(0.0)[0] == pytest.approx((1 - t / np.sqrt(t * t + 2)) / 2)
    assert intervals.Estimate.of([0.8]).p_values(0.5) == (1.0, 1.0)  # one image decides nothing
    assert intervals.Estimate.of([0.8, 0.8]).p_values(0.5) == (0.0, 1.0)
    assert intervals.Estimate.rate(9, 10).p_columns(0.5, above=False)["p_fails"] == pytest.approx(binom.sf(8, 10, 0.5))


def test_holm_adjusts_a_family():
    assert intervals.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, max(2p, ...), p
    assert np.isnan(intervals.holm([0.01, np.nan])[1]) and intervals.holm([0.01, np.nan])[0] == pytest.approx(0.01)
    assert intervals.p_verdict(0.01, 0.9) == "holds" and intervals.p_verdict(0.9, 0.01) == "does not hold"
    assert intervals.p_verdict(0.03, 0.9) == "inconclusive"


def test_the_verdict_table_adjusts_within_each_family(tmp_path):
    from ama.studies.registry import studies

    studies()  # the studies' tables declared
    (tmp_path / "tables").mkdir()
    locations = pd.DataFrame(dict(model="m", e=1, location=["ring8", "ring32", "random"], frame_minus_fooled=0.2,
                                  gap_low=0.1, gap_high=0.3, verdict="holds", p_holds=[0.01, 0.012, 0.02],
                                  p_fails=0.99))
    locations.to_csv(tmp_path / "tables" / f"{TABLES.attack_location_summary}.csv", index=False)
    transfer = pd.DataFrame(dict(model="m", e=1, optimizer="sign", method=["layercam"], gap=0.1, low=0.05, high=0.2,
                                 verdict="holds", p_holds=[0.02], p_fails=0.98))
    transfer.to_csv(tmp_path / "tables" / f"{TABLES.transfer_verdicts}.csv", index=False)
    table = verdicts.verdict_table(tmp_path).set_index("verdict_of")
    assert set(table.family) == {"location", "transfer"}  # a family per question; no claim tables: no claims' rows
    ring8 = table.loc["the frame fools more than ring8 (sign), e = 1"]
    assert ring8.p_holds_holm == pytest.approx(0.03) and ring8.holm_verdict == "inconclusive" and ring8.changed
    assert table.loc["the frame fools more than random (sign), e = 1"].p_holds_holm == pytest.approx(0.03)  # step-down max
    assert table.loc["the attack transfers to layercam (sign, e = 1)"].holm_verdict == "holds"  # a family of one
    families = verdicts.family_table(table.reset_index()).set_index("how many")
    assert families.loc[3, "family"] == "location" and families.loc[3, "changed by Holm"] == 3
    assert families.loc[3, "asks"].startswith("Is the margin special?")
    # ring8, ring32 and random lose "holds"


def test_claim_1_holds_only_when_every_cell_kind_holds_and_claim_3_states_both_verdicts():
    table = pd.DataFrame(dict(family="claims", verdict_of=["claim 1: centre", "claim 1: edge", "claim 3 capability: x",
                                                           "claim 3 prevalence: y"],
                              holm_verdict=["holds", "inconclusive", "holds", "does not hold"]))
    assert verdicts.adjusted_claims(table) == {1: "inconclusive", 3: "capability: holds; prevalence: does not hold"}


def test_figures_draw_the_verdicts_intervals():
    from ama.figures.charts import verdict_interval

    assert verdict_interval([1, 0, 1, 1]) == intervals.clopper_pearson(3, 4)  # a rate: exact
    values = [0.2, 0.4, 0.9, 0.5, 0.3]
    assert verdict_interval(values) == intervals.t_interval(values)  # a mean: the t-interval, as the verdicts
