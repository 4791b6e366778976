"""Claim 3's CAM half as the paper states it: a map "completely changed to another shape" (``SCIENCE.md`` section 8).

The paper gives no number for "completely changed"; the kit calibrates it per model on unrelated images. The null is
the cosine between the clean CAMs (each image's own predicted class, min-max normalised) of pairs of different
images of ``data/imagenet`` (:func:`cam_null`, a seeded sample saved as a table); its median is ``tau``
(:func:`thresholds`). An attacked image's CAM is **completely changed** when ``cos(M_z, M_x) <= tau``: at least as
far from its clean CAM as an unrelated image's CAM typically is. The **joint event**: fooled and completely changed.

:func:`joint_rows` marks both events per image for the reference attack, the other optimisers of the ablation and
the random frame; :func:`joint_summary` gives the shares with exact intervals and each attack against the random
frame on the same images (McNemar's exact test on the discordant images); :func:`capability` and
:func:`prevalence` are claim 3's two verdicts' statistics.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..artifacts import TABLES
from ..attack.optimizers import ORIGINAL
from ..criteria import JOINT_RATE, TAU_CURVE, TAU_QUANTILE
from ..inputs.images import load_images
from ..kernels.cam import compute_cam
from ..kernels.metrics import cosine
from ..params import FAST_NULL_IMAGES, RunParams
from ..stats.intervals import Estimate, image_rate
from ..stats.rows import eight_bit, original_attack
from ..store.tables import read_table

NULL_SOURCE = "data/imagenet"  # the unrelated images of the null, whatever images the run attacks
NULL_IMAGES = 200              # a seeded choice of that many of them (FAST: ama.params.FAST_NULL_IMAGES)
NULL_PAIRS = 2000              # a seeded sample of that many distinct pairs among them (all pairs when fewer)
RANDOM_FRAME = "random frame"  # the ``optimizer`` of the random frame's rows in :func:`joint_rows`


def null_pairs(n: int, n_pairs: int = NULL_PAIRS, seed: int = 0) -> np.ndarray:
    """``(P, 2)`` indices ``a < b`` of distinct pairs of ``n`` images: every pair when there are at most ``n_pairs``,
    else a seeded sample of ``n_pairs`` of them without repetition. ``seed``: the run's seed."""
    a, b = np.triu_indices(n, k=1)
    pairs = np.stack([a, b], 1)
    if len(pairs) <= n_pairs:
        return pairs
    pick = np.random.default_rng(seed).choice(len(pairs), size=n_pairs, replace=False)
    return pairs[np.sort(pick)]


def null_cosines(model, x: torch.Tensor, names, batch_size: int = 32, n_pairs: int = NULL_PAIRS,
                 seed: int = 0) -> pd.DataFrame:
    """The null of one model on images ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` named ``names``: one row per pair of
    :func:`null_pairs` (``n_pairs``, ``seed``) with ``model, image_a, image_b, class_a, class_b, cosine`` (of the
    two clean CAMs, each of its image's predicted class); ``batch_size`` images per forward pass."""
    maps, classes = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = compute_cam(model, x[i:i + batch_size].to(model.device))
            maps.append(out.cam.cpu())
            classes.append(out.target.cpu())
    maps, classes = torch.cat(maps), torch.cat(classes)
    pairs = null_pairs(len(maps), n_pairs, seed)
    a, b = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    names = np.asarray(list(names))
    return pd.DataFrame(dict(model=model.name, image_a=names[pairs[:, 0]], image_b=names[pairs[:, 1]],
                             class_a=classes[a].numpy(), class_b=classes[b].numpy(),
                             cosine=cosine(maps[a], maps[b]).numpy()))


def cam_null(models, params: RunParams) -> pd.DataFrame:
    """The null of every model of the run (``models``: ``{name: model}`` or ``{name: (model, data)}``, as
    :func:`ama.runs.folder.load_models_and_images` gives): :data:`NULL_IMAGES` images of :data:`NULL_SOURCE` chosen with
    the run's seed (FAST: :data:`~ama.params.FAST_NULL_IMAGES`), rows of :func:`null_cosines`."""
    n = FAST_NULL_IMAGES if params.fast else NULL_IMAGES
    frames = []
    for entry in models.values():
        model = entry[0] if isinstance(entry, tuple) else entry
        data = load_images(NULL_SOURCE, model=model, n=n, seed=params.seed)
        frames.append(null_cosines(model, data.images, data.names, seed=params.seed))
    return pd.concat(frames, ignore_index=True)


def thresholds(null: pd.DataFrame, quantile: float = TAU_QUANTILE) -> dict[str, float]:
    """``{model: tau}``, the ``quantile`` of the model's null cosines (``null``: rows of :func:`cam_null`; default
    :data:`ama.criteria.TAU_QUANTILE`, the median)."""
    return null.groupby("model").cosine.quantile(quantile).to_dict()


