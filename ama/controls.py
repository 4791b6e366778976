"""Controls that could refute the paper (``SCIENCE.md`` section 7): every effect beside its baseline.

* **Claim 1 against its baselines** (:func:`misalignment_baselines`, :func:`misalignment_by_upsampling`): the ERF
  mass outside the IRF beside what a flat ERF (``uniform``) and a Gaussian of the ERF's own spread centred on the
  cell (``centred_gaussian``: the width alone, no offset) give, and under each upsampling.
* **Claim 2 per unit of area** (:func:`per_area_influence`): a change of the cell per share of the image filled, for
  the IRF and for everything outside it; ``irf_to_outside`` > 1: a pixel of the IRF moves the cell more.
* **Is the margin special?** (:func:`location_control`): the reference attack on masks of exactly the frame's pixel
  count elsewhere (:func:`ama.geometry.location_masks`); the frame's fooling rate minus each location's, per image.
* **Transfer beyond CAM's relatives** (:func:`transfer_verdicts`): per explanation, the random frame's clean-vs-
  attacked cosine minus the attack's, per image.
* **The frame's share of the map's mass** (:func:`frame_mass_ratio`): the map's mass on the frame's own pixels
  divided by the frame's share of the area (1: as much as its area; the ERF-aware question asked soundly).

Each statistic is summarised per image first, then over images with its 95% interval (:mod:`ama.intervals`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .attack_experiments import masked_attack_rows
from .criteria import UNMOVED
from .geometry import location_masks
from .intervals import FAILS, HOLDS, INCONCLUSIVE, Estimate, pooled
from .transfer import RELATIVES

BASELINES = {"erf": "erf_mass_outside_irf", "uniform": "uniform_mass_outside_irf",
             "centred_gaussian": "centred_gaussian_mass_outside_irf"}


def estimate_rows(estimates: dict, **keys) -> pd.DataFrame:
    """``{name: Estimate}`` as rows ``<keys>, measure, value, low, high, n_images``. ``estimates``: ``{measure:
    Estimate}``; ``keys``: columns to add to every row."""
    return pd.DataFrame([dict(keys, measure=name, value=e.value, low=e.low, high=e.high, n_images=e.n)
                         for name, e in estimates.items()])


def _centre(table: pd.DataFrame) -> pd.DataFrame:
    centre = table[table.cell_kind == "centre"]
    return centre if len(centre) else table


# --- claim 1 -------------------------------------------------------------------------------------------
def misalignment_baselines(table: pd.DataFrame) -> dict[str, Estimate]:
    """The centre cells' ERF mass outside the IRF and its baselines (:data:`BASELINES`, those present in ``table``,
    rows of :func:`ama.receptive_field.misalignment_table`), per image then over images; ``offset`` is the ERF's
    excess over the centred Gaussian (what the ERF's offset and shape add to its width)."""
    centre = _centre(table)
    out = {name: pooled(centre, col) for name, col in BASELINES.items() if col in centre}
    if "centred_gaussian" in out:
        out["offset"] = pooled(centre.assign(d=centre[BASELINES["erf"]] - centre[BASELINES["centred_gaussian"]]), "d")
    return out


def misalignment_baseline_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: :func:`misalignment_baselines` as rows ``model, measure, value, low, high, n_images``."""
    return pd.concat([estimate_rows(misalignment_baselines(g), model=m) for m, g in table.groupby("model", sort=False)],
                     ignore_index=True)


def misalignment_by_upsampling(cells: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per model and upsampling of ``misalignment_upsampling_cells``: the centre cells' ERF mass outside the IRF with
    its interval, its baselines and the verdict against ``threshold`` (above: misaligned) with its one-sided
    p-values (``p_holds``, ``p_fails``: :meth:`ama.intervals.Estimate.p_columns`)."""
    rows = []
    for (model, mode), g in cells.groupby(["model", "upsampling"], sort=False):
        est = misalignment_baselines(g)
        row = dict(model=model, upsampling=mode, erf_mass_outside_irf=est["erf"].value, low=est["erf"].low,
                   high=est["erf"].high, n_images=est["erf"].n, verdict=est["erf"].verdict(threshold),
                   **est["erf"].p_columns(threshold))
        row.update({f"{k}_mass_outside_irf": e.value for k, e in est.items() if k in ("uniform", "centred_gaussian")})
        rows.append(row)
    return pd.DataFrame(rows)


# --- claim 2 -------------------------------------------------------------------------------------------
KEYS = ["model", "image", "fill", "cell", "cell_kind"]


def per_area_influence(keep: pd.DataFrame, occlude: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, image, fill, cell) present in both occlusion tables: ``outside_change`` (|rel_change| when
    everything outside the IRF is filled; share of the map's range), ``outside_share`` (the share of the image
    filled), ``irf_change``, ``irf_share``, the changes per unit of area ``outside_per_area`` and ``irf_per_area``,
    and ``irf_to_outside`` = their ratio (> 1: a pixel of the IRF moves the cell more than a pixel outside). ``keep``,
    ``occlude``: rows of the keep-IRF and occlude-IRF tables."""
    k = keep[KEYS + ["rel_change", "occluded_share"]].rename(
        columns={"rel_change": "outside_change", "occluded_share": "outside_share"})
    o = occlude[KEYS + ["rel_change", "occluded_share"]].rename(
        columns={"rel_change": "irf_change", "occluded_share": "irf_share"})
    rows = k.merge(o, on=KEYS)
    rows["outside_change"], rows["irf_change"] = rows.outside_change.abs(), rows.irf_change.abs()
    rows["outside_per_area"] = rows.outside_change / rows.outside_share
    rows["irf_per_area"] = rows.irf_change / rows.irf_share
    moved = rows.outside_change > UNMOVED  # a cell that outside filling leaves unmoved has no finite ratio
    rows["irf_to_outside"] = rows.irf_per_area / rows.outside_per_area.where(moved)
    return rows


def per_area_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and cell kind of :func:`per_area_influence` rows: the median over images (of each image's median over
    cells and fills) of the changes, the filled shares and ``irf_to_outside``, the last with its bootstrap interval."""
    out = []
    for (model, kind), g in rows.groupby(["model", "cell_kind"], sort=False):
        row = dict(model=model, cell_kind=kind, n_images=g.image.nunique())
        for col in ("outside_change", "outside_share", "irf_change", "irf_share"):
            row[col] = pooled(g, col, np.median, "median").value
        ratio = pooled(g, "irf_to_outside", np.median, "median")
        row.update(irf_to_outside=ratio.value, low=ratio.low, high=ratio.high)
        out.append(row)
    return pd.DataFrame(out)


# --- claim 3: is the margin special? -----------------------------------------------------------------------
LOCATION_COLUMNS = ["image", "model", "e", "location", "mask_pixels", "changed_pixels", "clean_class", "adv_class",
                    "fooled", "cam_cosine", "adv_conf"]


def location_control(model, x: torch.Tensor, names: Sequence[str], params, frame_result=None, labels=None,
                     batch: int | None = None) -> pd.DataFrame:
    """The reference attack (its optimiser, ``n_iter``, ``lamb``, ``seed``; 8-bit) at the run's smallest ``e`` on every
    mask of :func:`ama.geometry.location_masks` (the same pixel count as the frame): one row per image x location
    (:data:`LOCATION_COLUMNS`; ``fooled`` against the true label where known). ``frame_result``: the run's own frame
    attack at that ``e`` (reused as the ``frame`` rows), else attacked here. ``params``: a fast variant of
    :class:`ama.params.RunParams`; ``batch``: images attacked together (None: :func:`ama.attack.attack_batch`)."""
    e = min(params.e)
    masks = location_masks(tuple(x.shape[-2:]), e, params.seed)
    done = {} if frame_result is None else {"frame": frame_result}
    frames = [rows.assign(e=e, location=location, mask_pixels=int(mask.sum()))[LOCATION_COLUMNS]
              for location, mask, rows in masked_attack_rows(model, x, names, masks, params, labels, batch, done)]
    return pd.concat(frames, ignore_index=True)


def location_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, ``e`` and location of :func:`location_control` rows: the fooling rate with its exact interval, the
    mean CAM cosine with its bootstrap interval and, paired per image with the frame, ``frame_minus_fooled`` (the
    frame's fooled minus this location's, mean over images) with Newcombe's interval for paired rates, the images
    where only the frame fools (``frame_only``) and only this location (``location_only``), the exact McNemar
    ``p_value`` and the verdict against 0 it gives (holds: the frame fools more)."""
    rows = []
    for (model, e), g in table.groupby(["model", "e"], sort=False):
        frame = g[g.location == "frame"].set_index("image")
        for location, h in g.groupby("location", sort=False):
            fooled = Estimate.rate(int(h.fooled.sum()), len(h))
            cosine = Estimate.of(h.cam_cosine)
            row = dict(model=model, e=e, location=location, mask_pixels=int(h.mask_pixels.iloc[0]),
                       n_images=len(h), fooling_rate=fooled.value, fooling_low=fooled.low, fooling_high=fooled.high,
                       cam_cosine=cosine.value, cosine_low=cosine.low, cosine_high=cosine.high)
            if location != "frame" and len(frame):
                here = h.set_index("image").fooled.astype(float).reindex(frame.index)
                gap = Estimate.paired(frame.fooled.astype(float), here)
                row.update(frame_minus_fooled=gap.value, gap_low=gap.low, gap_high=gap.high,
                           frame_only=gap.discordant[0], location_only=gap.discordant[1], p_value=gap.p_value,
                           verdict=gap.verdict(0.0), **gap.p_columns(0.0))
            rows.append(row)
    return pd.DataFrame(rows)


def margin_special(summary: pd.DataFrame) -> str:
    """Is the margin special? :data:`HOLDS` when the frame fools more than every other location (each paired
    interval above 0), :data:`FAILS` when some location fools more (an interval below 0), else inconclusive."""
    verdicts = summary.dropna(subset=["verdict"]).verdict.tolist() if "verdict" in summary else []
    if not verdicts:
        return INCONCLUSIVE
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else INCONCLUSIVE


# --- transfer ------------------------------------------------------------------------------------------
def transfer_verdicts(transfer: pd.DataFrame, keys=("model", "optimizer", "method", "e")) -> pd.DataFrame:
    """Per ``keys`` of ``transfer.csv``: the random frame's cosine minus the attack's (> 0: the attack moves the
    explanation more than an unoptimised frame), per image (over the models when ``keys`` omits ``model``), its mean
    over images with the bootstrap interval and verdict against 0 (with ``p_holds``, ``p_fails``), and whether the method is one of CAM's relatives
    (:data:`ama.transfer.RELATIVES`). ``transfer``: rows of ``transfer``."""
    rows = []
    table = transfer.assign(gap=transfer.random_cam_cosine - transfer.cam_cosine)
    for key, g in table.groupby(list(keys), sort=True):
        gap = pooled(g, "gap")
        row = dict(zip(keys, key))
        rows.append(dict(row, relative_of_cam=row["method"] in RELATIVES, cam_cosine=g.cam_cosine.mean(),
                         random_cam_cosine=g.random_cam_cosine.mean(), gap=gap.value, low=gap.low, high=gap.high,
                         n_images=gap.n, verdict=gap.verdict(0.0), **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


# --- the frame's share of the map's mass ---------------------------------------------------------------------
def frame_mass_ratio(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per (model, image, upsampling, e) of ``upsampling_comparison``: the map's mass on the frame's own pixels
    divided by the frame's share of the image (``frame_share``), clean (``clean_ratio``) and attacked (``adv_ratio``),
    and ``change`` = attacked minus clean. ``comparison``: rows of ``upsampling_comparison``."""
    out = comparison[["model", "image", "upsampling", "e"]].copy()
    out["clean_ratio"] = comparison.clean_frame_mass / comparison.frame_share
    out["adv_ratio"] = comparison.adv_frame_mass / comparison.frame_share
    out["change"] = out.adv_ratio - out.clean_ratio
    return out


def frame_mass_summary(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per model, upsampling and ``e`` of :func:`frame_mass_ratio` rows: the mean clean and attacked ratios and the
    mean change, each with its bootstrap interval over images; ``verdict``: does the attack raise the map's mass
    on the frame (change above 0)? (with ``p_holds``, ``p_fails``) ``ratios``: rows of :func:`frame_mass_ratio`."""
    rows = []
    for (model, mode, e), g in ratios.groupby(["model", "upsampling", "e"], sort=False):
        row = dict(model=model, upsampling=mode, e=e, n_images=g.image.nunique())
        for col in ("clean_ratio", "adv_ratio", "change"):
            est = pooled(g, col)
            row.update({col: est.value, f"{col}_low": est.low, f"{col}_high": est.high})
        change = pooled(g, "change")
        row.update(verdict=change.verdict(0.0), **change.p_columns(0.0))
        rows.append(row)
    return pd.DataFrame(rows)
