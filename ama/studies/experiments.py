"""The notebooks' experiments: a model, images and the run's parameters in, tidy tables out.

Each :class:`Experiment` returns ``{table name: DataFrame}`` with one or more rows **per image** (keyed by ``model``
and ``image``), so that the images can be split across processes and the parts joined again (:mod:`ama.runs.shards`),
and its ``summaries`` compute the tables that aggregate over images. :data:`EXPERIMENTS` names them with the
notebook that shows each; :mod:`ama.runs.folder` computes (or merges) them for a notebook, which only plots and saves.

* ``occlusion`` (notebook 01): keep-IRF, occlude-IRF, margin and sliding-patch occlusion;
* ``receptive_fields`` (notebook 02): ERF vs IRF misalignment, the upsamplings, the receptive-field sizes;
* ``attack`` (notebook 03): the attack grid, the random frame, the optimiser ablation (:mod:`ama.studies.attack_experiments`);
* ``beyond`` (notebook 05): the run's studies, each declared in its own module (:mod:`ama.studies.study`, computed by
  :mod:`ama.studies.beyond`, imported on first use).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from .. import geometry
from ..artifacts import TABLES
from ..kernels import occlusion as occ
from ..kernels import receptive_field as rf
from ..kernels.cam_model import CAMModel
from ..params import FAST_N_FILLS, FAST_SLIDING_STRIDE, RunParams
from ..store.tables import image_major
from . import attack_experiments, controls


@dataclass(frozen=True)
class Experiment:
    """One notebook's experiment: ``run(model, x, names, params, out_dir, progress, labels) -> (tables, extras)``
    (per-image tables; ``labels`` ``(B,)``, -1 where unknown; ``extras``: what the notebook's figures reuse, e.g. ERF
    maps or attack results) and ``summaries(tables) -> tables`` over images. Either may be given as
    ``"module:function"`` of ``ama``, imported on first use: notebook 05's studies (:mod:`ama.studies.beyond`), so that
    the other notebooks do not import them and an edit of a study reruns notebook 05 and the report alone."""

    name: str
    notebook: str
    run_at: Callable | str
    summaries_at: Callable[[dict], dict] | str

    @staticmethod
    def _resolve(at):
        if not isinstance(at, str):
            return at
        module, _, function = at.partition(":")
        return getattr(importlib.import_module(f"{__package__.partition('.')[0]}.{module}"), function)

    @property
    def run(self) -> Callable:
        """The per-image function (imported on first use when given by name)."""
        return self._resolve(self.run_at)

    @property
    def summaries(self) -> Callable[[dict], dict]:
        """The summaries over images (imported on first use when given by name)."""
        return self._resolve(self.summaries_at)


# --- occlusion (notebook 01) -------------------------------------------------------------------------
def occlusion_cells(grid, fast: bool = False) -> list[int]:
    """The cells the IRF experiments use: the corners, edge midpoints and centre (their 3 x 3 lattice); FAST: the
    centre, the middle of the top edge and the top-left corner (:func:`ama.geometry.representative_cells`). ``grid``:
    the CAM's ``(h, w)``; ``fast``: the run's FAST flag."""
    rep = set(geometry.representative_cells(grid).values())
    return sorted(rep) if fast else sorted(set(geometry.lattice_cells(grid)) | rep)


def occlusion(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
              progress: bool = False, labels=None) -> tuple[dict[str, pd.DataFrame], None]:
    """Tables ``occlusion_keep_irf``, ``occlusion_occlude_irf`` (image x fill x cell), ``occlusion_margin``
    (image x e x fill), ``occlusion_margin_cells`` (image x e x fill x cell), ``occlusion_sliding_patch``
    (image x patch position) for images ``x`` ``(B, 3, H, W)`` in ``[0, 1]``."""
    fills = list(occ.FILLS)[:FAST_N_FILLS if params.fast else None]
    cells = occlusion_cells(model.feature_size(tuple(x.shape[-2:])), params.fast)
    keep = occ.keep_irf(model, x, names, fills=fills, cells=cells, seed=params.seed)
    occlude = occ.occlude_irf(model, x, names, fills=fills, cells=cells, seed=params.seed)
    margin, margin_cells = occ.margin_experiment(model, x, names, e=params.e, fills=fills, seed=params.seed)
    stride = FAST_SLIDING_STRIDE if params.fast else occ.SLIDING_PATCH
    slides = occ.sliding_patch(model, x, names, stride=stride, fill=fills[0], seed=params.seed)
    return image_major({TABLES.occlusion_keep_irf: keep, TABLES.occlusion_occlude_irf: occlude,
                        TABLES.occlusion_margin: margin, TABLES.occlusion_margin_cells: margin_cells,
                        TABLES.occlusion_sliding_patch: slides}, names), None


def occlusion_summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``occlusion_margin_cell_means`` (per model, e, fill and cell: the means over images of ``abs_delta`` and of
    ``abs_rel_change``, and
    whether the cell's IRF touches the margin) and ``occlusion_margin_summary`` (per model, e and fill: means of the
    CAM's cosine and Spearman and of the largest interior change) and ``occlusion_per_area`` (per model and cell
    kind: the IRF's and the outside's change per unit of area, :func:`ama.studies.controls.per_area_summary`)."""
    out = {}
    if TABLES.occlusion_margin_cells in tables:
        cells = tables[TABLES.occlusion_margin_cells]
        out[TABLES.occlusion_margin_cell_means] = (cells.groupby(["model", "e", "fill", "cell", "i", "j"], sort=False)
                                              .agg(abs_delta=("abs_delta", "mean"),
                                                   abs_rel_change=("abs_rel_change", "mean"),
                                                   irf_touches_margin=("irf_touches_margin", "first"))
                                              .reset_index())
    if TABLES.occlusion_margin in tables:
        out[TABLES.occlusion_margin_summary] = (tables[TABLES.occlusion_margin].groupby(["model", "e", "fill"])
                                           [["cam_cosine", "cam_spearman", "interior_max_abs_rel_change"]]
                                           .mean().reset_index())
    if {TABLES.occlusion_keep_irf, TABLES.occlusion_occlude_irf} <= set(tables):
        rows = controls.per_area_influence(tables[TABLES.occlusion_keep_irf], tables[TABLES.occlusion_occlude_irf])
        out[TABLES.occlusion_per_area] = controls.per_area_summary(rows)
    return out


