"""Does the attack fool confident images less? Fooling against the clean logit margin (``SCIENCE.md`` section 8).

``data/imagenet`` looks like training images (high top-1, high confidence), and the evidence run's fooling rate
falls steeply across clean-confidence terciles. Per model and ``e``, :func:`confidence_regression` fits a logistic
regression of the reference attack's ``fooled`` (8-bit) on the clean logit margin (top-1 minus top-2 logit, column
``clean_margin`` of ``attack_metrics``) with statsmodels, and reads the fitted rate, with its 95% interval, off the
median margin of each confidence tercile: what images as little confident as the least confident third would give.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

from ..stats.intervals import LEVEL
from ..stats.rows import original_attack
from .attack_summaries import TERCILES

MIN_IMAGES = 10  # fewer images (or only one outcome, or separable outcomes): no fit, the row says why


def _fit(margin: np.ndarray, fooled: np.ndarray):
    """The fitted binomial GLM (logit link) of ``fooled`` (0/1) on ``margin``, or the reason there is none."""
    if len(margin) < MIN_IMAGES:
        return f"fewer than {MIN_IMAGES} images"
    if fooled.min() == fooled.max():
        return "every image has the same outcome"
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        try:
            return sm.GLM(fooled, sm.add_constant(margin), family=sm.families.Binomial()).fit()
        except (PerfectSeparationWarning, np.linalg.LinAlgError, ValueError) as err:
            return f"no fit: {type(err).__name__}"


def confidence_regression(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model x ``e`` x tercile of the clean margin (and ``"all"`` the images; the reference attack, 8-bit; rows
    of ``attack_metrics``):
    ``n_images`` and the tercile's ``margin_median``, the observed ``fooling_rate``, the fitted ``predicted`` rate at
    that margin with its 95% interval (``predicted_low`` / ``_high``), and the model's ``slope`` per unit of margin
    with its interval and Wald ``p_value`` (the same on every row of a model and ``e``); ``fit`` is ``"ok"`` or why
    there is no fit."""
    rows = original_attack(metrics)
    out = []
    for (model, e), g in rows.groupby(["model", "e"], sort=True):
        g = g.drop_duplicates("image")
        margin, fooled = g.clean_margin.to_numpy(float), g.fooled.to_numpy(float)
        res = _fit(margin, fooled)
        base = dict(model=model, e=e, n_fit=len(g), fit="ok" if not isinstance(res, str) else res)
        if not isinstance(res, str):
            (lo, hi) = res.conf_int(1 - LEVEL)[1]
            base.update(slope=res.params[1], slope_low=lo, slope_high=hi, p_value=res.pvalues[1])
        tercile = (pd.qcut(pd.Series(margin).rank(method="first"), len(TERCILES), labels=list(TERCILES)).to_numpy()
                   if len(g) >= len(TERCILES) else np.array(["all"] * len(g)))
        masks = {t: tercile == t for t in TERCILES if (tercile == t).any()} | {"all": np.ones(len(g), bool)}
        for t, mask in masks.items():
            row = dict(base, tercile=t, n_images=int(mask.sum()), margin_median=float(np.median(margin[mask])),
                       fooling_rate=float(fooled[mask].mean()))
            if not isinstance(res, str):
                p = res.get_prediction(np.array([[1.0, row["margin_median"]]])).summary_frame(alpha=1 - LEVEL)
                row.update(predicted=float(p["mean"].iloc[0]), predicted_low=float(p["mean_ci_lower"].iloc[0]),
                           predicted_high=float(p["mean_ci_upper"].iloc[0]))
            out.append(row)
    return pd.DataFrame(out)


def confidence_lines(table: pd.DataFrame) -> list[str]:
    """The report's and notebook 03's sentences (``table``: :func:`confidence_regression`)."""
    lines = []
    for (model, e), g in table.groupby(["model", "e"], sort=True):
        first = g.iloc[0]
        if first.fit != "ok":
            lines.append(f"{model}, e = {e}: no logistic fit ({first.fit}).")
            continue
        low = g[g.tercile == TERCILES[0]]
        text = (f"{model}, e = {e} ({int(first.n_fit)} images): the log-odds of being fooled change by "
                f"{first.slope:+.2f} per unit of clean logit margin (95% CI {first.slope_low:+.2f} to "
                f"{first.slope_high:+.2f}, p = {first.p_value:.2g})")
        if len(low):
            r = low.iloc[0]
            text += (f"; at the least confident third's median margin ({r.margin_median:.1f}) the fitted rate is "
                     f"{100 * r.predicted:.0f}% ({100 * r.predicted_low:.0f}-{100 * r.predicted_high:.0f}%; observed "
                     f"{100 * r.fooling_rate:.0f}% of {int(r.n_images)})")
        lines.append(text + ".")
    return lines
