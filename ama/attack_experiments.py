"""The attack's experiments (notebook 03): the paper's grid, the random-frame baseline, the optimiser ablation, the
targeted maps, and the 8-bit adversarial images a run keeps for notebook 05.

* :func:`grid_plan` / :func:`run_grid`: the reference (``flip``) at every ``e`` and at ``n_iter`` 50 (the authors'
  2021 code) and the run's ``n_iter``; ``keep`` at the smallest ``e``; the random frame at every ``e``.
* :func:`ablation_plan` / :func:`run_ablation`: the optimisers of :mod:`ama.optimizers` at the same budget; each
  ingredient switched (:func:`ingredient_variants`) for the full study.
* :func:`attack_grid`: both, as the ``attack`` experiment of :mod:`ama.experiments` (per-image tables).
* :func:`targeted`: pull the CAM towards a glyph or the mirrored clean CAM, per optimiser.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from . import optimizers
from .attack import marginal_attack, random_frame
from .attack_result import AttackResult
from .cam_model import CAMModel
from .metrics import history_table, summary_table
from .params import PAPER_N_ITER, RunParams
from .paths import resolve
from .results import image_major, save_png

REFERENCE, STRONGEST = optimizers.REFERENCE, optimizers.STRONGEST
ADVERSARIAL_OPTIMIZERS = (REFERENCE, STRONGEST)  # the images a run keeps (notebook 05): the reference, the strongest


# --- the paper's grid ------------------------------------------------------------------------------
def grid_plan(params: RunParams) -> dict:
    """The attack grid of a run (keyword arguments of :func:`run_grid`): the reference (``flip``) at every ``e`` and
    at ``n_iter`` :data:`~ama.params.PAPER_N_ITER` and the run's ``n_iter``; ``keep`` at the smallest ``e`` and the
    run's ``n_iter`` only (time); the random-frame baseline at every ``e``. FAST: the run's ``n_iter`` only."""
    p = params.fast_variant()
    n_iters = sorted({p.n_iter} if p.fast else {PAPER_N_ITER, p.n_iter})
    return dict(e=list(p.e), n_iters=n_iters, modes=("flip", "keep"), lamb=p.lamb, seed=p.seed,
                mode_n_iters={"keep": [p.n_iter]}, mode_e={"keep": [min(p.e)]})


def run_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=(1, 2, 4, 8), n_iters=(PAPER_N_ITER,),
             modes=("flip", "keep"), lamb: float | None = None, seed: int = 0, mode_n_iters: dict | None = None,
             mode_e: dict | None = None, history: bool = True, progress: bool = True):
    """Attack the batch ``x`` for every ``e`` x ``n_iter`` x ``mode`` and add the random-frame baseline per ``e``.

    ``mode_n_iters`` / ``mode_e``: per mode, the ``n_iter`` / ``e`` values to run (default: all); ``lamb`` None: the
    attack's default. Returns ``(results, table)``: ``results[(setting, e, n_iter, mode)]`` -> :class:`AttackResult`
    (``setting`` ``"attack"`` or ``"random_frame"``, the baseline with ``n_iter`` 0 and mode ``"random"``) and all
    metric rows with a ``setting`` column. Histories are kept for every attack when ``history``.
    """
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    widths = [e] if isinstance(e, int) else list(e)
    mode_n_iters, mode_e = mode_n_iters or {}, mode_e or {}
    kw = {} if lamb is None else {"lamb": lamb}
    jobs = [(w, it, mode) for w in widths for mode in modes for it in mode_n_iters.get(mode, n_iters)
            if w in mode_e.get(mode, widths)]
    results, frames = {}, []
    for w in widths:
        r = random_frame(model, x, e=w, seed=seed, names=names)
        results[("random_frame", w, 0, "random")] = r
        frames.append(r.metrics.assign(setting="random_frame"))
    for w, it, mode in tqdm(jobs, desc=f"AMA {model.name}", mininterval=30, disable=not progress):
        r = marginal_attack(model, x, e=w, n_iter=it, mode=mode, seed=seed, return_history=history, names=names, **kw)
        results[("attack", w, it, mode)] = r
        frames.append(r.metrics.assign(setting="attack"))
    table = pd.concat(frames, ignore_index=True)
    cols = list(table.columns)
    cols.insert(cols.index("quantized"), cols.pop(cols.index("setting")))
    return results, table[cols]


# --- the optimiser ablation ------------------------------------------------------------------------
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
    """The optimiser ablation of a run (keyword arguments of :func:`run_ablation`): the defaults of the optimisers of
    :data:`ADVERSARIAL_OPTIMIZERS` at every ``e`` and of every optimiser at ``e`` in :data:`ABLATION_E`, at the run's
    ``n_iter``; the budget curve (``n_iter / 4`` too) at ``e`` in :data:`ABLATION_E`; keep mode at the smallest ``e``
    for :data:`ABLATION_KEEP`; no per-ingredient grid (time). FAST: the smallest ``e``, the FAST passes, and each
    ingredient switched once."""
    p = params.fast_variant()
    low = min(p.e)
    common = dict(optimizer_names=list(optimizers.NAMES), keep_e=[low], keep_optimizers=list(ABLATION_KEEP),
                  lamb=p.lamb, seed=p.seed)
    if p.fast:
        return dict(e=[low], budgets=[p.n_iter], variant_e=[low], budget_e=[low], **common)
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


# --- the experiment --------------------------------------------------------------------------------
def attack_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
                progress: bool = True) -> tuple[dict[str, pd.DataFrame], dict]:
    """Tables ``attack_metrics`` (image x setting x quantised), ``attack_history`` (image x setting x iteration) and
    ``attack_ablation`` (:func:`ablation_plan`; the reference's runs are shared with the grid), and the
    :class:`AttackResult` of every setting (for figures): ``("attack" | "random_frame", e, n_iter, mode)`` of the
    grid, ``(optimizer, variant, e, n_iter, mode)`` of the ablation. ``out_dir``: where the 8-bit adversarial images
    of :data:`ADVERSARIAL_OPTIMIZERS` are saved (:func:`save_adversarial`)."""
    results, table = run_grid(model, x, names, **grid_plan(params), progress=progress)
    history = history_table({k: v for k, v in results.items() if k[0] == "attack"})
    shared = {(REFERENCE, "default", e, it, mode): r for (setting, e, it, mode), r in results.items()
              if setting == "attack"}
    abl = run_ablation(model, x, names, **ablation_plan(params), results=shared, progress=progress)
    results.update(shared)
    if out_dir is not None:
        save_adversarial(results, params, out_dir)
    tables = dict(attack_metrics=table, attack_history=history, attack_ablation=abl)
    return image_major(tables, names), results


def summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``attack_summary`` (:func:`ama.metrics.summary_table`) and ``attack_ablation_summary``
    (:func:`ablation_summary`) from the per-image tables present."""
    out = {}
    if "attack_metrics" in tables:
        out["attack_summary"] = summary_table(tables["attack_metrics"])
    if "attack_ablation" in tables:
        out["attack_ablation_summary"] = ablation_summary(tables["attack_ablation"])
    return out


SUMMARY_MARKDOWN_DROP = ("iou_0.4", "iou_0.6")


def summary_markdown(summary: pd.DataFrame) -> str:
    """``attack_summary`` as a Markdown table (rounded to 3 digits; the IoU at 0.4 and 0.6 left out for width)."""
    return summary.drop(columns=list(SUMMARY_MARKDOWN_DROP)).round(3).to_markdown(index=False) + "\n"


SUMMARY_COLUMNS = ["model", "e", "n_iter", "mode", "setting", "quantized", "n_images", "fooling_rate", "cam_cosine",
                   "cam_spearman", "iou_0.5", "top20_iou", "pointing_rate", "random_fooling_rate", "random_cam_cosine"]


def headline(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e`` and ``n_iter`` of the reference attack (flip, 8-bit) beside the random frame."""
    head = summary[(summary.setting == "attack") & (summary["mode"] == "flip") & summary.quantized.astype(bool)]
    return [f"{r.model} e={r.e} n_iter={r.n_iter}: fooling {r.fooling_rate:.0%} (random frame "
            f"{r.random_fooling_rate:.0%}), CAM cosine {r.cam_cosine:.3f} (random frame {r.random_cam_cosine:.3f})"
            for r in head.itertuples()]


def keep_line(metrics: pd.DataFrame, model: str) -> str:
    """How the keep mode did for ``model`` (8-bit rows of ``attack_metrics``): labels kept and their CAM cosine."""
    rows = metrics[(metrics.model == model) & (metrics["mode"] == "keep") & metrics.quantized.astype(bool)]
    kept = ~rows.fooled.astype(bool)
    return (f"keep mode, e = {', '.join(str(e) for e in sorted(rows.e.unique()))}: label kept for {int(kept.sum())} "
            f"of {len(rows)} images (8-bit); mean CAM cosine where kept {rows[kept].cam_cosine.mean():.3f}")


def ablation_lines(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e``, mode, optimiser and variant of :func:`ablation_summary` at the largest budget
    (8-bit): fooling rate (flip) or labels kept (keep), and the CAM cosine."""
    top = summary[summary.quantized.astype(bool) & (summary.n_iter == summary.n_iter.max())]
    return [f"{r.model} e={r.e} {r.mode:4s} {r.optimizer:5s} {r.variant:18s}: "
            + (f"fooling {r.fooling_rate:.0%}" if r.mode == "flip" else f"label kept {r.kept_rate:.0%}")
            + f", CAM cosine {r.cam_cosine:.3f}" for r in top.itertuples()]


# --- the adversarial images a run keeps ------------------------------------------------------------
def adversarial_dir(out_dir, model: str, optimizer: str, e: int, n_iter: int) -> Path:
    """Folder of one setting's 8-bit adversarial PNGs (flip, the optimiser's defaults): ``<image name>.png``."""
    return resolve(out_dir) / "adversarial" / model / f"{optimizer}_e{e}_it{n_iter}"


def save_adversarial(results: dict, params: RunParams, out_dir) -> None:
    """Save the 8-bit adversarial images (lossless PNGs, exactly ``adv_q``) of each optimiser of
    :data:`ADVERSARIAL_OPTIMIZERS` at every ``e`` (flip, defaults, the run's ``n_iter``)."""
    n_iter = params.fast_variant().n_iter
    for key, r in results.items():
        if len(key) == 5 and key[0] in ADVERSARIAL_OPTIMIZERS and key[1] == "default" and key[3:] == (n_iter, "flip"):
            folder = adversarial_dir(out_dir, r.params.model, key[0], key[2], n_iter)
            for name, image in zip(r.names, r.adv_q):
                path = folder / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_png(image, path)


def adversarial_result(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir,
                       optimizer: str, e: int) -> AttackResult:
    """The :class:`AttackResult` of ``optimizer`` (flip, its defaults, the run's ``n_iter``) at ``e`` for the images
    ``x`` named ``names``: from the PNGs the run saved in ``out_dir`` (two forward passes), else (none saved, or no
    ``out_dir``) attacked here."""
    from torchvision.transforms.functional import to_tensor  # uint8 k -> k / 255, exactly ama.attack.quantize's grid

    from .attack import evaluate_images
    from .data import load_image

    p = params.fast_variant()
    folder = adversarial_dir(out_dir, model.name, optimizer, e, p.n_iter) if out_dir is not None else None
    paths = [folder / f"{name}.png" for name in names] if folder is not None else []
    if paths and all(path.is_file() for path in paths):
        adv = torch.cat([load_image(path, transform=to_tensor) for path in paths])
        try:
            return evaluate_images(model, x, adv, e=e, names=names,
                                   params=dict(n_iter=p.n_iter, lamb=p.lamb, seed=p.seed,
                                               **optimizers.settings(optimizer)))
        except ValueError as err:
            warnings.warn(f"{folder}: {err}; attacking again")
    return marginal_attack(model, x, e=e, n_iter=p.n_iter, lamb=p.lamb, seed=p.seed, names=names, optimizer=optimizer)


# --- the figures' attacks: of the run, or recomputed for the shown images -------------------------------
def example_images(table: pd.DataFrame, model: str, names: Sequence[str], e: int, n_iter: int, k: int = 3) -> list[int]:
    """Indices into ``names`` of up to ``k`` images to show: those the reference attack (flip, 8-bit) fooled at
    frame width ``e`` first, in image order."""
    rows = table[(table.model == model) & (table.setting == "attack") & (table["mode"] == "flip") & (table.e == e)
                 & (table.n_iter == n_iter) & table.quantized.astype(bool)]
    fooled = dict(zip(rows.image, rows.fooled.astype(bool)))
    order = sorted(range(len(names)), key=lambda i: (not fooled.get(names[i], False), i))
    return order[:k]


def attack_examples(model: CAMModel, data, params: RunParams, table: pd.DataFrame, results: dict | None = None,
                    k: int = 3) -> tuple[dict, list[int]]:
    """``({e: AttackResult}, indices)`` of the reference attack (flip, the run's ``n_iter``) for the images of
    :func:`example_images`; ``indices`` index the results' batch. ``results``: the run's own (reused), else the
    shown images are attacked again (a sharded run keeps no tensors)."""
    p = params.fast_variant()
    shown = example_images(table, model.name, data.names, min(p.e), p.n_iter, k)
    if results is not None:
        return {e: results[("attack", e, p.n_iter, "flip")] for e in p.e}, shown
    x, names = data.images[shown], [data.names[i] for i in shown]
    return {e: marginal_attack(model, x, e=e, n_iter=p.n_iter, lamb=p.lamb, seed=p.seed, names=names)
            for e in p.e}, list(range(len(shown)))


def keep_example(model: CAMModel, data, params: RunParams, table: pd.DataFrame, results: dict | None = None):
    """``(AttackResult, index)`` of the keep-mode attack for the image whose label was kept (8-bit) with the
    lowest CAM cosine; reused from ``results`` or attacked again alone."""
    plan = grid_plan(params)
    e, n_iter = min(plan["mode_e"]["keep"]), min(plan["mode_n_iters"]["keep"])
    rows = table[(table.model == model.name) & (table["mode"] == "keep") & (table.e == e) & (table.n_iter == n_iter)
                 & table.quantized.astype(bool)]
    score = dict(zip(rows.image, rows.cam_cosine.where(~rows.fooled.astype(bool), 2.0)))
    best = min(range(len(data.names)), key=lambda i: (score.get(data.names[i], 3.0), i))
    if results is not None:
        return results[("attack", e, n_iter, "keep")], best
    r = marginal_attack(model, data.images[best:best + 1], e=e, n_iter=n_iter, lamb=plan["lamb"], mode="keep",
                        seed=plan["seed"], names=[data.names[best]])
    return r, 0


# --- targeted maps -------------------------------------------------------------------------------------
TARGETED_E = 2        # the targeted comparison's frame width (the smallest e of the run when 2 is not among them)
TARGETS = ("glyph X", "clean CAM flipped")  # image k of the first two gets target k


def targeted(model: CAMModel, data, params: RunParams) -> tuple[pd.DataFrame, AttackResult]:
    """The targeted attack (flip, pull the CAM towards a map) with each optimiser of :data:`ADVERSARIAL_OPTIMIZERS`
    at :data:`TARGETED_E` on the first two images: the letter "X" at CAM resolution (:func:`ama.shapes.glyph`) for
    the first, its own clean CAM mirrored left-right for the second. Returns the metric rows with the columns
    ``target`` (the target's name) and ``clean_target_cosine`` (clean CAM vs target), and the reference
    optimiser's result (for the figures)."""
    from . import shapes
    from .cam import cam
    from .metrics import cosine

    p = params.fast_variant()
    e = TARGETED_E if TARGETED_E in p.e else min(p.e)
    x, names = data.images[:len(TARGETS)], list(data.names[:len(TARGETS)])
    with torch.no_grad():
        cams = cam(model, x.to(model.device)).cpu()
    makers = (lambda k: shapes.glyph(tuple(cams.shape[-2:]), "X"), lambda k: shapes.flipped(cams[k]))
    target_maps = torch.stack([makers[k](k) for k in range(len(names))])
    frames, reference = [], None
    for optimizer in ADVERSARIAL_OPTIMIZERS:
        r = marginal_attack(model, x, e=e, n_iter=p.n_iter, lamb=p.lamb, target_map=target_maps, seed=p.seed,
                            names=names, optimizer=optimizer)
        per_image = pd.DataFrame(dict(image=names, target=list(TARGETS[:len(names)]),
                                      clean_target_cosine=cosine(r.clean_cam, r.target_map).numpy()))
        frames.append(r.metrics.merge(per_image, on="image", how="left", sort=False))
        reference = r if optimizer == REFERENCE else reference
    return pd.concat(frames, ignore_index=True), reference
