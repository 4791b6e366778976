"""Does the attack fool every model as often? The run's first model against each other network of the run, paired per
image (``SCIENCE.md`` section 8).

A run of several models attacks the images every model classifies correctly (:func:`ama.inputs.protocol.select`), so
each comparison is paired per image. :func:`model_tests`: at the run's smallest ``e``, for each optimiser of the
attack grid (``attack_ablation``'s 8-bit flip rows at the largest budget), the first model's fooled minus the other's
(McNemar's exact interval), the discordant images, McNemar's exact test and its p-values on both sides. The family
(this study's name) is those comparisons: the first model against each other network (a padding variant or a
``-recal`` model is another question, the padding studies'), times the optimisers.

The study ``across_models``, declared at the end (:mod:`ama.studies.study`): every run computes it from its tables
(``{}`` with one network). Its power plan: the models run's 8 images found lite0 fooled by APGD at e = 1 where lite2
was not on 2 images and the reverse on none; 40 images detect that at Holm's strictest level in a family of 4.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import TABLES
from ..criteria import pct
from ..inputs.padding import RECAL_SUFFIX, base_of
from ..stats.intervals import FAILS, HOLDS, Estimate
from ..stats.power import ALPHA, PairedEffect, mcnemar_n
from ..stats.rows import grid_attack
from ..store.tables import interval_text, p_text, read_table, readable
from .study import Finding, Study, Table, Verdicts, deciding, register

__all__ = ["networks", "model_tests", "across_models_finding", "STUDY"]


def networks(models) -> list[str]:
    """The run's models that are networks of their own, in the run's order: not a padding variant of another and not
    a ``-recal`` model (``models``: the run's model names)."""
    return [m for m in models if base_of(m) == m and not m.endswith(RECAL_SUFFIX)]


def model_tests(ablation: pd.DataFrame, models) -> pd.DataFrame:
    """Per other network of ``models`` (the run's, in order; :func:`networks`) and optimiser at the smallest ``e``:
    ``first`` and ``other``, ``n_images`` (those both attacked), ``first_fooled`` / ``other_fooled`` (rates),
    ``first_minus_other`` with McNemar's exact ``low`` / ``high``, the discordant images ``first_only`` /
    ``other_only``, McNemar's exact ``p_value``, the ``verdict`` against 0 and ``p_holds`` / ``p_fails``. Empty with
    fewer than two networks. ``ablation``: rows of ``attack_ablation``."""
    q = grid_attack(ablation)
    nets = [m for m in networks(models) if m in set(q.model)]
    if len(nets) < 2 or q.empty:
        return pd.DataFrame()
    q = q[q.e == q.e.min()]
    first, rows = nets[0], []
    for other in nets[1:]:
        for optimizer, g in q.groupby("optimizer", sort=True):
            a = g[g.model == first].set_index("image").fooled.astype(float)
            b = g[g.model == other].set_index("image").fooled.astype(float)
            common = a.index.intersection(b.index)
            if len(common) == 0:
                continue
            gap = Estimate.paired(a.loc[common], b.loc[common])
            rows.append(dict(first=first, other=other, optimizer=optimizer, e=int(g.e.iloc[0]), n_images=gap.n,
                             first_fooled=a.loc[common].mean(), other_fooled=b.loc[common].mean(),
                             first_minus_other=gap.value, low=gap.low, high=gap.high, first_only=gap.discordant[0],
                             other_only=gap.discordant[1], p_value=gap.p_value, verdict=gap.verdict(0.0),
                             **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


def _tables(folder) -> dict[str, pd.DataFrame]:
    """``attack_models_tests`` of the run in ``folder`` (a :class:`ama.runs.folder.RunFolder`), from its
    ``attack_ablation``; ``{}`` without it."""
    ablation = read_table(Path(folder.out) / "tables", TABLES.attack_ablation)
    if ablation is None or ablation.empty:
        return {}
    return {TABLES.attack_models_tests: model_tests(ablation, folder.params.models)}


def _images_needed(tests: pd.DataFrame) -> str:
    """A sentence for an undecided question: the undecided comparison of :func:`model_tests` rows ``tests`` with the
    smallest p (its optimisers, where several tie), its discordant images, and the images its observed shares would
    need for 80% power at Holm's strictest level in this family (:func:`ama.stats.power.mcnemar_n`); "" when every
    comparison is decided or none leans either way."""
    open_ = tests[~tests.verdict.isin([HOLDS, FAILS]) & (tests.first_only != tests.other_only)]
    if open_.empty:
        return ""
    r = open_.loc[open_.p_value.idxmin()]
    ties = open_[(open_.other == r.other) & (open_.first_only == r.first_only) & (open_.other_only == r.other_only)]
    n, most = int(r.n_images), 1000
    need = mcnemar_n(r.first_only / n, r.other_only / n, ALPHA / len(tests), most=most)
    return (f" Closest: {r.first} vs {r.other} with {' and '.join(ties.optimizer)} ({int(r.first_only)} images "
            f"fooled only on {r.first}, {int(r.other_only)} only on {r.other}); 80% power needs "
            f"{'more than' if need >= most else 'about'} {need} such images.")


def across_models_finding(run_dir: Path) -> Finding | None:
    """The report's finding: each comparison of :func:`model_tests` (its verdict the one that decides) as a row, and
    in one sentence how many Holm decides each way; None for a run without the table."""
    tests = read_table(Path(run_dir) / "tables", TABLES.attack_models_tests)
    if tests is None or tests.empty:
        return None
    tests, label = deciding(run_dir, TABLES.attack_models_tests, tests)
    first, n = tests["first"].iloc[0], int(tests.n_images.max())
    more, fewer = int((tests.verdict == HOLDS).sum()), int((tests.verdict == FAILS).sum())
    sentence = f"Paired on the {n} images every model classifies correctly, Holm decides "
    sentence += (f"none of {first}'s {len(tests)} comparisons: this run cannot tell which model is fooled more "
                 f"(differences from {100 * tests.low.min():+.0f} to {100 * tests.high.max():+.0f} points remain "
                 "possible)." if more + fewer == 0 else
                 f"{more + fewer} of {first}'s {len(tests)} comparisons: {first} is fooled more often in {more}, less "
                 f"often in {fewer}.")
    sentence += _images_needed(tests)
    table = readable(tests, {
        "compared": lambda r: f"{r.first} vs {r.other}",
        "attack": lambda r: f"{r.optimizer}, e = {int(r.e)}",
        "fooled": lambda r: f"{pct(r.first_fooled)} vs {pct(r.other_fooled)}",
        "difference, paired (95% CI)": lambda r: interval_text(r.first_minus_other, r.low, r.high, True, signed=True),
        "fooled only on the first / only on the second": lambda r: f"{int(r.first_only)} / {int(r.other_only)}",
        "McNemar (two-sided, unadjusted)": lambda r: p_text(r.p_value),
        f"first fooled more? (holds: more; does not hold: less) {label}": "verdict"})
    return Finding(sentence, table)


STUDY = register(Study(
    name="across_models", question="Does the attack fool the first model more or less often than each other?",
    always=True,
    tables=(Table("attack_models_tests", "other model x optimiser at the smallest e: the first model's fooled minus "
                  "the other's, paired", "run", fast=False,
                  verdicts=Verdicts("first_minus_other", "low", "high", 0.0,
                                    lambda r: f"the attack fools {r.first} more often than {r.other} "
                                              f"({r.optimizer}, e = {r.e})")),),
    run_tables=_tables, section=across_models_finding, profile="models",
    # the effect to detect: the models run's lite0 vs lite2, apgd at e = 1 (2 vs 0 of 8 images differ), in a family of
    # 2 other networks x 2 optimisers: 40 images for 80% power at Holm's strictest level (PROFILE=models: 40)
    power=PairedEffect(0.25, 0.0, family=4, source="the models run's 8 images: lite0 vs lite2, apgd at e = 1, 2 vs 0")))
