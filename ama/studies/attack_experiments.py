"""The attack's experiments (notebook 03): the paper's grid, the random-frame baseline, the optimiser ablation, the
targeted maps, and the 8-bit adversarial images a run keeps for notebook 05.

* :func:`grid_plan` / :func:`run_grid`: the reference (``flip``) at every ``e`` and the run's ``n_iter``, and at
  ``n_iter`` 50 (the authors' 2021 code) at e = 1, 2; ``keep`` at the smallest ``e``; the random frame at every ``e``.
* the optimiser ablation (:mod:`ama.studies.ablation`), computed with the grid;
* :func:`seed_plan` / :func:`run_seeds`: the reference attack from other starting noises;
* :func:`attack_grid`: both, as the ``attack`` experiment of :mod:`ama.studies.experiments` (per-image tables).
* the targeted shapes (:mod:`ama.studies.targeted_shapes`), computed with the grid.

Their summaries over images are in :mod:`ama.studies.attack_summaries`, the figures' examples in :mod:`ama.studies.attack_examples`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..artifacts import TABLES
from ..attack import optimizers
from ..attack.marginal import attack_batch, evaluate_images, marginal_attack, random_frame
from ..attack.result import RANDOM, AttackResult, GridKey, OptimizerKey
from ..inputs.images import load_image
from ..inputs.protocol import run_names
from ..kernels.cam_model import CAMModel
from ..kernels.metrics import attack_metrics, history_table, summary_table
from ..params import E, LAMB, PAPER_N_ITER, SEED, RunParams
from ..paths import resolve
from ..stats.rows import eight_bit
from ..store.tables import image_major, save_png
from .ablation import (ADVERSARIAL_OPTIMIZERS, ablation_plan, ablation_summary, ingredient_plan, ingredient_summary,
                       run_ablation, run_ingredients, study_halves)
from .attack_summaries import by_confidence, seed_spread
from .confidence import confidence_regression
from .targeted_shapes import targeted_attacks, targeted_images, targeted_summary

ORIGINAL, STRONGEST = optimizers.ORIGINAL, optimizers.STRONGEST


# --- the paper's grid ------------------------------------------------------------------------------
SEED_E = (1, 2)  # the paper's headline widths: attacked again with other seeds, and at the 2021 code's n_iter


def headline_widths(p: RunParams) -> list[int]:
    """The run's widths of :data:`SEED_E` (else its smallest). ``p``: the run's parameters."""
    return p.widths_among(SEED_E)


@dataclass(frozen=True)
class GridPlan:
    """The paper's attack grid as a run plans it: ``flip`` / ``keep`` attacks at frame widths ``e`` and ``n_iters``,
    restricted per mode (``mode_n_iters``, ``mode_e``: the values a mode runs at; absent: all) and per ``n_iter``
    (``n_iter_e``: the widths it runs at; absent: all), and the random frame at every ``e``."""

    e: tuple[int, ...] = E
    n_iters: tuple[int, ...] = (PAPER_N_ITER,)
    modes: tuple[str, ...] = ("flip", "keep")
    lamb: float = LAMB
    seed: int = SEED
    mode_n_iters: dict = field(default_factory=dict)
    mode_e: dict = field(default_factory=dict)
    n_iter_e: dict = field(default_factory=dict)

    def jobs(self) -> list[tuple[int, int, str]]:
        """``(e, n_iter, mode)`` of every attack of the grid, in the order they run."""
        return [(w, it, mode) for w in self.e for mode in self.modes for it in self.mode_n_iters.get(mode, self.n_iters)
                if w in self.mode_e.get(mode, self.e) and w in self.n_iter_e.get(it, self.e)]

    def first(self, mode: str) -> tuple[int, int]:
        """``(e, n_iter)``: the smallest width and ``n_iter`` at which ``mode`` runs."""
        return min(self.mode_e.get(mode, self.e)), min(self.mode_n_iters.get(mode, self.n_iters))


def grid_plan(params: RunParams) -> GridPlan:
    """The attack grid of a run. ``grid="paper"``: the original attack (``flip``) at every ``e`` and the run's
    ``n_iter``, and at ``n_iter`` :data:`~ama.params.PAPER_N_ITER` at the widths of :data:`SEED_E` (time); ``keep`` at
    the smallest ``e`` and the run's ``n_iter`` only. ``"slim"``: flip at every ``e`` and the run's ``n_iter`` only.
    The random-frame baseline at every ``e``. FAST: the run's ``n_iter`` only."""
    n_iters = sorted({params.n_iter} if params.fast or params.grid == "slim" else {PAPER_N_ITER, params.n_iter})
    modes = ("flip",) if params.grid == "slim" else ("flip", "keep")
    return GridPlan(e=tuple(params.e), n_iters=tuple(n_iters), modes=modes, lamb=params.lamb, seed=params.seed,
                    mode_n_iters={"keep": (params.n_iter,)}, mode_e={"keep": (min(params.e),)},
                    n_iter_e={PAPER_N_ITER: tuple(headline_widths(params))} if PAPER_N_ITER != params.n_iter else {})


