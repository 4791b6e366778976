"""The attack's experiments (notebook 03): the paper's grid, the random-frame baseline, the optimiser ablation, the
targeted maps, and the 8-bit adversarial images a run keeps for notebook 05.

* :func:`grid_plan` / :func:`run_grid`: the reference (``flip``) at every ``e`` and the run's ``n_iter``, and at
  ``n_iter`` 50 (the authors' 2021 code) at e = 1, 2; ``keep`` at the smallest ``e``; the random frame at every ``e``.
* the optimiser ablation (:mod:`ama.ablation`), computed with the grid;
* :func:`seed_plan` / :func:`run_seeds`: the reference attack from other starting noises;
* :func:`attack_grid`: both, as the ``attack`` experiment of :mod:`ama.experiments` (per-image tables).
* :func:`targeted`: pull the CAM towards a glyph or the mirrored clean CAM, per optimiser.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from . import optimizers, shapes
from .ablation import (ADVERSARIAL_OPTIMIZERS, ablation_plan, ablation_summary, ingredient_plan, ingredient_summary,
                       run_ablation, run_ingredients, study_halves)
from .artifacts import TABLES
from .attack import attack_batch, evaluate_images, marginal_attack, random_frame
from .attack_result import RANDOM, AttackResult, GridKey, OptimizerKey
from .cam import cam
from .cam_model import CAMModel
from .data import load_image
from .intervals import wilson
from .metrics import cosine, history_table, summary_table
from .params import E, PAPER_N_ITER, SEED, RunParams
from .paths import resolve
from .plots import attack_rows_figure
from .protocol import run_names
from .selectors import attack_rows, eight_bit, original_attack
from .results import image_major, save_png

ORIGINAL, STRONGEST = optimizers.ORIGINAL, optimizers.STRONGEST


# --- the paper's grid ------------------------------------------------------------------------------
SEED_E = (1, 2)  # the paper's headline widths: attacked again with other seeds, and at the 2021 code's n_iter


def headline_widths(p: RunParams) -> list[int]:
    """The run's widths of :data:`SEED_E` (else its smallest)."""
    return [e for e in p.e if e in SEED_E] or [min(p.e)]


def grid_plan(params: RunParams) -> dict:
    """The attack grid of a run (keyword arguments of :func:`run_grid`). ``grid="paper"``: the reference (``flip``) at
    every ``e`` and the run's ``n_iter``, and at ``n_iter`` :data:`~ama.params.PAPER_N_ITER` at the widths of
    :data:`SEED_E` (time); ``keep`` at the smallest ``e`` and the run's ``n_iter`` only. ``"slim"``: flip at every
    ``e`` and the run's ``n_iter`` only. The random-frame baseline at every ``e``. FAST: the run's ``n_iter`` only."""
    n_iters = sorted({params.n_iter} if params.fast or params.grid == "slim" else {PAPER_N_ITER, params.n_iter})
    modes = ("flip",) if params.grid == "slim" else ("flip", "keep")
    headline = headline_widths(params)
    return dict(e=list(params.e), n_iters=n_iters, modes=modes, lamb=params.lamb, seed=params.seed,
                mode_n_iters={"keep": [params.n_iter]}, mode_e={"keep": [min(params.e)]},
                n_iter_e={PAPER_N_ITER: headline} if PAPER_N_ITER != params.n_iter else {})


def run_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=E, n_iters=(PAPER_N_ITER,),
             modes=("flip", "keep"), lamb: float | None = None, seed: int = SEED, mode_n_iters: dict | None = None,
             mode_e: dict | None = None, n_iter_e: dict | None = None, history: bool = True, progress: bool = True):
    """Attack the batch ``x`` for every ``e`` x ``n_iter`` x ``mode`` and add the random-frame baseline per ``e``.

    ``mode_n_iters`` / ``mode_e``: per mode, the ``n_iter`` / ``e`` values to run (default: all); ``n_iter_e``: per
    ``n_iter``, the ``e`` values to run it at (default: all); ``lamb`` None: the attack's default. Returns
    ``(results, table)``: ``results[GridKey(setting, e, n_iter, mode)]`` -> :class:`AttackResult` (``setting``
    ``"attack"`` or ``"random_frame"``, the baseline with ``n_iter`` 0 and mode ``"random"``) and all metric rows
    with a ``setting`` column. Histories are kept for every attack when ``history``.
    """
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    widths = [e] if isinstance(e, int) else list(e)
    mode_n_iters, mode_e, n_iter_e = mode_n_iters or {}, mode_e or {}, n_iter_e or {}
    kw = {} if lamb is None else {"lamb": lamb}
    jobs = [(w, it, mode) for w in widths for mode in modes for it in mode_n_iters.get(mode, n_iters)
            if w in mode_e.get(mode, widths) and w in n_iter_e.get(it, widths)]
    results, frames = {}, []
    for w in widths:
        r = random_frame(model, x, e=w, seed=seed, names=names)
        results[GridKey("random_frame", w, 0, RANDOM)] = r
        frames.append(r.metrics.assign(setting="random_frame"))
    for w, it, mode in tqdm(jobs, desc=f"AMA {model.name}", mininterval=30, disable=not progress):
        r = marginal_attack(model, x, e=w, n_iter=it, mode=mode, seed=seed, return_history=history, names=names, **kw)
        results[GridKey("attack", w, it, mode)] = r
        frames.append(r.metrics.assign(setting="attack"))
    table = pd.concat(frames, ignore_index=True)
    cols = list(table.columns)
    cols.insert(cols.index("quantized"), cols.pop(cols.index("setting")))
    return results, table[cols]


