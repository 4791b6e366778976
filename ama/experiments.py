"""The notebooks' experiments: a model, images and the run's parameters in, tidy tables out.

Each :class:`Experiment` returns ``{table name: DataFrame}`` with one or more rows **per image** (keyed by ``model``
and ``image``), so that the images can be split across processes and the parts joined again (:mod:`ama.shards`),
and its ``summaries`` compute the tables that aggregate over images. :data:`EXPERIMENTS` names them with the
notebook that shows each; :mod:`ama.runs` computes (or merges) them for a notebook, which only plots and saves.

* ``occlusion`` (notebook 01): keep-IRF, occlude-IRF, margin and sliding-patch occlusion;
* ``receptive_fields`` (notebook 02): ERF vs IRF misalignment, the upsamplings, the receptive-field sizes;
* ``attack`` (notebook 03): the attack grid, the random frame, the optimiser ablation (:mod:`ama.attack_experiments`);
* ``beyond`` (notebook 05): transfer to other explanations, faithfulness and ERF-aware upsampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from . import (attack_experiments, border_defence, controls, erf_definitions, faithfulness, geometry, sides, transfer,
               under_attack)
from . import occlusion as occ
from . import receptive_field as rf
from .artifacts import TABLES
from .attack_result import OptimizerKey
from .cam_model import CAMModel
from .criteria import MISALIGNED_MASS
from .params import FAST_N_FILLS, FAST_SLIDING_STRIDE, RunParams
from .protocol import evenly, run_names
from .results import image_major
from .transfer import scale_check_summary


@dataclass(frozen=True)
class Experiment:
    """One notebook's experiment: ``run(model, x, names, params, out_dir, progress, labels) -> (tables, extras)``
    (per-image tables; ``labels`` ``(B,)``, -1 where unknown; ``extras``: what the notebook's figures reuse, e.g. ERF
    maps or attack results) and ``summaries(tables) -> tables`` over images."""

    name: str
    notebook: str
    run: Callable
    summaries: Callable[[dict], dict]


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
    kind: the IRF's and the outside's change per unit of area, :func:`ama.controls.per_area_summary`)."""
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
        if sides.side_columns(table):
            out[TABLES.frame_side_mass] = sides.side_mass_summary(table)
        if "centred_gaussian_mass_outside_irf" in table:
            out[TABLES.misalignment_baselines] = controls.misalignment_baseline_table(table)
    if TABLES.misalignment_upsampling_cells in tables:
        ups = tables[TABLES.misalignment_upsampling_cells]
        out[TABLES.misalignment_upsampling_verdicts] = controls.misalignment_by_upsampling(ups, MISALIGNED_MASS)
        out[TABLES.misalignment_upsampling] = (ups.groupby(["model", "upsampling", "cell_kind"])
                                          [["erf_mass_outside_irf", "uniform_mass_outside_irf",
                                            "centred_gaussian_mass_outside_irf", "top_q_iou", "irf_support_px"]]
                                          .mean().reset_index())
    if TABLES.receptive_field_image_sizes in tables:
        sizes = tables[TABLES.receptive_field_image_sizes]
        keys = ["model", "input_px", "grid", "cell_stride_px", "theoretical_rf_px", "irf_support_px"]
        out[TABLES.receptive_field_sizes] = sizes.groupby(keys, sort=False).erf90_px.mean().reset_index()
    return out


