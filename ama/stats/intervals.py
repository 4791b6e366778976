"""Intervals and verdicts that can fail (``SCIENCE.md`` sections 7 and 8), computed by scipy and statsmodels.

Every interval is the inversion of the test that decides its verdict, so that the two never disagree: a verdict
*holds* exactly when the interval lies wholly on the claim's side of the threshold, and exactly when the test's
one-sided p on that side is below :data:`ALPHA`.

* a rate ``k / n``: the exact binomial test and its inversion, the Clopper-Pearson 95% interval
  (:func:`clopper_pearson`), with Wilson's score interval beside it (:func:`wilson`, shown, never deciding);
* a mean over images: the one-sample t-test and its t-interval; a median over images: the sign test of the images'
  values and its inversion, the order-statistic interval (scipy's ``quantile_test``); any other statistic a seeded
  BCa bootstrap interval, resampling images (:func:`bootstrap`), which decides nothing. Cells, settings or seeds of one
  image are not independent samples, so a caller summarises per image first (:func:`per_image`);
* a paired comparison of two outcomes on the same images (:meth:`Estimate.paired`): for yes/no outcomes McNemar's
  exact test on the images where they differ and its inversion (:func:`paired_rate_interval`: conditional on the ``m``
  discordant images, the difference is ``(m / n)(2 pi - 1)`` with ``pi`` the share of them where the first is yes,
  and ``pi``'s Clopper-Pearson interval maps to the difference's); for other outcomes (shares over seeds, cosines) the
  paired t-test and its t-interval of the mean difference;
* a claim's verdict against a threshold ``t`` is three-valued (:func:`verdict`): **holds** when the whole
  interval lies on the claim's side of ``t``, **does not hold** when it lies wholly on the other side,
  **inconclusive** otherwise. :class:`Estimate` carries a value, its interval and how many images it rests on, and
  writes the verdict's clause (:meth:`Estimate.against`).
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, binomtest, quantile_test, ttest_1samp
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
    """The exact interval of the paired difference of two yes/no rates on the same images, ``mean(first) -
    mean(second)``, that inverts McNemar's exact test: given the ``m`` of ``n`` images where the two differ, ``b`` of
    them where only the first is yes is binomial ``(m, pi)`` and the difference is ``(m / n)(2 pi - 1)``; ``pi``'s
    Clopper-Pearson interval (:func:`clopper_pearson`) maps to the difference's. It excludes 0 exactly when the exact
    test's two-sided p is below ``1 - level``; with no discordant image it is ``(0, 0)``. ``first``, ``second``:
    per-image 0/1 outcomes, one pair per image; ``level``: the interval's confidence."""
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    only_x, only_y = int((x & ~y).sum()), int((~x & y).sum())
    m = only_x + only_y
    if m == 0:
        return 0.0, 0.0
    lo, hi = clopper_pearson(only_x, m, level)
    return m / n * (2 * lo - 1), m / n * (2 * hi - 1)


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The one-sample t-interval of the mean of ``values`` (scipy), the inversion of the t-test; ``(nan, nan)`` for
    fewer than two finite values, and the point itself when they are all equal (no spread). ``level``: its
    confidence."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v[0]), float(v[0])) if len(v) else (math.nan, math.nan)
    if np.all(v == v[0]):  # the mean as np.mean rounds it, so the interval holds the estimate
        return float(v.mean()), float(v.mean())
    ci, mean = ttest_1samp(v, 0.0).confidence_interval(confidence_level=level), float(v.mean())
    return min(float(ci.low), mean), max(float(ci.high), mean)  # float rounding never puts the mean outside


