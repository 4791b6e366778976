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
from ..attack.optimizers import ORIGINAL
from ..figures.study_charts import transfer_figure
from ..stats.intervals import HOLDS, pooled
from ..store.tables import interval_text, read_table, readable
from .ablation import ADVERSARIAL_OPTIMIZERS
from .attack_experiments import adversarial_result
from .explanations import (RELATIVES, SMALLEST_E_ONLY, TRANSFER_METHODS, scale_check, scale_check_summary,
                           transfer_table)
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

__all__ = ["transfer_experiment", "transfer_verdicts", "transfer_finding", "METHOD_NAMES", "STUDY"]


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


METHOD_NAMES = {"gradcam++": "Grad-CAM++", "layercam": "LayerCAM", "eigencam": "EigenCAM",
                "eigencam-signed": "EigenCAM, sign fixed", "occlusion": "occlusion (no gradient)",
                "scorecam": "Score-CAM"}


def transfer_finding(run_dir: Path) -> Finding | None:
    """The report's finding: does the attack, which optimises CAM only, move other explanations more than the random
    frame does (per optimiser, method and ``e``, paired per image, the verdict that decides), and the scale check of
    CAM's exact relatives; None without the run's ``transfer_verdicts``."""
    tables = Path(run_dir) / "tables"
    v, check = read_table(tables, TABLES.transfer_verdicts), read_table(tables, TABLES.transfer_scale_check)
    if v is None:  # a run folder from before the summary: from the rows
        rows = read_table(tables, TABLES.transfer)
        v = transfer_verdicts(rows) if rows is not None and len(rows) else None
    if v is None or v.empty:
        return None
    v, label = deciding(run_dir, TABLES.transfer_verdicts, v)
    e = int(v.e.min())
    first = v[(v.e == e) & (v.optimizer == ORIGINAL)] if (v.optimizer == ORIGINAL).any() else v[v.e == e]
    moved = int((first.verdict == HOLDS).sum())
    occlusion = first[first.method == "occlusion"]
    sentence = (f"The attack optimises CAM alone, yet at e = {e} the reference attack moves {moved} of "
                f"{first.method.nunique()} other explanations more than the random frame does ({int(v.n_images.max())} "
                "images)" + (f", the gradient-free occlusion map by {occlusion.gap.iloc[0]:+.2f} in cosine"
                             if len(occlusion) else "") + ".")
    if check is not None and not check.empty:
        sentence += (" Grad-CAM, HiResCAM and XGrad-CAM equal CAM here up to scale (checked), so they are not "
                     "counted.")
    if "model" in v and v.model.nunique() > 1:  # a row per model: the reference attack at the smallest e
        first = first.assign(cell=[f"{r.gap:+.2f} ({r.verdict})" for r in first.itertuples()])
        table = first.pivot(index="model", columns="method", values="cell").rename(columns=METHOD_NAMES)
        return Finding(sentence + f" Per model: the random frame's cosine minus the reference attack's at e = {e}.",
                       table.reset_index().fillna("–"))
    columns = {}
    columns.update({"explanation": lambda r: METHOD_NAMES.get(r.method, r.method), "optimiser": "optimizer", "e": "e",
                    "cosine to the clean map: attack": "cam_cosine", "random frame": "random_cam_cosine",
                    "random minus attack (95% CI)": lambda r: interval_text(r.gap, r.low, r.high, signed=True),
                    label: "verdict"})
    return Finding(sentence, readable(v.sort_values(["optimizer", "e", "method"]), columns))


def _compute(model, inputs) -> dict:
    """The study's rows per image (:func:`transfer_experiment`); its attacks join the run's (``inputs.extras``)."""
    rows, checks, found = transfer_experiment(model, inputs.x, inputs.names, inputs.params, inputs.out_dir)
    inputs.extras.setdefault("attacks", {}).update(found)
    return {TABLES.transfer: rows, TABLES.transfer_scale_check_images: checks}


def _summarise(tables: dict) -> dict:
    """The verdicts per method and the scale check's summary."""
    return {TABLES.transfer_verdicts: transfer_verdicts(tables[TABLES.transfer]),
            TABLES.transfer_scale_check: scale_check_summary(tables[TABLES.transfer_scale_check_images])}


def _caption(run_dir) -> str | None:
    """The figure's caption on the run in ``run_dir``: the reference attack's effect on the other explanations at the
    smallest ``e`` (the first model's), None without the verdicts."""
    rows = read_table(Path(run_dir) / "tables", TABLES.transfer_verdicts)
    if rows is None or rows.empty:
        return None
    rows = rows[(rows.model == rows.model.iloc[0]) & (rows.e == rows.e.min())]
    rows = rows[rows.optimizer == ("sign" if "sign" in set(rows.optimizer) else rows.optimizer.iloc[0])]
    lo, hi = rows.loc[rows.cam_cosine.idxmin()], rows.loc[rows.cam_cosine.idxmax()]
    return (f"At e = {int(lo.e)} the {lo.optimizer} attack brings the other explanations' cosine to the clean one down "
            f"to {lo.cam_cosine:.2f} ({lo.method}) to {hi.cam_cosine:.2f} ({hi.method}), the random frame no lower than "
            f"{rows.random_cam_cosine.min():.2f}; it moves {int((rows.verdict == 'holds').sum())} of {len(rows)} "
            "methods more.")


STUDY = register(Study(
    name="transfer", question="Does the attack transfer to other explanations?",
    tables=(Table("transfer", "image x e x optimiser x method: other explanations of the attacked images"),
            Table("transfer_scale_check_images", "image x method: Grad-CAM, HiResCAM, XGrad-CAM against CAM up to scale"),
            Table("transfer_verdicts", "optimiser x e x method: does the attack move the method more than a random frame",
                  "summary",
                  verdicts=Verdicts("gap", "low", "high", 0.0,
                                    lambda r: f"the attack transfers to {r.method} ({r.optimizer}, e = {r.e})")),
            Table("transfer_scale_check", "method: the largest difference and smallest cosine of that check", "summary")),
    figures=(Figure("transfer_cosine", "other explanations' cosine, attack vs random frame",
                    lambda folder: transfer_figure(folder.read(TABLES.transfer)), caption=_caption),),
    compute=_compute, summarise=_summarise, keys=("method", "optimizer"), measured_by=("method",),
    section=transfer_finding))