# --- seeds ----------------------------------------------------------------------------------------


def seed_plan(params: RunParams) -> list[tuple[str, int, int]]:
    """``(optimizer, e, seed)`` of the seed study: the reference optimiser at each ``e`` of :data:`SEED_E` in the run
    (else the smallest; ``grid="slim"``: the smallest only, time), with the run's seed and the next ``n_seeds - 1``
    (none when ``n_seeds`` is 1)."""
    if params.n_seeds < 2:
        return []
    widths = [min(params.e)] if params.grid == "slim" else headline_widths(params)
    return [(ORIGINAL, e, params.seed + k) for e in widths for k in range(params.n_seeds)]


def run_seeds(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, results: dict,
              progress: bool = True, made: list | None = None) -> pd.DataFrame:
    """The metric rows of :func:`seed_plan` (flip, the optimiser's defaults, the run's ``n_iter``), the run's own seed
    reused from ``results`` (keyed as :func:`run_ablation` keys them), the others attacked here (their
    :class:`AttackResult` appended to ``made``)."""
    from tqdm import tqdm

    frames = []
    for optimizer, e, seed in tqdm(seed_plan(params), desc=f"seeds {model.name}", mininterval=30,
                                   disable=not progress):
        key = OptimizerKey.default(optimizer, e, params.n_iter)
        r = results[key] if seed == params.seed and key in results else marginal_attack(
            model, x, e=e, n_iter=params.n_iter, lamb=params.lamb, seed=seed, names=names, optimizer=optimizer)
        if made is not None:
            made.append(r)
        frames.append(r.metrics)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def with_labels(table: pd.DataFrame, names: Sequence[str], labels) -> pd.DataFrame:
    """``table``'s attack rows with the column ``label`` (the true class, -1 unknown) and ``fooled`` measured against
    it where it is known (``SCIENCE.md`` section 7: the 8-bit image's top-1 is not the true label); for the correctly
    classified images the protocol attacks, that is the prediction changing."""
    if table.empty or labels is None:
        return table
    label = table.image.map(dict(zip(names, (int(k) for k in labels))))
    table = table.copy()
    table.insert(table.columns.get_loc("clean_class"), "label", label.astype(int))
    table["fooled"] = table.fooled.where(label < 0, table.adv_class != label)
    return table


# --- the experiment --------------------------------------------------------------------------------
def attack_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
                progress: bool = True, labels=None) -> tuple[dict[str, pd.DataFrame], dict | None]:
    """Tables ``attack_metrics`` (image x setting x quantised), ``attack_history`` (image x setting x iteration),
    ``attack_ablation`` (:func:`ablation_plan`; the reference's runs are shared with the grid), ``attack_seeds``
    (:func:`seed_plan`, when ``n_seeds`` > 1) and ``attack_ingredients`` (the ingredient study on ``ablation_images``
    of the run's images, :func:`ama.ablation.study_halves`; runs of the grid and the seeds reused), and the
    :class:`AttackResult` of every setting (for figures): ``("attack" | "random_frame", e, n_iter, mode)`` of the
    grid, ``(optimizer, variant, e, n_iter, mode)`` of the ablation. ``labels``: the images' true classes
    (:func:`with_labels`). ``out_dir``: where the 8-bit adversarial images of :data:`ADVERSARIAL_OPTIMIZERS` are saved
    (:func:`save_adversarial`). Images are attacked :func:`ama.attack.attack_batch` at a time (an image's result does
    not depend on its batch but for float rounding); with more than one batch no results are kept (None: the figures
    attack their few images again)."""
    size = attack_batch(x.device)
    cut = [slice(k, k + size) for k in range(0, len(x), size)]
    halves = study_halves(run_names(params, out_dir, names), params.ablation_images)
    parts = [_attack_batch(model, x[c], list(names[c]), params, out_dir, progress,
                           None if labels is None else labels[c], halves) for c in cut]
    present = dict.fromkeys(name for t, _ in parts for name in t)  # the ingredient study's images are in few batches
    tables = {name: pd.concat([t[name] for t, _ in parts if name in t], ignore_index=True) for name in present}
    return image_major(tables, names), parts[0][1] if len(parts) == 1 else None


