"""The optimiser ablation (notebook 03, ``SCIENCE.md`` section 6): the reference optimiser against the stronger ones
of :mod:`ama.optimizers` at the same budget (passes per image), each ingredient switched on and off.

* :func:`ablation_plan`: what a run computes (``ablation="strongest"``: the reference and the strongest at every
  ``e``; ``"full"``: every optimiser, the budget curve and keep mode);
* :func:`run_ablation`: the attacks and their metric rows, reusing results already computed;
* :func:`ingredient_variants`: each optimiser's default and each ingredient switched;
* :func:`ablation_summary`, :func:`ablation_lines`: per setting, what the tables and the notebook show.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from . import optimizers
from .attack import marginal_attack
from .cam_model import CAMModel
from .params import RunParams

ADVERSARIAL_OPTIMIZERS = (optimizers.REFERENCE, optimizers.STRONGEST)  # at every e, their images kept (notebook 05)
INGREDIENTS = ("select", "restarts", "cam_loss", "label_loss")
_TOGGLE = {"select": {"best": "last", "last": "best"}, "cam_loss": {"normalized": "raw", "raw": "normalized"},
           "label_loss": {"ce": "margin", "margin": "ce"}}
ABLATION_E = (1, 2)            # frame widths of the budget curve and of the optimisers not kept as images (adam)
ABLATION_BUDGET_SHARE = 4      # the budget curve: n_iter / 4 and n_iter passes per image (the full study: 10 to 100)
ABLATION_KEEP = ADVERSARIAL_OPTIMIZERS  # keep mode at the smallest e: the reference and the default strongest


def ingredient_variants(optimizer_names=optimizers.NAMES, ingredients=INGREDIENTS) -> list[dict]:
    """Per optimiser its default settings (``variant`` ``"default"``) and, per ingredient, the default with that
    ingredient switched (``"select=last"``, ``"restarts=1"``, ``"cam_loss=raw"``, ...): ``select`` best <-> last,
    ``restarts`` 0 <-> 1 (restarts imply ``select="best"``), ``cam_loss`` normalized <-> raw, ``label_loss`` ce <->
    margin. Each a dict of :func:`ama.optimizers.settings` plus ``variant``."""
    out = []
    for opt in optimizer_names:
        base = optimizers.settings(opt)
        out.append({**base, "variant": "default"})
        for ing in ingredients:
            if ing not in INGREDIENTS:
                raise ValueError(f"unknown ingredient {ing!r}; use some of {', '.join(INGREDIENTS)}")
            s = dict(base)
            if ing == "restarts":
                s["restarts"] = 0 if base["restarts"] else 1
                if s["restarts"]:
                    s["select"] = "best"
            else:
                s[ing] = _TOGGLE[ing][base[ing]]
                if s["select"] == "last" and s["restarts"]:
                    continue  # restarts need the best iterate: no such variant
            out.append({**s, "variant": f"{ing}={s[ing]}"})
    return out


def ablation_plan(params: RunParams) -> dict:
    """The optimiser ablation of a run (keyword arguments of :func:`run_ablation`). ``ablation="strongest"``: the
    defaults of the optimisers of :data:`ADVERSARIAL_OPTIMIZERS` (the reference and the strongest) at every ``e`` and
    the run's ``n_iter``. ``"full"``: besides, every optimiser at ``e`` in :data:`ABLATION_E`, the budget curve
    (``n_iter / 4`` too) there and keep mode at the smallest ``e`` for :data:`ABLATION_KEEP`; no per-ingredient grid
    (time). FAST: the smallest ``e``, the FAST passes, every optimiser and each ingredient switched once."""
    p = params.fast_variant()
    low = min(p.e)
    common = dict(optimizer_names=list(optimizers.NAMES), keep_e=[low], keep_optimizers=list(ABLATION_KEEP),
                  lamb=p.lamb, seed=p.seed)
    if p.fast:
        return dict(e=[low], budgets=[p.n_iter], variant_e=[low], budget_e=[low], **common)
    if p.ablation == "strongest":
        return dict(e=list(p.e), budgets=[p.n_iter], variant_e=[], budget_e=[], **{
            **common, "optimizer_names": list(ADVERSARIAL_OPTIMIZERS), "keep_e": []})
    budgets = sorted({max(1, p.n_iter // ABLATION_BUDGET_SHARE), p.n_iter})
    few = [v for v in ABLATION_E if v in p.e] or [low]
    narrow = {o: few for o in optimizers.NAMES if o not in ADVERSARIAL_OPTIMIZERS}
    return dict(e=list(p.e), budgets=budgets, variant_e=[], budget_e=few, optimizer_e=narrow, **common)


def run_ablation(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=(1, 2, 4, 8), budgets=(10, 30, 100),
                 optimizer_names=optimizers.NAMES, ingredients=INGREDIENTS, variant_e=None, budget_e=None,
                 optimizer_e=None, keep_e=(), keep_optimizers=None, lamb: float | None = None, mode: str = "flip",
                 seed: int = 0, results: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Every optimiser's default at the largest budget and every ``e`` (``optimizer_e``: ``{optimizer: [e, ...]}``
    narrows it per optimiser), at every budget (``n_iter`` in ``budgets``, passes per image) at each ``e`` of
    ``budget_e`` (default: every ``e``), each ingredient switched (:func:`ingredient_variants`) at the largest budget
    and each ``e`` of ``variant_e`` (default: every ``e``), and the default of each of ``keep_optimizers`` (default:
    all) in ``keep`` mode at the largest budget and each ``e`` of ``keep_e``. Returns the tidy table of
    :func:`ama.metrics.attack_metrics` rows (one per image x quantized) with the columns ``variant``, ``cam_loss``,
    ``label_loss`` and ``select`` added.

    ``results``: a dict of :class:`AttackResult` keyed ``(optimizer, variant, e, n_iter, mode)``; a setting found
    there is reused (e.g. the reference runs of :func:`run_grid`: ``("sign", "default", e, n_iter, "flip")``), the
    others are added to it."""
    from tqdm import tqdm

    widths = [e] if isinstance(e, int) else list(e)
    variant_e = widths if variant_e is None else variant_e
    budget_e = widths if budget_e is None else budget_e
    optimizer_e = optimizer_e or {}
    top = max(budgets)
    jobs = []
    for s in ingredient_variants(optimizer_names, ingredients):
        default = s["variant"] == "default"
        for w in optimizer_e.get(s["optimizer"], widths):
            for it in sorted(budgets):
                if (it == top and (default or w in variant_e)) or (default and w in budget_e):
                    jobs.append((s, w, it, mode))
            if default and w in keep_e and (keep_optimizers is None or s["optimizer"] in keep_optimizers):
                jobs.append((s, w, top, "keep"))
    results = {} if results is None else results
    kw = {} if lamb is None else {"lamb": lamb}
    frames = []
    for s, w, it, m in tqdm(jobs, desc=f"ablation {model.name}", mininterval=30, disable=not progress):
        key = (s["optimizer"], s["variant"], w, it, m)
        if key not in results:
            opt = {k: s[k] for k in ("optimizer", "restarts", "cam_loss", "label_loss", "select")}
            results[key] = marginal_attack(model, x, e=w, n_iter=it, mode=m, seed=seed, names=names, **opt, **kw)
        frames.append(results[key].metrics.assign(variant=s["variant"], cam_loss=s["cam_loss"],
                                                  label_loss=s["label_loss"], select=s["select"]))
    return pd.concat(frames, ignore_index=True)


