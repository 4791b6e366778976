"""The controls of claims 1 and 2 (``SCIENCE.md`` section 7): every effect beside its baseline.

* **Claim 1 against its baselines** (:func:`misalignment_baselines`, :func:`misalignment_by_upsampling`): the ERF
  mass outside the IRF beside what a flat ERF (``uniform``) and a Gaussian of the ERF's own spread centred on the
  cell (``centred_gaussian``: the width alone, no offset) give, and under each upsampling.
* **Claim 2 per unit of area** (:func:`per_area_influence`): a change of the cell per share of the image filled, for
  the IRF and for everything outside it; ``irf_to_outside`` > 1: a pixel of the IRF moves the cell more.

* **The ERF's mass on each side of the frame** (:func:`side_mass_summary`): per side over its share of the image,
  opposite sides paired per image (the ``sides`` study, :mod:`ama.studies.sides`, reads it beside its one-side attack).

Claim 3's control (is the margin special?) is a study of its own, :mod:`ama.studies.location`.

Each statistic is summarised per image first, then over images with its 95% interval (:mod:`ama.stats.intervals`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..criteria import UNMOVED
from ..geometry import FRAME_SIDES
from ..stats.intervals import Estimate, pooled

PAIRS = (("left", "right"), ("top", "bottom"))  # the opposite sides compared
BASELINES = {"erf": "erf_mass_outside_irf", "uniform": "uniform_mass_outside_irf",
             "centred_gaussian": "centred_gaussian_mass_outside_irf", "recentred": "recentred_mass_outside_irf"}
OFFSETS = {"offset_x": "offset_x_px", "offset_y": "offset_y_px"}  # the ERF centroid minus the cell's centre, signed


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
    rows of :func:`ama.kernels.receptive_field.misalignment_table`), per image then over images; ``offset`` is the ERF's
    excess over the centred Gaussian (what the ERF's offset and shape add to its width); ``offset_alone`` its excess
    over the re-centred ERF (its own shape and noise, centred: what the offset alone adds); ``offset_x`` /
    ``offset_y`` the signed centroid offsets in pixels (positive: right / down; a t-test against 0 asks for a
    direction)."""
    centre = _centre(table)
    out = {name: pooled(centre, col) for name, col in BASELINES.items() if col in centre}
    if "centred_gaussian" in out:
        out["offset"] = pooled(centre.assign(d=centre[BASELINES["erf"]] - centre[BASELINES["centred_gaussian"]]), "d")
    if "recentred" in out:
        out["offset_alone"] = pooled(centre.assign(d=centre[BASELINES["erf"]] - centre[BASELINES["recentred"]]), "d")
    out.update({name: pooled(centre, col) for name, col in OFFSETS.items() if col in centre})
    return out


def misalignment_baseline_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: :func:`misalignment_baselines` as rows ``model, measure, value, low, high, n_images``."""
    return pd.concat([estimate_rows(misalignment_baselines(g), model=m) for m, g in table.groupby("model", sort=False)],
                     ignore_index=True)


def misalignment_by_upsampling(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model and upsampling of ``misalignment_upsampling_cells``: the centre cells' ERF mass outside the IRF with
    its interval (``low``, ``high``) and baselines, and claim 1's statistic under that upsampling: ``null_gap``, the ERF's
    mass minus the aligned null's (a Gaussian of its spread centred on the IRF), with its interval (``gap_low``,
    ``gap_high``), the verdict against 0 and its one-sided p-values (``p_holds``, ``p_fails``:
    :meth:`ama.stats.intervals.Estimate.p_columns`). ``cells``: the table's rows."""
    rows = []
    for (model, mode), g in cells.groupby(["model", "upsampling"], sort=False):
        est = misalignment_baselines(g)
        gap = est.get("offset")
        row = dict(model=model, upsampling=mode, erf_mass_outside_irf=est["erf"].value, low=est["erf"].low,
                   high=est["erf"].high, n_images=est["erf"].n)
        if gap is not None:
            row.update(null_gap=gap.value, gap_low=gap.low, gap_high=gap.high, verdict=gap.verdict(0.0),
                       **gap.p_columns(0.0))
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


# --- the ERF's mass on each side of the frame (notebook 02) ----------------------------------------------------
def side_columns(table: pd.DataFrame) -> list[str]:
    """The ``side_mass_ratio_<side>`` columns of a misalignment table, in :data:`ama.geometry.FRAME_SIDES` order."""
    return [f"side_mass_ratio_{s}" for s in FRAME_SIDES if f"side_mass_ratio_{s}" in table]


def side_mass_summary(misalignment: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``cell_kind`` (``all`` first) of ``misalignment`` rows, one row per ``measure``: each side's mean
    ERF mass ratio (per image the mean over cells, then over images; t 95% interval) and, for each pair of opposite
    sides, ``"<a> - <b>"`` paired per image, with its verdict against 0 (holds: side ``a`` carries more) and, for all
    cells, its p-values (``p_holds``, ``p_fails``: the family ``sides: ERF mass``). Empty without the per-side columns (a
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