def median_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The distribution-free interval of the median of ``values``: order statistics, the inversion of the sign test
    (scipy's ``quantile_test``); ``(nan, nan)`` when none is finite, the point itself for one value or when all are
    equal; ``nan`` ends where too few values allow none (fewer than 6 at 95%). ``level``: its confidence (at least,
    the sign test being discrete)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    ci = quantile_test(v, q=float(np.median(v)), p=0.5).confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


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


def _t_p(d) -> float:
    """Two-sided p of the paired t-test of the differences ``d`` against 0 (1 when undefined: fewer than two, or no
    spread and zero; 0 when they all lie on one side with no spread)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2 or np.all(d == 0):
        return 1.0
    if np.all(d == d[0]):
        return 0.0
    return float(ttest_1samp(d, 0.0).pvalue)


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


def holm_verdicts(p_holds, p_fails) -> list[str]:
    """Each row's :func:`p_verdict` after Holm's adjustment of ``p_holds`` and of ``p_fails`` within the family they
    form (each a sequence over the family's rows; NaN stays unjudged: inconclusive)."""
    return [p_verdict(h, f) for h, f in zip(holm(p_holds), holm(p_fails))]


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
        """``statistic`` of per-image ``values`` with the interval of the test that judges it: a mean the t-interval
        (:func:`t_interval`), a median the order-statistic interval (:func:`median_interval`), any other statistic
        a seeded BCa bootstrap (:func:`bootstrap`; ``seed``: its resamples)."""
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        value = float(statistic(v)) if len(v) else math.nan
        name = getattr(statistic, "__name__", "statistic")
        interval = t_interval if name == "mean" else median_interval if name == "median" else \
            (lambda v: bootstrap(v, statistic, seed=seed))
        return cls(value, *interval(v), len(v), values=tuple(v.tolist()), statistic=name)

    @classmethod
    def paired(cls, first, second, seed: int = SEED) -> "Estimate":
        """The mean over images of ``first - second`` (per-image outcomes of two settings on the same images, in
        ``[0, 1]``; pairs with a NaN dropped), with the test that decides it against 0 and that test's interval:
        when both are yes/no, McNemar's exact test and its exact interval (:func:`paired_rate_interval`); else the
        paired t-test and its t-interval (:func:`t_interval`). ``discordant``: the images where the first is larger,
        smaller; ``p_value``: the deciding test's two-sided p. ``seed``: unused, kept for callers."""
        a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
        keep = np.isfinite(a) & np.isfinite(b)
        d = a[keep] - b[keep]
        more, less, n = int((d > 0).sum()), int((d < 0).sum()), len(d)
        binary = bool(np.isin(a[keep], (0.0, 1.0)).all() and np.isin(b[keep], (0.0, 1.0)).all())
        if binary:
            (low, high), p = paired_rate_interval(a[keep], b[keep]), sign_test(more, less)
        else:
            (low, high), p = t_interval(d), _t_p(d)
        return cls(float(d.mean()) if n else math.nan, low, high, n, "paired", discordant=(more, less),
                   p_value=p, values=() if binary else tuple(d.tolist()), statistic="sign" if binary else "mean")

    def p_values(self, threshold: float) -> tuple[float, float]:
        """One-sided p-values ``(above, below)``: of "the quantity exceeds ``threshold``" and of "it lies below it"
        (each against the null on the other side; scipy). A rate: the exact binomial test of ``k`` of ``n`` against
        ``threshold``; a paired yes/no difference (``threshold`` 0): McNemar's exact test (the sign test on the images
        that differ); a median over images: the sign test of the images' values against ``threshold`` (scipy's
        ``quantile_test``); a mean, or another paired difference: the (paired) t-test. Too few images, or no test for
        the statistic: ``(1, 1)``."""
        if self.kind == "rate" and self.n:
            k = round(self.value * self.n)
            return tuple(float(binomtest(k, self.n, threshold, alternative=a).pvalue) for a in ("greater", "less"))
        if self.kind == "paired" and self.statistic == "sign":
            if threshold != 0:
                raise ValueError("a paired difference is judged against 0")
            more, less = self.discordant
            if more + less == 0:
                return 1.0, 1.0
            return tuple(float(binomtest(more, more + less, 0.5, alternative=a).pvalue) for a in ("greater", "less"))
        if self.kind == "paired" and threshold != 0:
            raise ValueError("a paired difference is judged against 0")
        v = np.asarray(self.values, dtype=float)
        if len(v) < 2:
            return 1.0, 1.0
        if self.statistic == "median":  # the sign test as scipy's quantile_test counts ties: its interval's inverse
            if np.all(v == v[0]):
                return (0.0, 1.0) if v[0] > threshold else (1.0, 0.0) if v[0] < threshold else (1.0, 1.0)
            return tuple(float(quantile_test(v, q=threshold, p=0.5, alternative=a).pvalue) for a in ("greater", "less"))
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
        """The test's verdict (:func:`p_verdict` of :meth:`p_columns`), which its interval gives as well
        (:func:`verdict`): :data:`INCONCLUSIVE` when it rests on too few images (:attr:`too_few`) or the statistic
        has no test."""
        if self.kind == "paired" and threshold != 0:
            raise ValueError("a paired difference is judged against 0")
        if self.too_few:
            return INCONCLUSIVE
        return p_verdict(**self.p_columns(threshold, above))

    @property
    def test(self) -> str:
        """The name of the test that decides a paired difference: ``"exact sign test"`` (McNemar's, yes/no outcomes)
        or ``"paired t-test"``."""
        return "exact sign test" if self.statistic == "sign" else "paired t-test"

    def text(self, percent: bool = False) -> str:
        """``"67% (95% CI 35% to 88%, 9 images)"`` or ``"0.80 (95% CI 0.74 to 0.85, 9 images)"``."""
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        single = " (rests on one image)" if self.n == 1 else ""
        exact = "exact " if self.kind == "rate" else ""
        test = (f"; {self.discordant[0]} vs {self.discordant[1]} images differ, {self.test} p = {self.p_value:.3g}"
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
            return (f"the {self.test} on {self.n} images ({more} vs {less} differ) gives p = {self.p_value:.3g}: "
                    f"{outcome}")
        side = "above" if (outcome == HOLDS) == above else "below"
        where = "contains" if outcome == INCONCLUSIVE else f"lies wholly {side}"
        t = f(threshold) if percent else f"{threshold:g}"
        return f"its 95% interval ({f(self.low)} to {f(self.high)}) {where} the threshold of {t}: {outcome}"

    def to_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}value": self.value, f"{prefix}low": self.low, f"{prefix}high": self.high, f"{prefix}n": self.n}
