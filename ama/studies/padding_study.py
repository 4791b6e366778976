"""Does the marginal attack depend on zero padding? A run's padding variants (:mod:`ama.inputs.padding`: the same
weights, only the convolutions' padding changed) compared on the same images (``SCIENCE.md`` section 8).

A run of ``MODELS=lite0,lite0-zero-pad,lite0-reflect-pad,lite0-replicate-pad`` attacks the images every variant
classifies correctly (:func:`ama.inputs.protocol.select`), so each comparison is paired per image:

* :func:`variant_table`: per variant its padding, top-1 / top-5 on the set, the frame's ERF mass (claim 1's margin
  mass ratio), the fooling rate of each optimiser of the attack's ablation at each ``e``, and whether the margin is
  special (the location control, :func:`ama.studies.location.margin_special`);
* :func:`padding_tests`: per base model, ``e`` and optimiser, each zero-padded variant (TF "same" as trained,
  symmetric zeros) against each non-zero one (reflect, replicate): fooled minus fooled paired per image (McNemar's exact
  interval, McNemar's exact test), p-values on both sides (the study's family, `padding`);
* :func:`zero_padding_verdict`: *holds* when some comparison's Holm-adjusted (within these comparisons) one-sided p
  that zero padding fools more is below 0.025; *does not hold* when every paired difference's upper 95% bound is
  at most 0 (reflect and replicate fool at least as often); *inconclusive* otherwise.

The study ``padding``, declared at the end (:mod:`ama.studies.study`): every run computes it from its tables (``{}``
without padding variants).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import TABLES
from ..inputs.padding import PADDINGS, ZERO_PADDINGS, base_of, padding_of
from ..stats.intervals import ALPHA, FAILS, HOLDS, INCONCLUSIVE, Estimate, holm, pooled
from ..stats.rows import grid_attack
from ..store.tables import read_table, readable
from .location import margin_special
from .study import Finding, Study, Table, Verdicts, deciding, register


def variants(models) -> dict[str, list[str]]:
    """``{base: [models of the run with that base, the base first]}`` for bases with at least two paddings in the
    run (``models``: the run's model names)."""
    by: dict[str, list[str]] = {}
    for m in models:
        by.setdefault(base_of(m), []).append(m)
    return {b: sorted(ms, key=lambda m: list(PADDINGS).index(padding_of(m)))
            for b, ms in by.items() if len({padding_of(m) for m in ms}) >= 2}


def variant_table(run_dir: Path) -> pd.DataFrame | None:
    """One row per model of a base with padding variants in the run: ``base``, ``padding`` (in words), ``top1``,
    ``top5`` (the set's, exact intervals), ``frame_erf_mass`` (the mean margin mass ratio at the smallest ``e``, per
    image first, t interval), ``fooling_<optimizer>_e<e>`` (the ablation's) and ``margin_special`` (the location
    control's verdict); None when the run has no two paddings of one model."""
    tables = Path(run_dir) / "tables"
    acc, mis, abl, loc = (read_table(tables, t) for t in (TABLES.clean_accuracy, TABLES.misalignment,
                                                            TABLES.attack_ablation, TABLES.attack_location_summary))
    models = [] if acc is None else list(acc.model)
    groups = variants(models)
    if not groups:
        return None
    rows = []
    for base, members in groups.items():
        for m in members:
            a = acc.set_index("model").loc[m]
            row = dict(model=m, base=base, padding=PADDINGS[padding_of(m)], top1=a.top1,
                       top1_ci=f"{a.top1_low:.1%} to {a.top1_high:.1%}", top5=a.top5, n_checked=int(a.n_images))
            if mis is not None and m in set(mis.model):
                frame = min((c for c in mis.columns if c.startswith("margin_mass_ratio_e")),
                            key=lambda c: int(c.rsplit("e", 1)[1]))
                mass = pooled(mis[mis.model == m], frame)
                row.update(frame_erf_mass=mass.value, frame_erf_mass_ci=f"{mass.low:.2f} to {mass.high:.2f}")
            if abl is not None and m in set(abl.model):
                for (opt, e), g in grid_attack(abl[abl.model == m]).groupby(["optimizer", "e"], sort=True):
                    row[f"fooling_{opt}_e{e}"] = g.fooled.mean()
            if loc is not None and m in set(loc.model):
                row["margin_special"] = margin_special(loc[loc.model == m])
            rows.append(row)
    return pd.DataFrame(rows)


def padding_tests(ablation: pd.DataFrame) -> pd.DataFrame:
    """Per base model x ``e`` x optimiser of the ablation's 8-bit flip rows, each pair (zero-padded variant, non-zero
    variant): ``zero_minus_other`` = the zero-padded variant's fooled minus the other's, paired per image (McNemar's exact
    ``low`` / ``high``), the discordant images (``zero_only``, ``other_only``), McNemar's exact ``p_value``, the
    ``verdict`` against 0 and ``p_holds`` / ``p_fails``; also the symmetric-zero variant against the as-trained one
    (``other`` = ``tf_same``: does the uneven TF padding matter?). Empty without two paddings of one model.
    ``ablation``: rows of ``attack_ablation``."""
    rows = []
    q = grid_attack(ablation)
    for base, members in variants(list(q.model.unique())).items():
        by_pad = {padding_of(m): q[q.model == m] for m in members}
        pairs = [(z, o) for z in ZERO_PADDINGS for o in by_pad if o not in ZERO_PADDINGS and z in by_pad]
        pairs += [("zero", "tf_same")] if {"zero", "tf_same"} <= set(by_pad) else []
        for zero, other in pairs:
            a, b = by_pad[zero], by_pad[other]
            for (opt, e), g in a.groupby(["optimizer", "e"], sort=True):
                first = g.set_index("image").fooled.astype(float)
                h = b[(b.optimizer == opt) & (b.e == e)].set_index("image").fooled.astype(float)
                common = first.index.intersection(h.index)
                if len(common) == 0:
                    continue
                gap = Estimate.paired(first.loc[common], h.loc[common])
                rows.append(dict(model=base, zero=zero, other=other, optimizer=opt, e=e, n_images=gap.n,
                                 zero_fooled=first.loc[common].mean(), other_fooled=h.loc[common].mean(),
                                 zero_minus_other=gap.value, low=gap.low, high=gap.high, zero_only=gap.discordant[0],
                                 other_only=gap.discordant[1], p_value=gap.p_value, verdict=gap.verdict(0.0),
                                 **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


def zero_padding_verdict(tests: pd.DataFrame) -> str:
    """"The marginal attack depends on zero padding" from :func:`padding_tests` (its zero vs non-zero rows): see the
    module docstring. ``tests``: rows of :func:`padding_tests`."""
    t = tests[~tests.other.isin(ZERO_PADDINGS)] if len(tests) else tests
    if t.empty:
        return INCONCLUSIVE
    if (holm(t.p_holds.to_numpy()) < ALPHA).any():
        return HOLDS
    return FAILS if (t.high <= 0).all() else INCONCLUSIVE


def padding_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """``padding_variants`` and ``padding_tests`` of a run with padding variants, from its tables; ``{}`` for a run
    without."""
    tables = Path(run_dir) / "tables"
    table, ablation = variant_table(run_dir), read_table(tables, TABLES.attack_ablation)
    if table is None or ablation is None:
        return {}
    return {TABLES.padding_variants: table, TABLES.padding_tests: padding_tests(ablation)}


def padding_finding(run_dir: Path) -> Finding | None:
    """The report's finding: each padding variant's accuracy, frame ERF mass and fooling rates (a row each), and how
    many of the paired zero-vs-other comparisons (:func:`padding_tests`, their verdicts those that decide) find the
    zero-padded variant fooled more; None for a run without padding variants."""
    tables = Path(run_dir) / "tables"
    table, tests = variant_table(run_dir), read_table(tables, TABLES.padding_tests)
    if table is None:
        return None
    sentence = ("Does the attack depend on zero padding? The same weights under other paddings lose accuracy (top-1 "
                f"{table.top1.min():.0%} to {table.top1.max():.0%}), so the comparison mixes padding with damage.")
    if tests is not None and len(tests):
        tests, _ = deciding(run_dir, TABLES.padding_tests, tests)
        sentence += (f" Paired on {int(tests.n_images.max())} images every variant classifies correctly, "
                     f"{int((tests.verdict == HOLDS).sum())} of {len(tests)} comparisons find the zero-padded "
                     "variant fooled more (Holm).")
    columns = {"model": "model", "padding": "padding", "top-1 (95% CI)": lambda r: f"{r.top1:.1%} ({r.top1_ci})",
               "frame ERF mass / area": lambda r: (f"{r.frame_erf_mass:.2f} ({r.frame_erf_mass_ci})"
                                                   if not pd.isna(getattr(r, "frame_erf_mass", np.nan)) else "–")}
    columns.update({f"fooled: {c.removeprefix('fooling_').replace('_e', ', e = ')}": (lambda c: lambda r: (
        "–" if pd.isna(getattr(r, c)) else f"{getattr(r, c):.0%}"))(c) for c in table.columns if c.startswith("fooling_")})
    if "margin_special" in table:
        columns["is the margin special?"] = "margin_special"
    return Finding(sentence, readable(table, columns))


STUDY = register(Study(
    name="padding", question="Why the margin? The padding", always=True,
    tables=(Table("padding_variants", "padding variant: accuracy, frame ERF mass, fooling rates, the location control",
                  "run", fast=False),
            Table("padding_tests", "zero vs non-zero padding x e x optimiser: fooled minus fooled, paired", "run",
                  fast=False, verdicts=Verdicts("zero_minus_other", "low", "high", 0.0,
                                                lambda r: f"{r.zero} padding is fooled more than {r.other} "
                                                          f"({r.optimizer}, e = {r.e})"))),
    run_tables=lambda folder: padding_tables(folder.out),
    section=padding_finding))