def joint_rows(metrics: pd.DataFrame, null: pd.DataFrame, ablation: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model x image x ``e`` x optimiser (8-bit, flip, the run's largest ``n_iter``): ``fooled``, ``cam_cosine``,
    ``tau`` (of ``null``, rows of :func:`cam_null`), ``completely_changed`` (``cam_cosine <= tau``) and ``joint``
    (both), as 0/1 floats. Optimisers: the reference from ``metrics`` (``attack_metrics``), the others' defaults from
    ``ablation`` (``attack_ablation``, when given) and :data:`RANDOM_FRAME` (the random frame of ``metrics``)."""
    keys = ["model", "image", "e", "optimizer", "fooled", "cam_cosine"]
    frames = [original_attack(metrics)[keys]]
    q = eight_bit(metrics)
    frames.append(q[q.setting == "random_frame"].assign(optimizer=RANDOM_FRAME)[keys])
    if ablation is not None and not ablation.empty:
        a = eight_bit(ablation)
        a = a[(a.variant == "default") & (a["mode"] == "flip") & (a.optimizer != frames[0].optimizer.iloc[0])]
        frames.append(a[a.n_iter == a.n_iter.max()][keys])
    rows = pd.concat(frames, ignore_index=True)
    rows["tau"] = rows.model.map(thresholds(null))
    rows["fooled"] = rows.fooled.astype(float)
    rows["completely_changed"] = (rows.cam_cosine <= rows.tau).astype(float)
    rows["joint"] = rows.fooled * rows.completely_changed
    return rows


def from_tables(tables) -> pd.DataFrame | None:
    """:func:`joint_rows` from a run's ``tables`` folder (``attack_metrics``, ``cam_null``, ``attack_ablation``);
    None when the first two are missing."""
    metrics, null = read_table(tables, TABLES.attack_metrics), read_table(tables, TABLES.cam_null)
    if metrics is None or metrics.empty or null is None or null.empty:
        return None
    return joint_rows(metrics, null, read_table(tables, TABLES.attack_ablation))


def _paired(rows: pd.DataFrame, optimizer: str, column: str = "joint", other: str = RANDOM_FRAME) -> Estimate:
    """``optimizer`` minus ``other`` on ``column``, paired per image (mean over models first)."""
    wide = rows.pivot_table(index="image", columns="optimizer", values=column, aggfunc="mean")
    return Estimate.paired(wide[optimizer], wide[other])


def capability(rows: pd.DataFrame, e: int, optimizer: str) -> Estimate:
    """Claim 3, capability: the joint event's share for ``optimizer`` minus the random frame's, paired per image, at
    frame width ``e`` (``rows``: :func:`joint_rows`); its p-value is McNemar's exact test on the discordant images."""
    return _paired(rows[rows.e == e], optimizer)


def prevalence(rows: pd.DataFrame, e: int, optimizer: str) -> Estimate:
    """Claim 3, prevalence: the share of images on which ``optimizer`` at ``e`` fools and completely changes the CAM
    (exact interval; judged against :data:`ama.criteria.JOINT_RATE`)."""
    return image_rate(rows[(rows.e == e) & (rows.optimizer == optimizer)], "joint")


def joint_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model x ``e`` x optimiser (the random frame included): ``n_images``, ``tau``, the shares ``fooled``,
    ``completely_changed`` and ``joint`` with the exact 95% interval of the last two (``*_low``, ``*_high``), and for
    an attack its joint share minus the random frame's, paired per image (``vs_random``, McNemar's exact ``vs_random_low``
    / ``_high``; ``attack_only`` / ``random_only``, the discordant images; ``p_value``, McNemar's exact two-sided;
    ``p_holds`` / ``p_fails``, one-sided) and ``prevalence_p_holds`` / ``_fails`` (the joint share against
    :data:`~ama.criteria.JOINT_RATE`)."""
    out = []
    for (model, e, optimizer), g in rows.groupby(["model", "e", "optimizer"], sort=True):
        row = dict(model=model, e=e, optimizer=optimizer, n_images=len(g), tau=g.tau.iloc[0],
                   fooled=g.fooled.mean())
        for column in ("completely_changed", "joint"):
            est = image_rate(g, column)
            row.update({column: est.value, f"{column}_low": est.low, f"{column}_high": est.high})
        p = prevalence(g, e, optimizer).p_columns(JOINT_RATE)
        row.update(prevalence_p_holds=p["p_holds"], prevalence_p_fails=p["p_fails"])
        if optimizer != RANDOM_FRAME:
            both = rows[(rows.model == model) & (rows.e == e) & rows.optimizer.isin([optimizer, RANDOM_FRAME])]
            est = _paired(both, optimizer)
            row.update(vs_random=est.value, vs_random_low=est.low, vs_random_high=est.high,
                       attack_only=est.discordant[0], random_only=est.discordant[1], p_value=est.p_value,
                       verdict=est.verdict(0.0), **est.p_columns(0.0))
        out.append(row)
    return pd.DataFrame(out)


def joint_lines(summary: pd.DataFrame) -> list[str]:
    """Notebook 03's lines: per model and ``e`` each optimiser's completely-changed and joint shares beside the random
    frame's (``summary``: :func:`joint_summary`)."""
    lines = []
    for (model, e), g in summary.groupby(["model", "e"], sort=True):
        parts = [f"{r.optimizer} changed {100 * r.completely_changed:.0f}%, fooled and changed {100 * r.joint:.0f}% "
                 f"({100 * r.joint_low:.0f}-{100 * r.joint_high:.0f}%)" for r in g.itertuples()]
        lines.append(f"{model}, e = {e} (tau {g.tau.iloc[0]:.2f}, {int(g.n_images.max())} images): " + "; ".join(parts))
    return lines


def tau_curve(rows: pd.DataFrame, null: pd.DataFrame, quantiles=TAU_CURVE) -> pd.DataFrame:
    """Claim 3 against its criterion's one choice, tau: per model x ``e`` x optimiser (the random frame included) and
    each of the null's ``quantiles`` (:data:`ama.criteria.TAU_CURVE`), ``tau`` and the joint share (fooled and cosine
    at most tau) with its exact 95% interval, and for an attack its joint share minus the random frame's, paired per
    image, with McNemar's exact ``p_value``; ``declared`` marks :data:`~ama.criteria.TAU_QUANTILE`. ``rows``:
    :func:`joint_rows`; ``null``: rows of :func:`cam_null`."""
    out = []
    for q in quantiles:
        tau = rows.model.map(thresholds(null, q))
        at = rows.assign(tau=tau, completely_changed=(rows.cam_cosine <= tau).astype(float))
        at = at.assign(joint=at.fooled * at.completely_changed)
        for (model, e, optimizer), g in at.groupby(["model", "e", "optimizer"], sort=True):
            share = image_rate(g, "joint")
            row = dict(model=model, e=e, optimizer=optimizer, quantile=q, declared=q == TAU_QUANTILE,
                       tau=g.tau.iloc[0], n_images=len(g), joint=share.value, joint_low=share.low,
                       joint_high=share.high)
            if optimizer != RANDOM_FRAME:
                both = at[(at.model == model) & (at.e == e) & at.optimizer.isin([optimizer, RANDOM_FRAME])]
                gap = _paired(both, optimizer)
                row.update(vs_random=gap.value, attack_only=gap.discordant[0], random_only=gap.discordant[1],
                           p_value=gap.p_value)
            out.append(row)
    return pd.DataFrame(out)


def restarts(seeds: pd.DataFrame | None, metrics: pd.DataFrame, null: pd.DataFrame) -> pd.DataFrame:
    """Claim 3's prevalence per start and with restarts: the reference attack at the smallest ``e`` (8-bit) from each of
    the run's ``k`` starts (``seeds``: rows of ``attack_seeds``, the run's seeds; without them the one start of
    ``metrics``, ``attack_metrics``), the joint event against tau (``null``: rows of :func:`cam_null`). Per model:
    ``k``, ``per_start`` (each image's share of its starts with the joint event, mean over images, t-interval),
    ``best_of_k`` (the images with the event from at least one start, exact interval) and ``changes_status`` (the
    images whose outcome differs between starts: what one start's verdict rests on)."""
    rows = eight_bit(seeds) if seeds is not None and len(seeds) else original_attack(metrics)
    if "optimizer" in rows:
        rows = rows[rows.optimizer == rows.optimizer.iloc[0]] if ORIGINAL not in set(rows.optimizer) else \
            rows[rows.optimizer == ORIGINAL]
    rows = rows[rows.e == rows.e.min()]
    tau = rows.model.map(thresholds(null))
    rows = rows.assign(tau=tau, joint=(rows.fooled.astype(bool) & (rows.cam_cosine <= tau)).astype(float))
    out = []
    for model, g in rows.groupby("model", sort=False):
        per = g.groupby("image", sort=False).joint
        k = int(per.size().max())
        start = Estimate.of(per.mean().to_numpy()) if k > 1 else Estimate.rate(int(per.sum().sum()), per.ngroups)
        best = Estimate.rate(int((per.max() > 0).sum()), per.ngroups)
        out.append(dict(model=model, e=int(g.e.iloc[0]), optimizer=ORIGINAL, k=k,
                        n_images=per.ngroups, tau=float(g.tau.iloc[0]), per_start=start.value,
                        per_start_low=start.low, per_start_high=start.high, best_of_k=best.value, best_low=best.low,
                        best_high=best.high, changes_status=int((per.max() != per.min()).sum())))
    return pd.DataFrame(out)

