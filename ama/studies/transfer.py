"""Does the marginal attack transfer to other explanations? The attack's 8-bit images, and a random frame of the same
width, explained by other methods (:mod:`ama.studies.explanations`: pytorch-grad-cam's Grad-CAM++, LayerCAM, EigenCAM
and Score-CAM, the kit's signed EigenCAM and a gradient-free occlusion map): per method the random frame's
clean-vs-attacked cosine minus the attack's, per image (:func:`transfer_verdicts`).

The study ``transfer``, declared at the end (:mod:`ama.studies.study`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..artifacts import TABLES
from ..attack.marginal import random_frame
from ..attack.result import OptimizerKey
from ..figures.study_charts import transfer_figure
from ..stats.intervals import pooled
from ..store.tables import markdown_table, read_table
from .ablation import ADVERSARIAL_OPTIMIZERS
from .attack_experiments import adversarial_result
from .explanations import (RELATIVES, SMALLEST_E_ONLY, TRANSFER_METHODS, scale_check, scale_check_summary,
                           transfer_table)
from .study import Figure, Study, Table, Verdicts, register

__all__ = ["transfer_experiment", "transfer_verdicts", "transfer_lines", "STUDY"]


def transfer_experiment(model, x: torch.Tensor, names, params, out_dir=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Notebook 05's transfer study for one model: at every ``e`` of ``params`` (a fast variant of
    :class:`ama.params.RunParams`), the 8-bit images of each optimiser of
    :data:`ama.studies.ablation.ADVERSARIAL_OPTIMIZERS` (the run's PNGs, attacked again where missing) and the
    random frame, explained by :data:`ama.studies.explanations.TRANSFER_METHODS` (Score-CAM on the first ``params.score_cam_images`` images,
    none when 0; :data:`ama.studies.explanations.SMALLEST_E_ONLY` at the smallest ``e`` only). Returns the :func:`ama.studies.explanations.transfer_table` rows, the :func:`ama.studies.explanations.scale_check` rows and
    ``{OptimizerKey: AttackResult}``."""
    methods = [m for m in TRANSFER_METHODS if m != "scorecam" or params.score_cam_images > 0]
    limits = {"scorecam": params.score_cam_images}
    checks = scale_check(model, x, names)
    cache, attacks, frames = {}, {}, []
    for e in params.e:
        rand = random_frame(model, x, e=e, seed=params.seed, names=names)
        here = [m for m in methods if e == min(params.e) or m not in SMALLEST_E_ONLY]
        for optimizer in ADVERSARIAL_OPTIMIZERS:
            key = OptimizerKey.default(optimizer, e, params.n_iter)
            attacks[key] = adversarial_result(model, x, names, params, out_dir, optimizer, e)
            frames.append(transfer_table(model, attacks[key], rand, here, optimizer=optimizer,
                                         image_limits=limits, clean_maps=cache))
    return pd.concat(frames, ignore_index=True), checks, attacks