# --- receptive fields (notebook 02) --------------------------------------------------------------------
MISALIGNMENT_UPSAMPLINGS = (("bilinear", True), ("bilinear", False), ("bicubic", True), ("nearest", None))
ERF_EXTENT_SHARE = 0.9


def receptive_fields(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
                     progress: bool = False, labels=None) -> tuple[dict[str, pd.DataFrame], torch.Tensor]:
    """Tables ``misalignment`` (image x cell, one ``margin_mass_ratio_e<e>`` column per ``e``),
    ``misalignment_upsampling_cells`` (image x upsampling of :data:`MISALIGNMENT_UPSAMPLINGS` x cell) and
    ``receptive_field_image_sizes`` (per image: theoretical RF, centre cell's IRF width, the side holding
    :data:`ERF_EXTENT_SHARE` of its ERF); extras: the ERF maps ``(B, h*w, H, W)``."""
    erf = rf.effective_receptive_field(model, x)
    ranks = rf.erf_ranks(erf)  # the ERF's pixel order, shared by every IRF below
    table = rf.misalignment_table(model, x, names, e=params.e, erf=erf, ranks=ranks)
    ups = pd.concat([rf.misalignment_table(model, x, names, e=params.e[:1], mode=mode, align_corners=corners, erf=erf,
                                           ranks=ranks) for mode, corners in MISALIGNMENT_UPSAMPLINGS],
                    ignore_index=True)
    ups = ups[["image", "model", "upsampling", "cell", "cell_kind", "erf_mass_outside_irf", "uniform_mass_outside_irf",
               "centred_gaussian_mass_outside_irf", "top_q_iou", "irf_support_px"]]
    H, W = x.shape[-2:]
    h, w = model.feature_size((H, W))
    centre = geometry.centre_cell((h, w))
    sizes = pd.DataFrame(dict(
        image=list(names), model=model.name, input_px=H, grid=f"{h} x {w}", cell_stride_px=H / h,
        theoretical_rf_px=rf.theoretical_receptive_field(model), irf_support_px=rf.irf_width((h, w), (H, W), centre),
        erf90_px=rf.erf_extent(erf[:, centre].cpu(), ERF_EXTENT_SHARE).numpy()))
    tables = {TABLES.misalignment: table, TABLES.misalignment_upsampling_cells: ups,
              TABLES.receptive_field_image_sizes: sizes}
    return image_major(tables, names), erf


def receptive_field_summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``misalignment_summary``, ``margin_mass_ratio`` (per model, cell kind and e), ``misalignment_upsampling`` and
    ``receptive_field_sizes`` from the per-image tables present."""
    out = {}
    if TABLES.misalignment in tables:
        table = tables[TABLES.misalignment]
        out[TABLES.misalignment_summary] = rf.misalignment_summary(table)
        out[TABLES.margin_mass_ratio] = rf.margin_mass_ratio_summary(table)
        if controls.side_columns(table):
            out[TABLES.frame_side_mass] = controls.side_mass_summary(table)
        if "centred_gaussian_mass_outside_irf" in table:
            out[TABLES.misalignment_baselines] = controls.misalignment_baseline_table(table)
    if TABLES.misalignment_upsampling_cells in tables:
        ups = tables[TABLES.misalignment_upsampling_cells]
        out[TABLES.misalignment_upsampling_verdicts] = controls.misalignment_by_upsampling(ups)
        out[TABLES.misalignment_upsampling] = (ups.groupby(["model", "upsampling", "cell_kind"])
                                          [["erf_mass_outside_irf", "uniform_mass_outside_irf",
                                            "centred_gaussian_mass_outside_irf", "top_q_iou", "irf_support_px"]]
                                          .mean().reset_index())
    if TABLES.receptive_field_image_sizes in tables:
        sizes = tables[TABLES.receptive_field_image_sizes]
        keys = ["model", "input_px", "grid", "cell_stride_px", "theoretical_rf_px", "irf_support_px"]
        out[TABLES.receptive_field_sizes] = sizes.groupby(keys, sort=False).erf90_px.mean().reset_index()
    return out


EXPERIMENTS = {e.name: e for e in (
    Experiment("occlusion", "01_occlusion", occlusion, occlusion_summaries),
    Experiment("receptive_fields", "02_receptive_field_misalignment", receptive_fields, receptive_field_summaries),
    Experiment("attack", "03_adversarial_marginal_attack", attack_experiments.attack_grid,
               attack_experiments.summaries),
    Experiment("beyond", "05_beyond_the_paper", "studies.beyond:beyond", "studies.beyond:beyond_summaries"),
)}
NOTEBOOK_EXPERIMENTS = {e.notebook: e.name for e in EXPERIMENTS.values()}


def run(experiment: str, model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams,
        out_dir=None, progress: bool = False, labels=None) -> dict[str, pd.DataFrame]:
    """One experiment's per-image tables (see the module docstring)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; use one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment].run(model, x, names, params, out_dir, progress, labels)[0]


def summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every experiment's summaries of the per-image tables present in ``tables``."""
    out = {}
    for experiment in EXPERIMENTS.values():
        out.update(experiment.summaries(tables))
    return out

