"""Fooling against the clean logit margin: the logistic fit, its interval and the terciles' fitted rates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ama.studies import confidence


def _metrics(margin, fooled, e=1):
    n = len(margin)
    return pd.DataFrame(dict(model="m", image=[f"i{k}" for k in range(n)], e=e, n_iter=100, quantized=True,
                             setting="attack", mode="flip", clean_margin=margin, fooled=fooled))


def test_the_fit_matches_an_independent_maximum_likelihood_and_reads_off_the_terciles():
    rng = np.random.default_rng(0)
    margin = rng.uniform(0, 10, 60)
    fooled = rng.random(60) < 1 / (1 + np.exp(-(2.0 - 0.6 * margin)))
    table = confidence.confidence_regression(_metrics(margin, fooled))
    assert list(table.tercile) == ["low", "middle", "high", "all"] and (table.fit == "ok").all()
    from sklearn.linear_model import LogisticRegression  # an independent fit: no penalty, the same likelihood

    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(margin[:, None], fooled)
    assert table.slope.iloc[0] == pytest.approx(ref.coef_[0, 0], rel=1e-4)
    assert table.slope_low.iloc[0] < table.slope.iloc[0] < table.slope_high.iloc[0] < 0
    low = table.set_index("tercile").loc["low"]
    assert low.margin_median == pytest.approx(np.median(np.sort(margin)[:20]))
    expected = ref.predict_proba([[low.margin_median]])[0, 1]
    assert low.predicted == pytest.approx(expected, rel=1e-4) and low.predicted_low < expected < low.predicted_high
    assert low.fooling_rate == pytest.approx(fooled[np.argsort(margin)[:20]].mean())
    lines = confidence.confidence_lines(table)
    assert lines[0].startswith("m, e = 1 (60 images): the log-odds of being fooled change by -")


def test_no_fit_says_why():
    few = confidence.confidence_regression(_metrics(np.arange(5.0), [True, False] * 2 + [True]))
    assert (few.fit == "fewer than 10 images").all() and "slope" not in few
    same = confidence.confidence_regression(_metrics(np.arange(12.0), [True] * 12))
    assert (same.fit == "every image has the same outcome").all()
    separable = confidence.confidence_regression(_metrics(np.arange(12.0), [True] * 6 + [False] * 6))
    assert separable.fit.iloc[0].startswith("no fit") and separable.fooling_rate.notna().all()
    assert confidence.confidence_lines(separable)[0].startswith("m, e = 1: no logistic fit")


def test_the_figure_draws_a_fit_and_nothing_without_one():
    import matplotlib

    matplotlib.use("Agg")
    from ama.figures.charts import confidence_figure

    assert confidence_figure(confidence.confidence_regression(_metrics(np.arange(5.0), [True, False] * 2 + [True]))) is None
    rng = np.random.default_rng(1)
    margin = rng.uniform(0, 10, 40)
    fig = confidence_figure(confidence.confidence_regression(_metrics(margin, rng.random(40) < 0.5 - margin / 25)))
    ax = fig.axes[0]
    curve = next(line for line in ax.get_lines() if len(line.get_xdata()) == 100)  # the fitted curve
    assert np.all(np.diff(curve.get_ydata()) < 0)  # fooled less often at a larger margin, as the slope says
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent(fig.canvas.get_renderer()).x1  # beside the points, not on them