def run_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], plan: GridPlan = GridPlan(),
             history: bool = True, progress: bool = True):
    """Attack the batch ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` at every job of ``plan`` and add the random-frame
    baseline per ``e``. Returns ``(results, table)``: ``results[GridKey(setting, e, n_iter, mode)]`` ->
    :class:`AttackResult` (``setting`` ``"attack"`` or ``"random_frame"``, the baseline with ``n_iter`` 0 and mode
    ``"random"``) and all metric rows with a ``setting`` column. Histories are kept for every attack when
    ``history``."""
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    results, frames = {}, []
    for w in plan.e:
        r = random_frame(model, x, e=w, seed=plan.seed, names=names)
        results[GridKey("random_frame", w, 0, RANDOM)] = r
        frames.append(r.metrics.assign(setting="random_frame"))
    for w, it, mode in tqdm(plan.jobs(), desc=f"AMA {model.name}", mininterval=30, disable=not progress):
        r = marginal_attack(model, x, e=w, n_iter=it, mode=mode, lamb=plan.lamb, seed=plan.seed,
                            return_history=history, names=names)
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



def masked_attack_rows(model: CAMModel, x: torch.Tensor, names: Sequence[str], masks: dict, params, labels=None,
                       batch: int | None = None, done: dict | None = None,
                       optimizer: str = ORIGINAL) -> list[tuple[str, torch.Tensor, pd.DataFrame]]:
    """The attack of ``optimizer`` (its defaults; the reference by default; ``params``' ``n_iter``, ``lamb``, ``seed``)
    at the run's smallest ``e`` confined to each
    mask of ``masks`` (``{name: (H, W) bool}``), ``batch`` images at a time (None: :func:`ama.attack.marginal.attack_batch`):
    per mask ``(name, mask, rows)``, the rows its 8-bit images' metrics with the true ``labels`` (:func:`with_labels`).
    ``done``: ``{name: AttackResult}`` already attacked on all of ``x`` (used instead of attacking again)."""
    e, batch, done = min(params.e), batch or attack_batch(x.device), done or {}
    out = []
    for name, mask in masks.items():
        results = [done[name]] if name in done else [
            marginal_attack(model, x[s:s + batch], e=e, n_iter=params.n_iter, lamb=params.lamb, seed=params.seed,
                            mask=mask, names=list(names[s:s + batch]), optimizer=optimizer)
            for s in range(0, len(x), batch)]
        rows = pd.concat([with_labels(eight_bit(attack_metrics(r)), names, labels) for r in results],
                         ignore_index=True)
        out.append((name, mask, rows))
    return out

