"""Intervals and verdicts that can fail (``SCIENCE.md`` sections 7 and 8), computed by scipy and statsmodels.

* a rate ``k / n`` gets the exact Clopper-Pearson 95% interval (:func:`clopper_pearson`), on which its verdict
  turns, with Wilson's score interval beside it (:func:`wilson`);
* a mean or median over images gets a seeded bias-corrected and accelerated (BCa) bootstrap 95% interval,
  resampling images (:func:`bootstrap`): cells, settings or seeds of one image are not independent samples, so a
  caller summarises per image first (:func:`per_image`);
* a paired comparison of two outcomes on the same images (:meth:`Estimate.paired`) gets the exact sign test on
  the images where they differ (McNemar's exact test when the outcomes are yes/no), on which its verdict turns,
  and for yes/no outcomes Newcombe's hybrid score interval of the paired difference;
* a claim's verdict against a threshold ``t`` is three-valued (:func:`verdict`): **holds** when the whole interval
  lies on the claim's side of ``t``, **does not hold** when it lies wholly on the other side, **inconclusive**
  otherwise. :class:`Estimate` carries a value, its interval and how many images it rests on, and writes the
  verdict's clause (:meth:`Estimate.against`).
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, binomtest, ttest_1samp
from scipy.stats import bootstrap as scipy_bootstrap
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2  # a one-sided p-value below it decides a verdict: 0.025 on each side, the 95% intervals' level
N_RESAMPLES = 10_000
SEED = 0
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


def _check_rate(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n`` (statsmodels); ``(nan, nan)`` for ``n = 0``."""
    if n == 0:
        return math.nan, math.nan
    _check_rate(k, n)
    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of the rate ``k / n`` (scipy's binomial test); ``(nan, nan)`` for
    ``n = 0``."""
    if n == 0:
        return math.nan, math.nan
    _check_rate(k, n)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def sign_test(n_more: int, n_less: int) -> float:
    """Two-sided exact p-value of the sign test on the pairs that differ: ``n_more`` where the first outcome is
    larger, ``n_less`` where it is smaller (for yes/no outcomes, McNemar's exact test); 1 when none differ."""
    m = int(n_more) + int(n_less)
    return float(binomtest(int(n_more), m, 0.5).pvalue) if m else 1.0


def paired_rate_interval(first, second, level: float = LEVEL) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) of the paired difference of two yes/no rates on the same
    images, ``mean(first) - mean(second)``: Wilson intervals of the two rates (statsmodels) combined with the
    outcomes' correlation. ``first``, ``second``: per-image 0/1 outcomes, one pair per image."""
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    both, only_x, only_y = int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum())
    neither = n - both - only_x - only_y
    p1, p2 = (both + only_x) / n, (both + only_y) / n
    (l1, u1), (l2, u2) = wilson(both + only_x, n, level), wilson(both + only_y, n, level)
    margins = (both + only_x) * (only_y + neither) * (both + only_y) * (only_x + neither)
    phi = (both * neither - only_x * only_y) / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return p1 - p2 - delta, p1 - p2 + eps