def ablation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per ``model, mode, optimizer, variant, e, n_iter, quantized``: ``fooling_rate``, ``cam_cosine`` (means),
    ``kept_rate`` (share of images whose label is kept) and ``n_images``, from a :func:`run_ablation` table."""
    if "mode" not in table:
        table = table.assign(mode="flip")
    keys = ["model", "mode", "optimizer", "variant", "e", "n_iter", "quantized"]
    g = table.assign(kept=~table.fooled.astype(bool)).groupby(keys, sort=True)
    out = g.agg(fooling_rate=("fooled", "mean"), cam_cosine=("cam_cosine", "mean"), kept_rate=("kept", "mean"),
                n_images=("image", "size"))
    return out.reset_index()


def ablation_lines(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e``, mode, optimiser and variant of :func:`ablation_summary` at the largest budget
    (8-bit): fooling rate (flip) or labels kept (keep), and the CAM cosine."""
    top = summary[summary.quantized.astype(bool) & (summary.n_iter == summary.n_iter.max())]
    return [f"{r.model} e={r.e} {r.mode:4s} {r.optimizer:5s} {r.variant:18s}: "
            + (f"fooling {r.fooling_rate:.0%}" if r.mode == "flip" else f"label kept {r.kept_rate:.0%}")
            + f", CAM cosine {r.cam_cosine:.3f}" for r in top.itertuples()]
