"""Claim 3's "changed to another shape", tested: the attack pulls the CAM towards a glyph (``SCIENCE.md`` section 8).

Per image of :func:`targeted_images` (a quarter of the run's, 2 to 50) and glyph of :data:`GLYPHS` the target ``T`` is the glyph at CAM resolution
(:func:`ama.inputs.targets.glyph`). A target already close to the clean CAM (``cos(M_x, T) >= TARGET_SKIP``) would make
success vacuous: it is skipped and counted (:func:`target_table`). Every other target is attacked at the widths
:data:`TARGETED_E` of the run, with each optimiser of :data:`~ama.studies.ablation.ADVERSARIAL_OPTIMIZERS`, beside the
random frame of the same pixels (:func:`targeted_attacks`); an attack **reaches** its target when ``cos(M_z, T) >=
TARGET_REACHED`` (8-bit). :func:`targeted_summary` gives the rates with exact intervals and the paired comparisons
(attack vs random frame, the strongest optimiser vs the reference) with McNemar's exact test.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..attack import optimizers
from ..attack.marginal import marginal_attack, random_frame
from ..criteria import TARGET_REACHED, TARGET_SKIP
from ..figures.plots import target_figure
from ..inputs import targets as shapes
from ..inputs.protocol import evenly
from ..kernels.cam import cam
from ..kernels.cam_model import CAMModel
from ..kernels.metrics import attack_metrics, cosine
from ..params import RunParams
from ..stats.intervals import Estimate, image_rate, pooled
from ..stats.rows import eight_bit
from .ablation import ADVERSARIAL_OPTIMIZERS
from .complete_change import RANDOM_FRAME  # the ``optimizer`` of the random frame's rows

GLYPHS = ("X", "L")       # two shapes far from a typical CAM (median cosine to lite0's clean CAMs about 0.5)
TARGETED_IMAGES = 20      # at most this many of the run's images, spread over them (each costs ~16 s here):
TARGETED_SHARE = 4        # a quarter of them (the evidence run's 150: 20; the default run's 8: 2),
MIN_TARGETED_IMAGES = 2   # at least two (all when the run has fewer)
TARGETED_E = (1, 2)       # the widths attacked (of the run's; its smallest when it has neither)
BOTH = "both glyphs"      # the summary's rows over both glyphs (per image the mean over its attacked targets)


def targeted_images(reported: Sequence[str]) -> list[str]:
    """The images the targeted test attacks: a quarter of the run's ``reported`` images (class order), at least
    :data:`MIN_TARGETED_IMAGES`, at most :data:`TARGETED_IMAGES`, spread over them (four attacks of ``n_iter``
    passes per target: the test costs as much as the rest of notebook 03 when it attacks every image)."""
    k = min(TARGETED_IMAGES, max(MIN_TARGETED_IMAGES, len(reported) // TARGETED_SHARE))
    return evenly(list(reported), min(k, len(reported)))


def targeted_widths(params: RunParams) -> list[int]:
    """The run's widths of :data:`TARGETED_E` (else its smallest). ``params``: the run's parameters."""
    return params.widths_among(TARGETED_E)


def target_table(model: CAMModel, x: torch.Tensor, names: Sequence[str]) -> tuple[pd.DataFrame, torch.Tensor]:
    """Per image of ``x`` ``(B, 3, H, W)`` and glyph: ``model, image, target, clean_target_cosine`` and ``attacked``
    (the cosine is below :data:`~ama.criteria.TARGET_SKIP`), image-major; and the targets ``(B * len(GLYPHS), h,
    w)`` in the same order."""
    with torch.no_grad():
        clean = cam(model, x.to(model.device)).cpu()
    size = tuple(clean.shape[-2:])
    glyphs = torch.stack([shapes.glyph(size, g) for g in GLYPHS])
    maps = glyphs.repeat(len(x), 1, 1)
    cos = cosine(clean.repeat_interleave(len(GLYPHS), 0), maps)
    table = pd.DataFrame(dict(model=model.name, image=[n for n in names for _ in GLYPHS],
                              target=[f"glyph {g}" for _ in names for g in GLYPHS],
                              clean_target_cosine=cos.numpy()))
    table["attacked"] = table.clean_target_cosine < TARGET_SKIP
    return table, maps


def targeted_attacks(model: CAMModel, x: torch.Tensor, names: Sequence[str],
                     params: RunParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables ``attack_targets`` (:func:`target_table`) and ``attack_targeted``: per attacked target, width of
    :func:`targeted_widths` and optimiser (and :data:`RANDOM_FRAME`), the metric rows of
    :func:`ama.kernels.metrics.attack_metrics` with ``target``, ``clean_target_cosine`` and ``reached``
    (``target_cosine >= TARGET_REACHED``). ``x`` ``(B, 3, H, W)`` in ``[0, 1]``; ``names``: its images."""
    targets, maps = target_table(model, x, names)
    keep = torch.tensor(targets.attacked.to_numpy())
    chosen = targets[targets.attacked].reset_index(drop=True)
    if chosen.empty:
        return targets, pd.DataFrame()
    xs = x.repeat_interleave(len(GLYPHS), 0)[keep]
    T, rows_names = maps[keep], list(chosen.image)
    frames = []
    for e in targeted_widths(params):
        for optimizer in ADVERSARIAL_OPTIMIZERS:
            r = marginal_attack(model, xs, e=e, n_iter=params.n_iter, lamb=params.lamb, target_map=T,
                                seed=params.seed, names=rows_names, optimizer=optimizer)
            frames.append(attack_metrics(r).assign(setting="attack"))
        r = random_frame(model, xs, e=e, seed=params.seed, names=rows_names)
        m = attack_metrics(r).assign(setting="random_frame", optimizer=RANDOM_FRAME)
        m["target_cosine"] = torch.cat([cosine(T, r.evaluated(q).cam) for q in (False, True)]).numpy()
        frames.append(m)
    extra = chosen[["target", "clean_target_cosine"]]
    rows = pd.concat([f.reset_index(drop=True).join(pd.concat([extra] * 2, ignore_index=True)) for f in frames],
                     ignore_index=True)
    rows["reached"] = rows.target_cosine >= TARGET_REACHED
    return targets, rows