def bootstrap(values, statistic: Callable = np.mean, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
              seed: int = SEED) -> tuple[float, float]:
    """Seeded BCa bootstrap interval of ``statistic`` over ``values`` (one per image; NaNs dropped; scipy). One
    value, or values that are all equal, give a zero-width interval at that value; none give ``(nan, nan)``. Where
    BCa is undefined (its acceleration needs jackknife values that differ, e.g. a median of few distinct values) the
    percentile interval of the same resamples is given. ``n_resamples``: resamples of the images."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1 or np.all(v == v[0]):
        return float(statistic(v)), float(statistic(v))
    # a statistic with an ``axis`` (np.mean, np.median) is given all resamples at once: the same resamples and interval
    # as one call per resample, 10-200x sooner
    vectorized = _takes_axis(statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        res = scipy_bootstrap((v,), statistic, confidence_level=level, n_resamples=n_resamples, method="BCa",
                              random_state=np.random.default_rng(seed), vectorized=vectorized)
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        res = scipy_bootstrap((v,), statistic, confidence_level=level, n_resamples=n_resamples, method="percentile",
                              random_state=np.random.default_rng(seed), vectorized=vectorized)
        lo, hi = res.confidence_interval
    return float(lo), float(hi)


def _takes_axis(statistic: Callable) -> bool:
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False


def p_verdict(p_holds: float, p_fails: float, alpha: float = ALPHA) -> str:
    """:data:`HOLDS` when the one-sided p-value on the claim's side is below ``alpha``, :data:`FAILS` when the one on
    the other side is, else :data:`INCONCLUSIVE` (``p_holds``, ``p_fails``: of :meth:`Estimate.p_values`, maybe
    adjusted)."""
    if p_holds < alpha:
        return HOLDS
    return FAILS if p_fails < alpha else INCONCLUSIVE


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family's ``p_values`` (statsmodels); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def verdict(interval: tuple[float, float], threshold: float, above: bool = True) -> str:
    """:data:`HOLDS` when ``interval`` lies wholly on the claim's side of ``threshold`` (``above``: greater than it;
    else below it), :data:`FAILS` when wholly on the other side, :data:`INCONCLUSIVE` otherwise (or when unknown)."""
    lo, hi = interval
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if above:
        return HOLDS if lo > threshold else FAILS if hi < threshold else INCONCLUSIVE
    return HOLDS if hi < threshold else FAILS if lo > threshold else INCONCLUSIVE


def per_image(table: pd.DataFrame, column: str, statistic: str = "mean", keys=("model", "image")) -> pd.Series:
    """``column`` summarised per image (``statistic``: a pandas aggregation, e.g. ``"mean"``, ``"median"``), indexed
    by ``keys``: the independent units the intervals resample."""
    return table.groupby(list(keys), sort=False)[column].agg(statistic)


def pooled(table: pd.DataFrame, column: str, statistic=np.mean, per_image: str = "mean") -> "Estimate":
    """``statistic`` over images of ``column`` summarised per (model, image) by ``per_image``, then per image over
    the models, with its bootstrap interval over images."""
    per = table.groupby(["model", "image"], sort=False)[column].agg(per_image)
    return Estimate.of(per.groupby(level="image", sort=False).mean().to_numpy(), statistic)


def image_rate(table: pd.DataFrame, column: str) -> "Estimate":
    """The share of images where ``column`` (0/1) holds: exact (:meth:`Estimate.rate`) for one model's rows; for
    several models per image over the models, then a bootstrap over images (:func:`pooled`)."""
    if table.model.nunique() == 1:
        return Estimate.rate(int(table[column].sum()), len(table))
    return pooled(table, column)


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval over ``n`` images. ``kind``: ``"rate"`` (a share of images, Clopper-Pearson;
    Wilson's interval beside in ``wilson``), ``"bootstrap"`` (a mean or median over images, BCa) or ``"paired"`` (a
    paired difference; ``discordant`` = images where the first outcome is larger, smaller; ``p_value`` its exact
    two-sided sign test, on which the verdict against 0 turns)."""

    value: float
    low: float
    high: float
    n: int
    kind: str = "bootstrap"
    wilson: tuple[float, float] | None = None
    discordant: tuple[int, int] | None = None
    p_value: float = math.nan
    values: tuple = field(default=(), repr=False, compare=False)  # a bootstrap's per-image values
    statistic: str = "mean"

    @classmethod
    def rate(cls, k: int, n: int) -> "Estimate":
        """The share ``k / n`` with its exact interval (and Wilson's)."""
        k, n = int(k), int(n)
        return cls(k / n if n else math.nan, *clopper_pearson(k, n), n, "rate", wilson=wilson(k, n))

    @classmethod
    def of(cls, values, statistic: Callable = np.mean, seed: int = SEED) -> "Estimate":
        """``statistic`` of per-image ``values`` with its bootstrap interval."""
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        value = float(statistic(v)) if len(v) else math.nan
        return cls(value, *bootstrap(v, statistic, seed=seed), len(v), values=tuple(v.tolist()),
                   statistic=getattr(statistic, "__name__", "statistic"))

    @classmethod
    def paired(cls, first, second, seed: int = SEED) -> "Estimate":
        """The mean over images of ``first - second`` (per-image outcomes of two settings on the same images, in
        ``[0, 1]``; pairs with a NaN dropped): the exact sign test on the images where they differ and, when both are
        yes/no, Newcombe's interval for paired rates (:func:`paired_rate_interval`), else BCa."""
        a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
        keep = np.isfinite(a) & np.isfinite(b)
        d = a[keep] - b[keep]
        more, less, n = int((d > 0).sum()), int((d < 0).sum()), len(d)
        binary = np.isin(a[keep], (0.0, 1.0)).all() and np.isin(b[keep], (0.0, 1.0)).all()
        low, high = paired_rate_interval(a[keep], b[keep]) if binary else bootstrap(d, seed=seed)
        return cls(float(d.mean()) if n else math.nan, low, high, n, "paired", discordant=(more, less),
                   p_value=sign_test(more, less))

    def p_values(self, threshold: float) -> tuple[float, float]:
        """One-sided p-values ``(above, below)``: of "the quantity exceeds ``threshold``" and of "it lies below it"
        (each against the null on the other side; scipy). A rate: the exact binomial test of ``k`` of ``n`` against
        ``threshold``; a paired difference (``threshold`` 0): the sign test on the images that differ; a median over
        images: the sign test of the images' values against ``threshold``; a mean: the one-sample t-test. Too few
        images, or no test for the statistic: ``(1, 1)``."""
        if self.kind == "rate" and self.n:
            k = round(self.value * self.n)
            return tuple(float(binomtest(k, self.n, threshold, alternative=a).pvalue) for a in ("greater", "less"))
        if self.kind == "paired":
            if threshold != 0:
                raise ValueError("a paired difference is judged against 0")
            more, less = self.discordant
            if more + less == 0:
                return 1.0, 1.0
            return tuple(float(binomtest(more, more + less, 0.5, alternative=a).pvalue) for a in ("greater", "less"))
        v = np.asarray(self.values, dtype=float)
        if len(v) < 2:
            return 1.0, 1.0
        if self.statistic == "median":
            above, below = int((v > threshold).sum()), int((v < threshold).sum())
            if above + below == 0:
                return 1.0, 1.0
            return tuple(float(binomtest(above, above + below, 0.5, alternative=a).pvalue) for a in ("greater", "less"))
        if self.statistic == "mean":
            if np.all(v == v[0]):  # no spread: the t statistic is undefined; the values lie on one side or on it
                return (0.0, 1.0) if v[0] > threshold else (1.0, 0.0) if v[0] < threshold else (1.0, 1.0)
            return tuple(float(ttest_1samp(v, threshold, alternative=a).pvalue) for a in ("greater", "less"))
        return 1.0, 1.0

    def p_columns(self, threshold: float, above: bool = True) -> dict:
        """``{"p_holds", "p_fails"}``: :meth:`p_values` on the claim's side (``above``: greater than ``threshold``)
        and on the other, for a table's verdict row (the family's adjustment reads them, :mod:`ama.report.verdicts`)."""
        p_above, p_below = self.p_values(threshold)
        return dict(p_holds=p_above, p_fails=p_below) if above else dict(p_holds=p_below, p_fails=p_above)

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def too_few(self) -> bool:
        """A bootstrap estimate on fewer than two images: its interval has zero width and says nothing about others."""
        return self.kind == "bootstrap" and self.n < 2

    def verdict(self, threshold: float, above: bool = True) -> str:
        """:func:`verdict` of the interval; :data:`INCONCLUSIVE` when it rests on too few images (:attr:`too_few`). A
        paired difference against 0: its exact sign test at the same level (two-sided p < 0.05, on the side of
        its value)."""
        if self.too_few:
            return INCONCLUSIVE
        if self.kind == "paired":
            if threshold != 0:
                raise ValueError("a paired difference is judged against 0")
            if not self.p_value < 1 - LEVEL or self.value == 0:
                return INCONCLUSIVE
            return HOLDS if (self.value > 0) == above else FAILS
        return verdict(self.interval, threshold, above)

    def text(self, percent: bool = False) -> str:
        """``"67% (95% CI 35% to 88%, 9 images)"`` or ``"0.80 (95% CI 0.74 to 0.85, 9 images)"``."""
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        single = " (rests on one image)" if self.n == 1 else ""
        exact = "exact " if self.kind == "rate" else ""
        test = (f"; {self.discordant[0]} vs {self.discordant[1]} images differ, exact sign test p = {self.p_value:.3g}"
                if self.kind == "paired" else "")
        return f"{f(self.value)} (95% {exact}CI {f(self.low)} to {f(self.high)}, {self.n} images{single}{test})"

    def against(self, threshold: float, above: bool = True, percent: bool = False) -> str:
        """Where the interval lies with respect to ``threshold`` and the verdict: ``"its 95% interval (35% to 88%)
        contains the threshold of 50%: inconclusive"``."""
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        outcome = self.verdict(threshold, above)
        if self.too_few:
            return f"it rests on {self.n} image(s), too few for an interval: {outcome}"
        if self.kind == "paired":
            more, less = self.discordant
            return (f"the exact sign test on the {more + less} images where the two differ ({more} vs {less}) gives "
                    f"p = {self.p_value:.3g}: {outcome}")
        side = "above" if (outcome == HOLDS) == above else "below"
        where = "contains" if outcome == INCONCLUSIVE else f"lies wholly {side}"
        t = f(threshold) if percent else f"{threshold:g}"
        return f"its 95% interval ({f(self.low)} to {f(self.high)}) {where} the threshold of {t}: {outcome}"

    def to_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}value": self.value, f"{prefix}low": self.low, f"{prefix}high": self.high, f"{prefix}n": self.n}