def transfer_verdicts(transfer: pd.DataFrame, keys=("model", "optimizer", "method", "e")) -> pd.DataFrame:
    """Per ``keys`` of ``transfer.csv``: the random frame's cosine minus the attack's (> 0: the attack moves the
    explanation more than an unoptimised frame), per image (over the models when ``keys`` omits ``model``), its mean
    over images with the bootstrap interval and verdict against 0 (with ``p_holds``, ``p_fails``), and whether the method is one of CAM's relatives
    (:data:`ama.studies.explanations.RELATIVES`). ``transfer``: rows of ``transfer``."""
    rows = []
    table = transfer.assign(gap=transfer.random_cam_cosine - transfer.cam_cosine)
    for key, g in table.groupby(list(keys), sort=True):
        gap = pooled(g, "gap")
        row = dict(zip(keys, key))
        rows.append(dict(row, relative_of_cam=row["method"] in RELATIVES, cam_cosine=g.cam_cosine.mean(),
                         random_cam_cosine=g.random_cam_cosine.mean(), gap=gap.value, low=gap.low, high=gap.high,
                         n_images=gap.n, verdict=gap.verdict(0.0), **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


def transfer_lines(run_dir: Path) -> list[str]:
    """The report's lines: per optimiser at the smallest ``e``, each method's gap with its interval and verdict, the
    means table and the scale check, from the run's ``transfer`` and ``transfer_scale_check``."""
    tables = Path(run_dir) / "tables"
    lines = []
    tr, check = read_table(tables, TABLES.transfer), read_table(tables, TABLES.transfer_scale_check)
    if tr is not None and not tr.empty:
        tr = tr.assign(optimizer=tr.optimizer.astype(str))
        g = tr.groupby(["optimizer", "method", "e"])[["cam_cosine", "random_cam_cosine", "top20_iou",
                                                     "random_top20_iou"]].mean()

        e_min = int(tr.e.min())
        v = transfer_verdicts(tr, ("optimizer", "method", "e"))  # per image over the models
        sentences = []
        for opt, rows in v[v.e == e_min].groupby("optimizer", sort=True):
            parts = [f"{r.method}{' (a CAM relative)' if r.relative_of_cam else ''} {r.gap:+.3f} "
                     f"(95% CI {r.low:+.3f} to {r.high:+.3f}): {r.verdict}" for r in rows.itertuples()]
            sentences.append(f"with the {opt} optimiser at e = {e_min}, the random frame's clean-vs-attacked cosine "
                             f"minus the attack's (> 0: the attack moves the map more) is " + "; ".join(parts))
        lines += [f"**Transfer to other explanations** ({tr.image.nunique()} images, e = "
                  f"{', '.join(str(v) for v in sorted(tr.e.unique()))}; pytorch-grad-cam's Grad-CAM++, LayerCAM and "
                  f"EigenCAM, the kit's sign-corrected EigenCAM and a gradient-free sliding-patch occlusion map): the "
                  f"attack optimises CAM only; " + "; ".join(sentences) + ". Grad-CAM++ and LayerCAM are algebraic "
                  "relatives of CAM for this head: their agreement is consistency more than transfer; EigenCAM's "
                  "singular vector has an arbitrary sign, which the library does not fix (`eigencam-signed` does); "
                  "the occlusion map uses no gradient."
                  + ("" if "scorecam" in set(tr.method) else " Score-CAM was not computed on this run (one forward pass "
                     "per channel; notebook 05's `score_cam_images` turns it on)."), ""]
        lines += [markdown_table(g.round(3).reset_index()), ""]
    if check is not None and not check.empty:
        lines += [f"Check, not a transfer result: Grad-CAM, HiResCAM and XGrad-CAM equal CAM up to a positive scale for "
                  f"this global-average-pool + linear head (largest difference of the normalised maps "
                  f"{check.max_abs_diff.max():.1e}).", ""]
    return lines


def _compute(model, inputs) -> dict:
    """The study's rows per image (:func:`transfer_experiment`); its attacks join the run's (``inputs.extras``)."""
    rows, checks, found = transfer_experiment(model, inputs.x, inputs.names, inputs.params, inputs.out_dir)
    inputs.extras.setdefault("attacks", {}).update(found)
    return {TABLES.transfer: rows, TABLES.transfer_scale_check_images: checks}


def _summarise(tables: dict) -> dict:
    """The verdicts per method and the scale check's summary."""
    return {TABLES.transfer_verdicts: transfer_verdicts(tables[TABLES.transfer]),
            TABLES.transfer_scale_check: scale_check_summary(tables[TABLES.transfer_scale_check_images])}


STUDY = register(Study(
    name="transfer", question="Does the attack transfer to other explanations?",
    tables=(Table("transfer", "image x e x optimiser x method: other explanations of the attacked images"),
            Table("transfer_scale_check_images", "image x method: Grad-CAM, HiResCAM, XGrad-CAM against CAM up to scale"),
            Table("transfer_verdicts", "optimiser x e x method: does the attack move the method more than a random frame",
                  "summary", shown=True,
                  verdicts=Verdicts("gap", "low", "high", 0.0,
                                    lambda r: f"the attack transfers to {r.method} ({r.optimizer}, e = {r.e})")),
            Table("transfer_scale_check", "method: the largest difference and smallest cosine of that check", "summary",
                  shown=True)),
    figures=(Figure("transfer_cosine", "other explanations' cosine, attack vs random frame",
                    lambda folder: transfer_figure(folder.read(TABLES.transfer))),),
    compute=_compute, summarise=_summarise, keys=("method", "optimizer"), measured_by=("method",),
    section=transfer_lines))