# --- beyond the paper (notebook 05) ---------------------------------------------------------------------
def beyond(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
           progress: bool = False, labels=None) -> tuple[dict[str, pd.DataFrame], dict]:
    """Tables ``transfer`` (image x e x optimiser x method: the attack's 8-bit images explained by other methods,
    :func:`ama.under_attack.transfer_experiment`), ``attack_location`` (image x location: the reference attack on masks of
    the frame's pixel count elsewhere, :func:`ama.controls.location_control`), ``transfer_scale_check_images`` (image x
    method), ``faithfulness``
    (image x method x upsampling), ``upsampling_comparison`` (image x upsampling) and ``border_defence`` (image x e x
    optimiser x defence, :func:`ama.border_defence.defence_rows`), ``attack_sides`` (image x side: the reference attack on
    one side of the frame, :func:`ama.sides.side_attack`) and ``erf_definitions_cells`` (image x definition x cell:
    claim 1's measures under the gradient and the occlusion ERF, :func:`ama.erf_definitions.definition_rows`): those of
    the run's ``studies`` (:data:`ama.params.STUDIES`), from the adversarial PNGs the
    attack experiment saved in ``out_dir`` (attacked again where missing), on ``beyond_images`` of the run's images
    (:func:`ama.protocol.evenly`; all when 0); the Gaussian upsampling is fitted to images
    of the kit's set that the run does not report (:func:`ama.faithfulness.calibration_fit`), so each image's rows do
    not depend on the others; extras: the attack results and the upsampling comparison's maps."""
    reported = run_names(params, out_dir, names)
    if params.beyond_images:  # notebook 05 on a spread subset of the run's images
        keep = set(evenly(reported, params.beyond_images))
        idx = [k for k, n in enumerate(names) if n in keep]
        if not idx:
            return {}, {}
        x, names = x[idx], [names[k] for k in idx]
        labels = None if labels is None else torch.as_tensor(labels)[idx]
    studies, tables, attacks, info = set(params.studies), {}, {}, None

    def attack(optimizer: str, e: int):  # the run's saved attack (attacked again where missing), once
        key = OptimizerKey.default(optimizer, e, params.n_iter)
        if key not in attacks:
            attacks[key] = attack_experiments.adversarial_result(model, x, names, params, out_dir, optimizer, e)
        return attacks[key]

    if "transfer" in studies:
        tr, checks, found = under_attack.transfer_experiment(model, x, names, params, out_dir)
        attacks.update(found)
        tables.update({TABLES.transfer: tr, TABLES.transfer_scale_check_images: checks})
    frame_attack = None
    if "location" in studies or "faithfulness" in studies:
        frame_attack = attack(attack_experiments.ORIGINAL, min(params.e))
    if "location" in studies:
        tables[TABLES.attack_location] = controls.location_control(model, x, names, params, frame_attack, labels)
    if "faithfulness" in studies:
        fit = faithfulness.calibration_fit(model, params, reported)
        comparison, faith, info = faithfulness.faithfulness_experiment(
            model, x, names, frame_attack, params.auc_steps,
            [m for m in transfer.TRANSFER_METHODS if m not in ("scorecam", "occlusion")], fit)
        tables.update({TABLES.faithfulness: faith, TABLES.upsampling_comparison: comparison})
    if "defence" in studies:
        tables[TABLES.border_defence] = pd.concat(
            [border_defence.defence_rows(model, attack(o, e), labels, o) for e in border_defence.defence_widths(params)
             for o in attack_experiments.ADVERSARIAL_OPTIMIZERS], ignore_index=True)
    if "sides" in studies:
        tables[TABLES.attack_sides] = sides.side_attack(model, x, names, params, labels)
    if "erf_definitions" in studies:
        tables[TABLES.erf_definitions_cells] = erf_definitions.definition_rows(model, x, names, min(params.e))
    return image_major(tables, names), dict(attacks=attacks, upsampling=info)


def beyond_summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``transfer_scale_check`` (per model and method: the largest difference and the smallest cosine over images),
    ``faithfulness_summary`` (per model, method and upsampling: mean AUCs), ``transfer_verdicts``,
    ``attack_location_summary`` and ``frame_mass_ratio`` (:mod:`ama.controls`) and ``upsampling_summary`` (per model and
    upsampling: the means of the comparison's columns)."""
    out = {}
    if TABLES.transfer_scale_check_images in tables:
        out[TABLES.transfer_scale_check] = scale_check_summary(tables[TABLES.transfer_scale_check_images])
    if TABLES.faithfulness in tables:
        out[TABLES.faithfulness_summary] = (tables[TABLES.faithfulness].groupby(["model", "method", "upsampling"])
                                       [["deletion_auc", "insertion_auc"]].mean().reset_index())
    if TABLES.transfer in tables:
        out[TABLES.transfer_verdicts] = controls.transfer_verdicts(tables[TABLES.transfer])
    if TABLES.attack_location in tables:
        out[TABLES.attack_location_summary] = controls.location_summary(tables[TABLES.attack_location])
    if TABLES.upsampling_comparison in tables and "frame_share" in tables[TABLES.upsampling_comparison]:
        ratio = controls.frame_mass_ratio(tables[TABLES.upsampling_comparison])
        out[TABLES.frame_mass_ratio] = controls.frame_mass_summary(ratio)
    if TABLES.attack_sides in tables:
        out[TABLES.attack_sides_summary] = sides.side_attack_summary(tables[TABLES.attack_sides])
    if TABLES.erf_definitions_cells in tables:
        out[TABLES.erf_definitions] = erf_definitions.definition_summary(tables[TABLES.erf_definitions_cells])
    if TABLES.border_defence in tables:
        out[TABLES.border_defence_summary] = border_defence.defence_summary(tables[TABLES.border_defence])
    if TABLES.upsampling_comparison in tables:
        out[TABLES.upsampling_summary] = (tables[TABLES.upsampling_comparison].drop(columns="image")
                                     .groupby(["model", "upsampling"]).mean(numeric_only=True).reset_index())
    return out


EXPERIMENTS = {e.name: e for e in (
    Experiment("occlusion", "01_occlusion", occlusion, occlusion_summaries),
    Experiment("receptive_fields", "02_receptive_field_misalignment", receptive_fields, receptive_field_summaries),
    Experiment("attack", "03_adversarial_marginal_attack", attack_experiments.attack_grid,
               attack_experiments.summaries),
    Experiment("beyond", "05_beyond_the_paper", beyond, beyond_summaries),
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

