"""Intervals and verdicts that can fail (``SCIENCE.md`` section 7).

* a rate ``k / n`` gets the Wilson score 95% interval (:func:`wilson`);
* a mean or median over images gets a seeded percentile bootstrap 95% interval, resampling images
  (:func:`bootstrap`): cells, settings or seeds of one image are not independent samples, so a caller summarises
  per image first (:func:`per_image`);
* a claim's verdict against a threshold ``t`` is three-valued (:func:`verdict`): **holds** when the whole interval
  lies on the claim's side of ``t``, **does not hold** when it lies wholly on the other side, **inconclusive**
  otherwise. :class:`Estimate` carries a value, its interval and how many images it rests on, and writes the
  verdict's clause (:meth:`Estimate.against`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

LEVEL = 0.95
N_RESAMPLES = 10_000
SEED = 0
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n``; ``(nan, nan)`` for ``n = 0``."""
    from scipy.stats import norm

    if n == 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap(values, statistic: Callable = np.mean, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
              seed: int = SEED) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of ``statistic`` over ``values`` (one per image; NaNs dropped). One value,
    or values that are all equal, give a zero-width interval at that value; none give ``(nan, nan)``."""
    from scipy.stats import bootstrap as scipy_bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1 or np.all(v == v[0]):
        return float(statistic(v)), float(statistic(v))
    # a statistic with an ``axis`` (np.mean, np.median) is given all resamples at once: the same resamples and interval
    # as one call per resample, 10-200x sooner
    res = scipy_bootstrap((v,), statistic, confidence_level=level, n_resamples=n_resamples, method="percentile",
                          random_state=np.random.default_rng(seed), vectorized=_takes_axis(statistic))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _takes_axis(statistic: Callable) -> bool:
    import inspect

    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False


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


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval over ``n`` images (``kind``: ``"rate"`` for Wilson, ``"bootstrap"``)."""

    value: float
    low: float
    high: float
    n: int
    kind: str = "bootstrap"

    @classmethod
    def rate(cls, k: int, n: int) -> "Estimate":
        lo, hi = wilson(int(k), int(n))
        return cls(k / n if n else math.nan, lo, hi, int(n), "rate")

    @classmethod
    def of(cls, values, statistic: Callable = np.mean, seed: int = SEED) -> "Estimate":
        """``statistic`` of per-image ``values`` with its bootstrap interval."""
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        value = float(statistic(v)) if len(v) else math.nan
        return cls(value, *bootstrap(v, statistic, seed=seed), len(v))

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def too_few(self) -> bool:
        """A bootstrap estimate on fewer than two images: its interval has zero width and says nothing about others."""
        return self.kind == "bootstrap" and self.n < 2

    def verdict(self, threshold: float, above: bool = True) -> str:
        """:func:`verdict` of the interval; :data:`INCONCLUSIVE` when it rests on too few images (:attr:`too_few`)."""
        if self.too_few:
            return INCONCLUSIVE
        return verdict(self.interval, threshold, above)

    def text(self, percent: bool = False) -> str:
        """``"67% (95% CI 35% to 88%, 9 images)"`` or ``"0.80 (95% CI 0.74 to 0.85, 9 images)"``."""
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        single = " (rests on one image)" if self.n == 1 else ""
        return f"{f(self.value)} (95% CI {f(self.low)} to {f(self.high)}, {self.n} images{single})"

    def against(self, threshold: float, above: bool = True, percent: bool = False) -> str:
        """Where the interval lies with respect to ``threshold`` and the verdict: ``"its 95% interval (35% to 88%)
        contains the threshold of 50%: inconclusive"``."""
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        outcome = self.verdict(threshold, above)
        if self.too_few:
            return f"it rests on {self.n} image(s), too few for an interval: {outcome}"
        side = "above" if (outcome == HOLDS) == above else "below"
        where = "contains" if outcome == INCONCLUSIVE else f"lies wholly {side}"
        t = f(threshold) if percent else f"{threshold:g}"
        return f"its 95% interval ({f(self.low)} to {f(self.high)}) {where} the threshold of {t}: {outcome}"

    def to_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}value": self.value, f"{prefix}low": self.low, f"{prefix}high": self.high, f"{prefix}n": self.n}