# --- the experiment --------------------------------------------------------------------------------
def attack_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
                progress: bool = True, labels=None) -> tuple[dict[str, pd.DataFrame], dict | None]:
    """Tables ``attack_metrics`` (image x setting x quantised), ``attack_history`` (image x setting x iteration),
    ``attack_ablation`` (:func:`ablation_plan`; the reference's runs are shared with the grid), ``attack_seeds``
    (:func:`seed_plan`, when ``n_seeds`` > 1) and ``attack_ingredients`` (the ingredient study on ``ablation_images``
    of the run's images, :func:`ama.studies.ablation.study_halves`; runs of the grid and the seeds reused), and the
    :class:`AttackResult` of every setting (for figures): ``("attack" | "random_frame", e, n_iter, mode)`` of the
    grid, ``(optimizer, variant, e, n_iter, mode)`` of the ablation. ``labels``: the images' true classes
    (:func:`with_labels`). ``out_dir``: where the 8-bit adversarial images of :data:`ADVERSARIAL_OPTIMIZERS` are saved
    (:func:`save_adversarial`). Images are attacked :func:`ama.attack.marginal.attack_batch` at a time (an image's
    result does not depend on its batch but for float rounding); with more than one batch no results are kept (None: the
    figures attack their few images again)."""
    size = attack_batch(x.device)
    cut = [slice(k, k + size) for k in range(0, len(x), size)]
    reported = run_names(params, out_dir, names)
    halves, chosen = study_halves(reported, params.ablation_images), set(targeted_images(reported))
    parts = [_attack_batch(model, x[c], list(names[c]), params, out_dir, progress,
                           None if labels is None else labels[c], halves, chosen) for c in cut]
    present = dict.fromkeys(name for t, _ in parts for name in t)  # the ingredient study's images are in few batches
    tables = {name: pd.concat([t[name] for t, _ in parts if name in t], ignore_index=True) for name in present}
    return image_major(tables, names), parts[0][1] if len(parts) == 1 else None


def _attack_batch(model, x, names, params, out_dir, progress, labels, halves,
                  chosen) -> tuple[dict[str, pd.DataFrame], dict]:
    results, table = run_grid(model, x, names, grid_plan(params), progress=progress)
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
    pick = [i for i, name in enumerate(names) if name in chosen]
    if pick:
        targets, targeted = targeted_attacks(model, x[pick], [names[i] for i in pick], params)
        tables[TABLES.attack_targets] = targets
        if not targeted.empty:
            tables[TABLES.attack_targeted] = targeted
    tables = {k: (v if k in (TABLES.attack_history, TABLES.attack_targets) else with_labels(v, names, labels))
              for k, v in tables.items()}
    return image_major(tables, names), results


def summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``attack_summary`` (:func:`ama.kernels.metrics.summary_table`), ``attack_by_confidence``
    (:func:`ama.studies.attack_summaries.by_confidence`), ``attack_confidence``
    (:func:`ama.studies.confidence.confidence_regression`), ``attack_ablation_summary`` (:func:`ablation_summary`) and
    ``attack_seed_spread`` (:func:`ama.studies.attack_summaries.seed_spread`) from the per-image tables present."""
    out = {}
    if TABLES.attack_metrics in tables:
        out[TABLES.attack_summary] = summary_table(tables[TABLES.attack_metrics])
        out[TABLES.attack_by_confidence] = by_confidence(tables[TABLES.attack_metrics])
        out[TABLES.attack_confidence] = confidence_regression(tables[TABLES.attack_metrics])
    if TABLES.attack_ablation in tables:
        out[TABLES.attack_ablation_summary] = ablation_summary(tables[TABLES.attack_ablation])
    if TABLES.attack_seeds in tables:
        out[TABLES.attack_seed_spread] = seed_spread(tables[TABLES.attack_seeds])
    if TABLES.attack_ingredients in tables:
        out[TABLES.attack_ingredients_summary] = ingredient_summary(tables[TABLES.attack_ingredients])
    if TABLES.attack_targeted in tables:
        out[TABLES.attack_targeted_summary] = targeted_summary(tables[TABLES.attack_targeted],
                                                               tables[TABLES.attack_targets])
    return out


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
    from torchvision.transforms.functional import to_tensor  # uint8 k -> k / 255, exactly ama.attack.marginal.quantize's grid

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