def targeted_example(model: CAMModel, data, params: RunParams, targets: pd.DataFrame, k: int = 2):
    """The reference's targeted attack at the largest width of :func:`targeted_widths` on the first ``k`` attacked
    targets of ``targets`` (:func:`target_table`; ``data``: the run's :class:`~ama.inputs.images.LoadedImages`), for the
    figures: an :class:`~ama.attack.result.AttackResult`, or None when no target was attacked."""
    chosen = targets[targets.attacked & (targets.model == model.name)].head(k)
    if chosen.empty:
        return None
    index = {name: i for i, name in enumerate(data.names)}
    x = data.images[[index[n] for n in chosen.image]]
    with torch.no_grad():
        size = tuple(cam(model, x[:1].to(model.device)).shape[-2:])
    T = torch.stack([shapes.glyph(size, t.removeprefix("glyph ")) for t in chosen.target])
    return marginal_attack(model, x, e=targeted_widths(params)[-1], n_iter=params.n_iter, lamb=params.lamb,
                           target_map=T, seed=params.seed, names=list(chosen.image))


def _paired(g: pd.DataFrame, first: str, second: str) -> Estimate:
    wide = g.pivot_table(index=["model", "image"], columns="optimizer", values="reached", aggfunc="mean")
    wide = wide.groupby(level="image").mean()
    return Estimate.paired(wide[first], wide[second])


def _summary_row(g: pd.DataFrame, t: pd.DataFrame, optimizer: str) -> dict:
    """One row of :func:`targeted_summary`: ``g`` the 8-bit rows of one model, ``e`` and glyph (or both), ``t`` their
    targets, ``optimizer`` the setting summarised."""
    o = g[g.optimizer == optimizer]
    both = o.target.nunique() > 1 or (t.target.nunique() > 1)
    est = pooled(o, "reached") if both else image_rate(o, "reached")
    row = dict(model=o.model.iloc[0], e=o.e.iloc[0], target=BOTH if both else o.target.iloc[0], optimizer=optimizer,
               n_targets=len(t), n_skipped=int((~t.attacked).sum()), n_attacked=int(t.attacked.sum()),
               n_images=o.image.nunique(), reached=est.value, reached_low=est.low, reached_high=est.high,
               target_cosine=o.target_cosine.mean())
    for name, other in (("vs_random", RANDOM_FRAME), ("vs_reference", optimizers.ORIGINAL)):
        if optimizer not in (RANDOM_FRAME, other) and (g.optimizer == other).any():
            d = _paired(g, optimizer, other)
            row.update({name: d.value, f"{name}_low": d.low, f"{name}_high": d.high, f"{name}_p": d.p_value})
    return row


