"""Padding variants compared: paired per image, exact, and the verdict's three outcomes."""
from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from ama.studies import padding_study as ps


def _ablation(fooled: dict) -> pd.DataFrame:
    rows = [dict(model=m, image=f"i{k}", e=1, optimizer="sign", mode="flip", n_iter=100, quantized=True,
                 fooled=bool(v)) for m, vals in fooled.items() for k, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_variants_group_by_base_with_the_as_trained_model_first():
    assert ps.variants(["lite0-reflect-pad", "lite1", "lite0"]) == {"lite0": ["lite0", "lite0-reflect-pad"]}


def test_padding_tests_pair_zero_against_non_zero_padding_on_the_same_images():
    t = ps.padding_tests(_ablation({"lite0": [1] * 7 + [0, 1, 1], "lite0-reflect-pad": [0] * 8 + [1, 1],
                                    "lite0-zero-pad": [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]}))
    row = t[(t.zero == "tf_same") & (t.other == "reflect")].iloc[0]
    assert (row.zero_only, row.other_only) == (7, 0) and row.zero_minus_other == pytest.approx(7 / 10)
    assert row.p_value == pytest.approx(binomtest(7, 7).pvalue)  # Holm over the two zero vs reflect rows: 2 x 0.5^7
    assert set(zip(t.zero, t.other)) == {("tf_same", "reflect"), ("zero", "reflect"), ("zero", "tf_same")}
    assert ps.zero_padding_verdict(t) == "holds"


def test_the_verdict_does_not_hold_when_reflect_fools_at_least_as_often_and_is_inconclusive_between():
    same = ps.padding_tests(_ablation({"lite0": [1, 0] * 20, "lite0-reflect-pad": [1, 1] * 20}))
    assert ps.zero_padding_verdict(same) == "does not hold"
    few = ps.padding_tests(_ablation({"lite0": [1, 1, 0, 0], "lite0-reflect-pad": [1, 0, 0, 0]}))
    assert ps.zero_padding_verdict(few) == "inconclusive"
    assert ps.zero_padding_verdict(pd.DataFrame()) == "inconclusive"


def _mass(model, lr, tb):
    rows = []
    for measure, (value, verdict) in (("left - right", lr), ("top - bottom", tb)):
        rows.append(dict(model=model, cell_kind="all", measure=measure, value=value, low=value - 0.05,
                         high=value + 0.05, verdict=verdict))
    return rows


def test_an_imbalance_that_flips_with_the_padding_is_the_paddings_and_one_that_does_not_is_unexplained():
    from ama.studies.sides import imbalance_line

    flips = pd.DataFrame(_mass("lite0", (-0.3, "does not hold"), (0.0, "inconclusive"))
                         + _mass("lite0-zero-pad", (0.4, "holds"), (0.4, "holds")))
    line = imbalance_line(flips)
    left_right, top_bottom = line.split("top - bottom:")
    assert "lite0-zero-pad +0.40" in left_right and "flips with the padding" in left_right
    assert "no clear imbalance as trained, though the symmetric paddings show one" in top_bottom
    stays = imbalance_line(pd.DataFrame(_mass("lite0", (-0.3, "does not hold"), (0, "inconclusive"))
                                        + _mass("lite0-reflect-pad", (-0.2, "does not hold"), (0, "inconclusive"))))
    assert "does not follow the padding: the kit leaves it unexplained" in stays
    alone = imbalance_line(pd.DataFrame(_mass("lite0", (-0.3, "does not hold"), (-0.3, "does not hold"))))
    assert alone.count("this run has no padding variants: `MODELS=lite0,lite0-zero-pad,... STUDIES=sides`") == 2
    assert imbalance_line(pd.DataFrame(_mass("lite0-zero-pad", (0, "inconclusive"), (0, "inconclusive")))) is None
