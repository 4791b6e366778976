"""The frame's four sides (``SCIENCE.md`` section 8): how much of a cell's ERF lies on each side's ``e`` pixels, and the
reference attack confined to one side.

* **Per-side ERF mass** (:func:`side_mass_summary`): per image the mean over cells of ``side_mass_ratio_<side>``
  (:func:`ama.receptive_field.misalignment`: the ERF mass on that side / that side's share of the image), per cell
  column and row too; left minus right and top minus bottom paired per image (BCa interval, 0 = balanced).
* **One-side attack** (:func:`side_attack`, :func:`side_attack_summary`): the reference attack at the smallest ``e``
  with its mask one side of the frame (corners on the left / right sides, :func:`ama.geometry.frame_sides`); fooled
  per side with the exact interval, left against right and top against bottom paired per image (McNemar exact).

TF "same" padding pads a stride-2 convolution's right and bottom edges only (:mod:`ama.padding`), a plausible cause of
an imbalance; the padding variants of a run (``MODELS=lite0,lite0-zero-pad,...``) test it with the weights fixed.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from .attack_experiments import masked_attack_rows
from .geometry import FRAME_SIDES, frame_sides
from .intervals import Estimate, pooled

PAIRS = (("left", "right"), ("top", "bottom"))  # the opposite sides compared
SIDE_COLUMNS = ["image", "model", "e", "side", "mask_pixels", "clean_class", "adv_class", "fooled", "cam_cosine"]


def side_columns(table: pd.DataFrame) -> list[str]:
    """The ``side_mass_ratio_<side>`` columns of a misalignment table, in :data:`ama.geometry.FRAME_SIDES` order."""
    return [f"side_mass_ratio_{s}" for s in FRAME_SIDES if f"side_mass_ratio_{s}" in table]


def side_mass_summary(misalignment: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``cell_kind`` (``all`` first) of ``misalignment`` rows, one row per ``measure``: each side's mean
    ERF mass ratio (per image the mean over cells, then over images; BCa 95% interval) and, for each pair of opposite
    sides, ``"<a> - <b>"`` paired per image, with its verdict against 0 (holds: side ``a`` carries more) and, for all
    cells, its p-values (``p_holds``, ``p_fails``: the beyond-the-paper family). Empty without the per-side columns (a
    table written before they existed)."""
    if not side_columns(misalignment):
        return pd.DataFrame()
    rows = []
    for model, g_model in misalignment.groupby("model", sort=False):
        for kind, g in [("all", g_model)] + list(g_model.groupby("cell_kind", sort=False)):
            keys = dict(model=model, cell_kind=kind, n_images=g.image.nunique())
            for side in FRAME_SIDES:
                est = pooled(g, f"side_mass_ratio_{side}")
                rows.append(dict(keys, measure=side, value=est.value, low=est.low, high=est.high))
            for a, b in PAIRS:
                d = pooled(g.assign(d=g[f"side_mass_ratio_{a}"] - g[f"side_mass_ratio_{b}"]), "d")
                rows.append(dict(keys, measure=f"{a} - {b}", value=d.value, low=d.low, high=d.high,
                                 verdict=d.verdict(0.0), **(d.p_columns(0.0) if kind == "all" else {})))
    return pd.DataFrame(rows)


def side_attack(model, x: torch.Tensor, names: Sequence[str], params, labels=None,
                batch: int | None = None) -> pd.DataFrame:
    """The reference attack (the run's ``n_iter``, ``lamb``, ``seed``; 8-bit) at the smallest ``e`` confined to each
    side of the frame: one row per image x side (:data:`SIDE_COLUMNS`; ``fooled`` against the true label where
    known). ``params``: :class:`ama.params.RunParams` (or its fast variant); ``batch``: images attacked together."""
    e = min(params.e)
    return pd.concat([rows.assign(e=e, side=side, mask_pixels=int(mask.sum()))[SIDE_COLUMNS] for side, mask, rows in
                      masked_attack_rows(model, x, names, frame_sides(tuple(x.shape[-2:]), e), params, labels, batch)],
                     ignore_index=True)

def side_attack_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``e`` of :func:`side_attack` rows: each side's fooling rate (exact interval) and mean CAM cosine;
    per pair of opposite sides (rows ``side`` = ``left - right``, ``top - bottom``) the first's fooled minus the
    second's paired per image (Newcombe's interval), the discordant images and McNemar's exact ``p_value`` with the
    verdict against 0."""
    rows = []
    for (model, e), g in table.groupby(["model", "e"], sort=False):
        by_side = {side: h.set_index("image") for side, h in g.groupby("side", sort=False)}
        for side, h in by_side.items():
            rate = Estimate.rate(int(h.fooled.sum()), len(h))
            rows.append(dict(model=model, e=e, side=side, mask_pixels=int(h.mask_pixels.iloc[0]), n_images=len(h),
                             fooling_rate=rate.value, low=rate.low, high=rate.high, cam_cosine=h.cam_cosine.mean()))
        for a, b in PAIRS:
            if a in by_side and b in by_side:
                first = by_side[a].fooled.astype(float)
                gap = Estimate.paired(first, by_side[b].fooled.astype(float).reindex(first.index))
                rows.append(dict(model=model, e=e, side=f"{a} - {b}", n_images=gap.n, fooling_rate=gap.value,
                                 low=gap.low, high=gap.high, first_only=gap.discordant[0],
                                 second_only=gap.discordant[1], p_value=gap.p_value, verdict=gap.verdict(0.0),
                                 **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


def side_lines(mass: pd.DataFrame, attack: pd.DataFrame | None) -> list[str]:
    """Sentences of the per-side analysis, per model: the four sides' ERF mass ratios (all cells) with the paired
    left - right and top - bottom differences, and the one-side attack's rates with the paired tests. ``mass``:
    :func:`side_mass_summary`; ``attack``: :func:`side_attack_summary` (or None)."""
    lines = []
    for model, g in (mass[mass.cell_kind == "all"].groupby("model", sort=False) if len(mass) else []):
        sides = ", ".join(f"{r.measure} {r.value:.2f} ({r.low:.2f} to {r.high:.2f})"
                          for r in g.itertuples() if r.measure in FRAME_SIDES)
        pairs = "; ".join(f"{r.measure} {r.value:+.2f} ({r.low:+.2f} to {r.high:+.2f}, {r.verdict})"
                          for r in g.itertuples() if r.measure not in FRAME_SIDES)
        lines.append(f"{model}: ERF mass on each side of the frame over its share of the image, mean over cells, "
                     f"{int(g.n_images.iloc[0])} images: {sides}; paired per image {pairs}.")
    for (model, e), g in (attack.groupby(["model", "e"], sort=False) if attack is not None and len(attack) else []):
        single, paired = g[g.side.isin(FRAME_SIDES)], g[~g.side.isin(FRAME_SIDES)]
        lines.append(f"{model}: the reference attack on one side's {int(single.mask_pixels.iloc[0])} px at e = {e} "
                     f"({int(single.n_images.iloc[0])} images) fools "
                     + ", ".join(f"{r.side} {r.fooling_rate:.0%} ({r.low:.0%} to {r.high:.0%})"
                                 for r in single.itertuples())
                     + "; paired per image " + "; ".join(
                         f"{r.side} {r.fooling_rate:+.0%} ({r.low:+.0%} to {r.high:+.0%}, McNemar p = {r.p_value:.2g}, "
                         f"{r.verdict})" for r in paired.itertuples()) + ".")
    return lines