def targeted_summary(rows: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Per model x glyph (and :data:`BOTH`) x ``e`` x optimiser (8-bit): ``n_targets``, ``n_skipped``, ``n_attacked``, the
    share ``reached`` with its 95% interval (one glyph: exact over images; both: per image the mean, t) and the
    mean ``target_cosine``; for an attack its reached share minus the random frame's and, for the strongest
    optimiser, minus the reference's, paired per image (``vs_random*``, ``vs_reference*``: value, ``_low``,
    ``_high``, ``_p`` the exact test on the images that differ). ``rows``, ``targets``: of
    :func:`targeted_attacks`."""
    if rows is None or rows.empty:
        return pd.DataFrame()
    q = eight_bit(rows).assign(reached=lambda d: d.reached.astype(float))
    out = []
    for model in q.model.unique():
        for target in [*sorted(q[q.model == model].target.unique()), BOTH]:
            t = targets[targets.model == model]
            t = t if target == BOTH else t[t.target == target]
            for e, g in q[(q.model == model) & ((q.target == target) | (target == BOTH))].groupby("e", sort=True):
                out += [_summary_row(g, t, optimizer) for optimizer in [*ADVERSARIAL_OPTIMIZERS, RANDOM_FRAME]
                        if (g.optimizer == optimizer).any()]
    return pd.DataFrame(out)


def targeted_lines(summary: pd.DataFrame) -> list[str]:
    """Notebook 03's and the report's sentences on the targeted test (``summary``: :func:`targeted_summary`)."""
    if summary is None or summary.empty:
        return ["The targeted test attacked no target (every glyph was already close to its image's CAM)."]
    lines = []
    s = summary[summary.target == BOTH]
    counts = s.drop_duplicates("model")
    lines.append("Targeted shapes: " + "; ".join(
        f"{r.model} {r.n_targets} targets (glyphs {', '.join(GLYPHS)} on {r.n_targets // len(GLYPHS)} images), "
        f"{r.n_skipped} skipped" for r in counts.itertuples()) + f" (skipped: the cosine to the clean CAM already >= "
        f"{TARGET_SKIP}); reached = cosine to the target >= {TARGET_REACHED} (8-bit).")
    for r in s.itertuples():
        text = (f"{r.model}, e = {r.e}, {r.optimizer}: reached {100 * r.reached:.0f}% ({100 * r.reached_low:.0f}-"
                f"{100 * r.reached_high:.0f}%, per image over its glyphs), mean cosine to the target "
                f"{r.target_cosine:.2f}")
        if pd.notna(getattr(r, "vs_random", float("nan"))):
            text += (f"; minus the random frame {100 * r.vs_random:+.0f} points ({100 * r.vs_random_low:+.0f} to "
                     f"{100 * r.vs_random_high:+.0f}, exact p = {r.vs_random_p:.2g})")
        if pd.notna(getattr(r, "vs_reference", float("nan"))):
            text += (f"; minus {optimizers.ORIGINAL} {100 * r.vs_reference:+.0f} points ({100 * r.vs_reference_low:+.0f}"
                     f" to {100 * r.vs_reference_high:+.0f}, exact p = {r.vs_reference_p:.2g})")
        lines.append(text + ".")
    return lines


def example_figures(runs: dict, params: RunParams, targets: pd.DataFrame) -> list:
    """:func:`ama.figures.plots.target_figure` of each image of the first model's :func:`targeted_example` (attacked
    again); ``[]`` when no target was attacked. ``runs``: :func:`ama.runs.folder.load_models_and_images`; ``params``:
    the run's; ``targets``: its ``attack_targets``."""
    model, data = runs[params.models[0]]
    example = targeted_example(model, data, params, targets)
    return [] if example is None else [target_figure(example, k) for k in range(len(example))]
