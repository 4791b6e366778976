"""Power plans: how many images a paired yes/no question needs before it is run (``SCIENCE.md`` section 8).

A study that decides a question by McNemar's exact test (or, for a continuous outcome, the paired t-test:
:class:`MeanEffect`) declares the effect it must detect (:class:`PairedEffect`:
the share of images where only the first outcome is yes, and where only the second is) and the family it is judged
in; :func:`mcnemar_n` gives the images that reach 80% power at the family's strictest Holm level (``alpha / k`` for
``k`` verdicts), so a profile that gives the study that many images can answer it either way. The power is exact:
the discordant count ``m`` is binomial ``(n, p10 + p01)`` and, given ``m``, the test rejects when the count one way
reaches the exact two-sided critical value (scipy's ``binomtest``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom, binomtest

__all__ = ["PairedEffect", "MeanEffect", "mcnemar_power", "mcnemar_n"]

POWER = 0.8
ALPHA = 0.05  # two-sided, the kit's 0.025 on each side


@dataclass(frozen=True)
class PairedEffect:
    """The effect a paired yes/no question must detect: ``only_first`` (the share of images where only the first
    outcome is yes), ``only_second`` (only the second), ``family`` (how many verdicts Holm adjusts together), ``source``
    (where the shares were measured, in words)."""

    only_first: float
    only_second: float
    family: int = 1
    source: str = ""

    def n_images(self, power: float = POWER) -> int:
        """The images that give ``power`` at the family's strictest Holm level (:func:`mcnemar_n`)."""
        return mcnemar_n(self.only_first, self.only_second, ALPHA / self.family, power)


@dataclass(frozen=True)
class MeanEffect:
    """The effect a paired continuous question must detect: ``d``, the mean paired difference over its standard
    deviation across images (Cohen's d of the differences), judged by the paired t-test in a family of ``family``
    verdicts; ``source``: where it was measured, in words."""

    d: float
    family: int = 1
    source: str = ""

    def n_images(self, power: float = POWER) -> int:
        """The images that give ``power`` to the two-sided paired t-test at the family's strictest Holm level
        (statsmodels' ``TTestPower``), rounded up."""
        from statsmodels.stats.power import TTestPower

        return int(np.ceil(TTestPower().solve_power(effect_size=self.d, alpha=ALPHA / self.family, power=power)))


@lru_cache(maxsize=None)
def _rejects(m: int, alpha: float) -> np.ndarray:
    """For ``m`` discordant images, whether the exact two-sided test rejects at each count ``b = 0..m`` one way."""
    return np.array([binomtest(b, m, 0.5).pvalue < alpha for b in range(m + 1)]) if m else np.zeros(1, bool)


def mcnemar_power(n: int, only_first: float, only_second: float, alpha: float = ALPHA) -> float:
    """The exact power of McNemar's two-sided exact test at level ``alpha`` on ``n`` images when a share
    ``only_first`` of images is yes only under the first outcome and ``only_second`` only under the second."""
    discordant = only_first + only_second
    if discordant <= 0:
        return 0.0
    share = only_first / discordant
    power = 0.0
    for m in range(n + 1):
        weight = binom.pmf(m, n, discordant)
        if weight < 1e-12:
            continue
        power += weight * binom.pmf(np.arange(m + 1), m, share)[_rejects(m, alpha)].sum()
    return float(power)


@lru_cache(maxsize=None)  # a report asks it once per section, page and notebook that shows the finding
def mcnemar_n(only_first: float, only_second: float, alpha: float = ALPHA, power: float = POWER,
              most: int = 2000) -> int:
    """The fewest images (at most ``most``) at which :func:`mcnemar_power` of ``only_first``, ``only_second`` at level
    ``alpha`` reaches ``power`` and stays there for the next five (exact power is not monotone in ``n``); ``most`` when
    none does."""
    for n in range(2, most + 1):
        if all(mcnemar_power(k, only_first, only_second, alpha) >= power for k in range(n, n + 6)):
            return n
    return most