def _attack_batch(model, x, names, params, out_dir, progress, labels, halves) -> tuple[dict[str, pd.DataFrame], dict]:
    results, table = run_grid(model, x, names, **grid_plan(params), progress=progress)
    attacks = {k: r for k, r in results.items() if k.setting == "attack"}
    history = history_table(attacks)
    shared = {OptimizerKey.default(ORIGINAL, k.e, k.n_iter, k.mode): r for k, r in attacks.items()}
    abl = run_ablation(model, x, names, **ablation_plan(params), results=shared, progress=progress)
    results.update(shared)
    made = list(results.values())
    seeds = run_seeds(model, x, names, params, results, progress, made)
    if out_dir is not None:
        save_adversarial(results, params, out_dir)
    ingredients = run_ingredients(model, x, names, halves, **ingredient_plan(params), made=made, progress=progress)
    tables = {TABLES.attack_metrics: table, TABLES.attack_history: history, TABLES.attack_ablation: abl}
    if not seeds.empty:
        tables[TABLES.attack_seeds] = seeds
    if not ingredients.empty:
        tables[TABLES.attack_ingredients] = ingredients
    tables = {k: (v if k == TABLES.attack_history else with_labels(v, names, labels)) for k, v in tables.items()}
    return image_major(tables, names), results


def summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``attack_summary`` (:func:`ama.metrics.summary_table`), ``attack_by_confidence`` (:func:`by_confidence`),
    ``attack_ablation_summary`` (:func:`ablation_summary`) and ``attack_seed_spread`` (:func:`seed_spread`) from the
    per-image tables present."""
    out = {}
    if TABLES.attack_metrics in tables:
        out[TABLES.attack_summary] = summary_table(tables[TABLES.attack_metrics])
        out[TABLES.attack_by_confidence] = by_confidence(tables[TABLES.attack_metrics])
    if TABLES.attack_ablation in tables:
        out[TABLES.attack_ablation_summary] = ablation_summary(tables[TABLES.attack_ablation])
    if TABLES.attack_seeds in tables:
        out[TABLES.attack_seed_spread] = seed_spread(tables[TABLES.attack_seeds])
    if TABLES.attack_ingredients in tables:
        out[TABLES.attack_ingredients_summary] = ingredient_summary(tables[TABLES.attack_ingredients])
    return out


TERCILES = ("low", "middle", "high")


def by_confidence(metrics: pd.DataFrame) -> pd.DataFrame:
    """The reference attack's fooling rate (flip, the run's largest ``n_iter``, 8-bit) per model, ``e`` and tercile of
    the clean confidence (the model's images cut at its 1/3 and 2/3 quantiles): ``n_images``, ``fooled``,
    ``fooling_rate`` with its Wilson interval (``low``, ``high``) and the tercile's confidence range."""
    rows = original_attack(metrics)
    out = []
    for model, g in rows.groupby("model", sort=False):
        conf = g.drop_duplicates("image").set_index("image").clean_conf
        if len(conf) < len(TERCILES):  # too few images to cut: one group
            tercile = pd.Series("all", index=conf.index)
        else:
            tercile = pd.qcut(conf.rank(method="first"), len(TERCILES), labels=list(TERCILES))
        for (e, t), h in g.assign(tercile=g.image.map(tercile)).groupby(["e", "tercile"], observed=True):
            k, n = int(h.fooled.sum()), len(h)
            lo, hi = wilson(k, n)
            out.append(dict(model=model, e=e, tercile=t, conf_min=h.clean_conf.min(), conf_max=h.clean_conf.max(),
                            n_images=n, fooled=k, fooling_rate=k / n, low=lo, high=hi))
    return pd.DataFrame(out)


def seed_spread(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per model, optimiser and ``e`` (8-bit rows of ``attack_seeds``): the fooling rate and mean CAM cosine of each
    seed summarised across seeds: ``n_seeds``, their mean, standard deviation, minimum and maximum."""
    q = eight_bit(seeds)
    per_seed = q.groupby(["model", "optimizer", "e", "seed"]).agg(fooling_rate=("fooled", "mean"),
                                                                  cam_cosine=("cam_cosine", "mean"))
    out = per_seed.groupby(["model", "optimizer", "e"]).agg(
        n_seeds=("fooling_rate", "size"), fooling_rate=("fooling_rate", "mean"), fooling_sd=("fooling_rate", "std"),
        fooling_min=("fooling_rate", "min"), fooling_max=("fooling_rate", "max"), cam_cosine=("cam_cosine", "mean"),
        cam_cosine_sd=("cam_cosine", "std"))
    return out.reset_index()


SUMMARY_MARKDOWN_DROP = ("iou_0.4", "iou_0.6")


def summary_markdown(summary: pd.DataFrame) -> str:
    """``attack_summary`` as a Markdown table (rounded to 3 digits; the IoU at 0.4 and 0.6 left out for width)."""
    return summary.drop(columns=list(SUMMARY_MARKDOWN_DROP)).round(3).to_markdown(index=False) + "\n"


SUMMARY_COLUMNS = ["model", "e", "n_iter", "mode", "setting", "quantized", "n_images", "fooling_rate", "cam_cosine",
                   "cam_spearman", "iou_0.5", "top20_iou", "pointing_rate", "random_fooling_rate", "random_cam_cosine"]


def headline(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e`` and ``n_iter`` of the reference attack (flip, 8-bit) beside the random frame."""
    head = attack_rows(summary, "flip")
    return [f"{r.model} e={r.e} n_iter={r.n_iter}: fooling {r.fooling_rate:.0%} (random frame "
            f"{r.random_fooling_rate:.0%}), CAM cosine {r.cam_cosine:.3f} (random frame {r.random_cam_cosine:.3f})"
            for r in head.itertuples()]


def keep_line(metrics: pd.DataFrame, model: str) -> str:
    """How the keep mode did for ``model`` (8-bit rows of ``attack_metrics``): labels kept and their CAM cosine."""
    rows = attack_rows(metrics[metrics.model == model], "keep")
    if rows.empty:
        return "keep mode: not in this run's grid (GRID=slim); the figure attacks one image in keep mode"
    kept = ~rows.fooled.astype(bool)
    return (f"keep mode, e = {', '.join(str(e) for e in sorted(rows.e.unique()))}: label kept for {int(kept.sum())} "
            f"of {len(rows)} images (8-bit); mean CAM cosine where kept {rows[kept].cam_cosine.mean():.3f}")


# --- the adversarial images a run keeps ------------------------------------------------------------
def adversarial_dir(out_dir, model: str, optimizer: str, e: int, n_iter: int) -> Path:
    """Folder of one setting's 8-bit adversarial PNGs (flip, the optimiser's defaults): ``<image name>.png``."""
    return resolve(out_dir) / "adversarial" / model / f"{optimizer}_e{e}_it{n_iter}"


def save_adversarial(results: dict, params: RunParams, out_dir) -> None:
    """Save the 8-bit adversarial images (lossless PNGs, exactly ``adv_q``) of each optimiser of
    :data:`ADVERSARIAL_OPTIMIZERS` at every ``e`` (flip, defaults, the run's ``n_iter``)."""
    n_iter = params.n_iter
    for key, r in results.items():
        if (isinstance(key, OptimizerKey) and key.optimizer in ADVERSARIAL_OPTIMIZERS
                and key == OptimizerKey.default(key.optimizer, key.e, n_iter)):
            folder = adversarial_dir(out_dir, r.params.model, key.optimizer, key.e, n_iter)
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

    folder = adversarial_dir(out_dir, model.name, optimizer, e, params.n_iter) if out_dir is not None else None
    paths = [folder / f"{name}.png" for name in names] if folder is not None else []
    if paths and all(path.is_file() for path in paths):
        adv = torch.cat([load_image(path, transform=to_tensor) for path in paths])
        try:
            return evaluate_images(model, x, adv, e=e, names=names,
                                   params=dict(n_iter=params.n_iter, lamb=params.lamb, seed=params.seed,
                                               **optimizers.settings(optimizer)))
        except ValueError as err:
            warnings.warn(f"{folder}: {err}; attacking again")
    return marginal_attack(model, x, e=e, n_iter=params.n_iter, lamb=params.lamb, seed=params.seed, names=names, optimizer=optimizer)


# --- the figures' attacks: of the run, or recomputed for the shown images -------------------------------
def example_images(table: pd.DataFrame, model: str, names: Sequence[str], e: int, n_iter: int, k: int = 4) -> list[int]:
    """Indices into ``names`` of up to ``k`` images to show, failures included: up to ``k - k // 2`` that the reference
    attack (flip, 8-bit) fooled at frame width ``e`` and ``k // 2`` it did not (either group filling in when the
    other is short), each in image order, the fooled first."""
    rows = attack_rows(table[(table.model == model) & (table.e == e) & (table.n_iter == n_iter)], "flip")
    fooled = dict(zip(rows.image, rows.fooled))
    yes = [i for i in range(len(names)) if fooled.get(names[i], False)]
    no = [i for i in range(len(names)) if not fooled.get(names[i], False)]
    n_no = min(len(no), max(k // 2, k - len(yes)))
    return (yes[:k - n_no] + no[:n_no])[:k]


def attack_examples(model: CAMModel, data, params: RunParams, table: pd.DataFrame, results: dict | None = None,
                    k: int = 4, widths=None) -> tuple[dict, list[int]]:
    """``({e: AttackResult}, indices)`` of the reference attack (flip, the run's ``n_iter``) at each ``e`` of ``widths``
    (default: the run's) for the images of :func:`example_images`; ``indices`` index the results' batch. ``results``:
    the run's own (reused), else the shown images are attacked again (a sharded run keeps no tensors)."""
    widths = list(params.e) if widths is None else list(widths)
    shown = example_images(table, model.name, data.names, min(params.e), params.n_iter, k)
    if results is not None:
        return {e: results[GridKey("attack", e, params.n_iter, "flip")] for e in widths}, shown
    x, names = data.images[shown], [data.names[i] for i in shown]
    return {e: marginal_attack(model, x, e=e, n_iter=params.n_iter, lamb=params.lamb, seed=params.seed, names=names)
            for e in widths}, list(range(len(shown)))


def example_figures(runs: dict, params: RunParams, table: pd.DataFrame, results_by_model: dict | None = None,
                    k: int = 4) -> list:
    """Per model of ``runs`` (:func:`ama.runs.load_runs`), :func:`ama.plots.attack_rows_figure` of the reference
    attack at the smallest ``e`` on up to ``k`` images of :func:`example_images`, failures included."""
    figs = []
    e = min(params.e)
    for name, (model, data) in runs.items():
        results = results_by_model.get(name) if results_by_model else None
        by_e, shown = attack_examples(model, data, params, table, results, k, widths=[e])
        figs.append(attack_rows_figure(by_e[e], shown))
    return figs


def keep_example(model: CAMModel, data, params: RunParams, table: pd.DataFrame, results: dict | None = None):
    """``(AttackResult, index)`` of the keep-mode attack for the image whose label was kept (8-bit) with the
    lowest CAM cosine; reused from ``results`` or attacked again alone."""
    plan = grid_plan(params)
    e, n_iter = min(plan["mode_e"]["keep"]), min(plan["mode_n_iters"]["keep"])
    rows = attack_rows(table[(table.model == model.name) & (table.e == e) & (table.n_iter == n_iter)], "keep")
    score = dict(zip(rows.image, rows.cam_cosine.where(~rows.fooled, 2.0)))
    best = min(range(len(data.names)), key=lambda i: (score.get(data.names[i], 3.0), i))
    if results is not None and GridKey("attack", e, n_iter, "keep") in results:
        return results[GridKey("attack", e, n_iter, "keep")], best
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
    e = TARGETED_E if TARGETED_E in params.e else min(params.e)
    x, names = data.images[:len(TARGETS)], list(data.names[:len(TARGETS)])
    with torch.no_grad():
        cams = cam(model, x.to(model.device)).cpu()
    makers = (lambda k: shapes.glyph(tuple(cams.shape[-2:]), "X"), lambda k: shapes.flipped(cams[k]))
    target_maps = torch.stack([makers[k](k) for k in range(len(names))])
    frames, reference = [], None
    for optimizer in ADVERSARIAL_OPTIMIZERS:
        r = marginal_attack(model, x, e=e, n_iter=params.n_iter, lamb=params.lamb, target_map=target_maps, seed=params.seed,
                            names=names, optimizer=optimizer)
        per_image = pd.DataFrame(dict(image=names, target=list(TARGETS[:len(names)]),
                                      clean_target_cosine=cosine(r.clean_cam, r.target_map).numpy()))
        frames.append(r.metrics.merge(per_image, on="image", how="left", sort=False))
        reference = r if optimizer == ORIGINAL else reference
    return pd.concat(frames, ignore_index=True), reference
