"""The paper's experiments as functions: a model, images and the run's parameters in, tidy tables out.

Each experiment returns ``{table name: DataFrame}`` with one or more rows **per image** (keyed by
``model`` and ``image``), so that the images can be split across processes and the parts joined again
(:mod:`ama.shards`); :func:`summaries` then computes the tables that aggregate over images. The notebooks
call these functions (or read the merged tables of a ``torchrun`` pre-step) and only plot and save.

* :func:`occlusion`: keep-IRF, occlude-IRF, margin and sliding-patch occlusion (notebook 01);
* :func:`receptive_fields`: ERF vs IRF misalignment, the upsamplings, the receptive-field sizes (notebook 02);
* :func:`attack_grid`: the adversarial marginal attack at every setting plus the random-frame baseline, and the
  optimiser ablation (notebook 03); it saves the 8-bit adversarial images that notebook 05 explains again.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from . import receptive_field as rf
from .models import CAMModel
from .params import RunParams
from .paths import resolve

EXPERIMENTS = ("occlusion", "receptive_fields", "attack")

def image_major(tables: dict[str, pd.DataFrame], names: list[str]) -> dict[str, pd.DataFrame]:
    """Rows ordered by the image's position in ``names`` (stable: an image's rows keep their order), so that a run
    split across ranks and merged (:mod:`ama.shards`) has the rows of a one-process run in the same order."""
    position = {n: i for i, n in enumerate(names)}
    out = {}
    for name, df in tables.items():
        if "image" in df.columns and len(df):
            df = df.iloc[df.image.map(position).argsort(kind="stable")].reset_index(drop=True)
        out[name] = df
    return out


# --- occlusion (notebook 01) -------------------------------------------------------------------
FAST_FILLS = 2                 # FAST runs use the first two fills
SLIDING_PATCH = 32             # px, one lite0/ResNet cell at 224 px
SLIDING_STRIDE, FAST_SLIDING_STRIDE = 32, 64


def occlusion_cells(grid, fast: bool = False) -> list[int]:
    """The cells the IRF experiments use: the corners, edge midpoints, centre and their 3 x 3 lattice (FAST: the
    centre, the middle of the top edge and the top-left corner, :func:`ama.receptive_field.representative_cells`)."""
    h, w = rf._pair(grid)
    rep = set(rf.representative_cells((h, w)).values())
    if fast:
        return sorted(rep)
    lattice = {i * w + j for i in (0, h // 2, h - 1) for j in (0, w // 2, w - 1)}
    return sorted(lattice | rep)


def occlusion(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams,
              fills: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Tables ``occlusion_keep_irf``, ``occlusion_occlude_irf`` (image x fill x cell), ``occlusion_margin``
    (image x e x fill), ``occlusion_margin_cells`` (image x e x fill x cell), ``occlusion_sliding_patch``
    (image x patch position) for images ``x`` ``(B, 3, H, W)`` in ``[0, 1]``."""
    from . import occlusion as occ

    p = params.fast_variant()
    fills = list(fills or occ.FILLS)[:FAST_FILLS if p.fast else None]
    cells = occlusion_cells(model.feature_size(tuple(x.shape[-2:])), p.fast)
    keep = occ.keep_irf(model, x, names, fills=fills, cells=cells, seed=p.seed)
    occlude = occ.occlude_irf(model, x, names, fills=fills, cells=cells, seed=p.seed)
    margin, margin_cells = occ.margin_experiment(model, x, names, e=p.e, fills=fills, seed=p.seed)
    stride = FAST_SLIDING_STRIDE if p.fast else SLIDING_STRIDE
    slides = occ.sliding_patch(model, x, names, patch=SLIDING_PATCH, stride=stride, fill=fills[0], seed=p.seed)
    return image_major(dict(occlusion_keep_irf=keep, occlusion_occlude_irf=occlude, occlusion_margin=margin,
                            occlusion_margin_cells=margin_cells, occlusion_sliding_patch=slides), names)


# --- receptive fields (notebook 02) ------------------------------------------------------------
UPSAMPLINGS = (("bilinear", True), ("bilinear", False), ("bicubic", True), ("nearest", None))
ERF_EXTENT_SHARE = 0.9


def receptive_fields(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams,
                     erf: torch.Tensor | None = None) -> dict[str, pd.DataFrame]:
    """Tables ``misalignment`` (image x cell, one ``margin_mass_ratio_e<e>`` column per ``e``),
    ``misalignment_upsampling_cells`` (image x upsampling x cell) and ``receptive_field_image_sizes`` (per image:
    theoretical RF, centre cell's IRF width, the side holding 90% of its ERF). ``erf``: the maps of
    :func:`ama.receptive_field.effective_receptive_field` for ``x`` if already computed."""
    p = params.fast_variant()
    erf = rf.effective_receptive_field(model, x) if erf is None else erf
    table = rf.misalignment_table(model, x, names, e=p.e, erf=erf)
    ups = pd.concat([rf.misalignment_table(model, x, names, e=p.e[:1], mode=mode, align_corners=corners, erf=erf)
                     for mode, corners in UPSAMPLINGS], ignore_index=True)
    ups = ups[["image", "model", "upsampling", "cell", "cell_kind", "erf_mass_outside_irf", "top_q_iou",
               "irf_support_px"]]
    H, W = x.shape[-2:]
    h, w = model.feature_size((H, W))
    centre = (h // 2) * w + w // 2
    sizes = pd.DataFrame(dict(
        image=list(names), model=model.name, input_px=H, grid=f"{h} x {w}", cell_stride_px=H / h,
        theoretical_rf_px=rf.theoretical_receptive_field(model), irf_support_px=rf.irf_width((h, w), (H, W), centre),
        erf90_px=rf.erf_extent(erf[:, centre].cpu(), ERF_EXTENT_SHARE).numpy()))
    return image_major(dict(misalignment=table, misalignment_upsampling_cells=ups, receptive_field_image_sizes=sizes),
                       names)


# --- the attack (notebook 03) --------------------------------------------------------------------
PAPER_N_ITER = 50              # the authors' 2021 code; their 2022 code and the kit's default: 100


def attack_settings(params: RunParams) -> dict:
    """The attack grid of a run: the reference (``flip``) at every ``e`` and at ``n_iter`` 50 and the run's
    ``n_iter``; the kit's ``keep`` extension at the smallest ``e`` and the run's ``n_iter`` only (time); the
    random-frame baseline at every ``e``. Keyword arguments of :func:`ama.attack.run_settings`."""
    p = params.fast_variant()
    n_iters = sorted({p.n_iter} if p.fast else {PAPER_N_ITER, p.n_iter})
    return dict(e=list(p.e), n_iters=n_iters, modes=("flip", "keep"), lamb=p.lamb, seed=p.seed,
                mode_n_iters={"keep": [p.n_iter]}, mode_e={"keep": [min(p.e)]})


ADVERSARIAL_OPTIMIZERS = ("sign", "apgd")  # adversarial images a run keeps (notebook 05): the reference, the strongest


def attack_grid(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, progress: bool = True,
                out_dir=None) -> tuple[dict[str, pd.DataFrame], dict]:
    """Tables ``attack_metrics`` (image x setting x quantised), ``attack_history`` (image x setting x iteration) and
    ``attack_ablation`` (:func:`ablation_settings`; the reference's runs are shared with the grid), and the
    :class:`ama.attack.AttackResult` of every setting (for figures): ``("attack" | "random_frame", e, n_iter, mode)``
    of the grid, ``(optimizer, variant, e, n_iter, mode)`` of the ablation. ``out_dir``: where the 8-bit adversarial
    images of :data:`ADVERSARIAL_OPTIMIZERS` are saved (:func:`save_adversarial`)."""
    from .attack import ablation, run_settings
    from .metrics import history_table

    results, table = run_settings(model, x, names, **attack_settings(params), progress=progress)
    history = history_table({k: v for k, v in results.items() if k[0] == "attack"})
    shared = {("sign", "default", e, it, mode): r for (setting, e, it, mode), r in results.items() if setting == "attack"}
    abl = ablation(model, x, names, **ablation_settings(params), results=shared, progress=progress)
    results.update(shared)
    if out_dir is not None:
        save_adversarial(results, params, out_dir)
    return image_major(dict(attack_metrics=table, attack_history=history, attack_ablation=abl), names), results


def adversarial_dir(out_dir, model: str, optimizer: str, e: int, n_iter: int) -> Path:
    """Folder of one setting's 8-bit adversarial PNGs (flip, the optimiser's defaults): ``<image name>.png``."""
    return resolve(out_dir) / "adversarial" / model / f"{optimizer}_e{e}_it{n_iter}"


def save_adversarial(results: dict, params: RunParams, out_dir) -> None:
    """Save the 8-bit adversarial images (lossless PNGs, exactly ``adv_q``) of each optimiser of
    :data:`ADVERSARIAL_OPTIMIZERS` at every ``e`` (flip, defaults, the run's ``n_iter``)."""
    from .attack import save_png

    n_iter = params.fast_variant().n_iter
    for key, r in results.items():
        if len(key) == 5 and key[0] in ADVERSARIAL_OPTIMIZERS and key[1] == "default" and key[3:] == (n_iter, "flip"):
            folder = adversarial_dir(out_dir, r.params["model"], key[0], key[2], n_iter)
            for name, image in zip(r.names, r.adv_q):
                path = folder / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_png(image, path)


def adversarial_result(model: CAMModel, data, params: RunParams, out_dir, optimizer: str, e: int):
    """The :class:`ama.attack.AttackResult` of ``optimizer`` (flip, its defaults, the run's ``n_iter``) at ``e`` for
    ``data``'s images: from the PNGs the run saved (two forward passes), else attacked here."""
    from torchvision.transforms.functional import to_tensor  # uint8 k -> k / 255, exactly ama.attack.quantize's grid

    from .attack import evaluate_images, marginal_attack
    from .data import load_image

    p = params.fast_variant()
    folder = adversarial_dir(out_dir, model.name, optimizer, e, p.n_iter)
    paths = [folder / f"{name}.png" for name in data.names]
    if all(path.is_file() for path in paths):
        adv = torch.cat([load_image(path, transform=to_tensor) for path in paths])
        try:
            return evaluate_images(model, data.images, adv, e=e, names=data.names,
                                   params=dict(n_iter=p.n_iter, lamb=p.lamb, seed=p.seed, optimizer=optimizer))
        except ValueError as err:
            warnings.warn(f"{folder}: {err}; attacking again")
    return marginal_attack(model, data.images, e=e, n_iter=p.n_iter, lamb=p.lamb, seed=p.seed, names=data.names,
                           optimizer=optimizer)


def run(experiment: str, model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams,
        progress: bool = False, out_dir=None) -> dict[str, pd.DataFrame]:
    """One experiment's per-image tables (see the module docstring); ``out_dir``: where the attack saves its
    adversarial images."""
    if experiment == "occlusion":
        return occlusion(model, x, names, params)
    if experiment == "receptive_fields":
        return receptive_fields(model, x, names, params)
    if experiment == "attack":
        return attack_grid(model, x, names, params, progress, out_dir)[0]
    raise ValueError(f"unknown experiment {experiment!r}; use one of {', '.join(EXPERIMENTS)}")


# --- tables over all images ----------------------------------------------------------------------
def summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables that aggregate over images, from the per-image ones present in ``tables``."""
    from .metrics import summary_table

    out = {}
    if "misalignment" in tables:
        table = tables["misalignment"]
        out["misalignment_summary"] = rf.misalignment_summary(table)
        cols = [c for c in table.columns if c.startswith("margin_mass_ratio_e")]
        mm = table.melt(id_vars=["model", "image", "cell_kind"], value_vars=cols, var_name="e", value_name="ratio")
        mm["e"] = mm.e.str.removeprefix("margin_mass_ratio_e").astype(int)
        out["margin_mass_ratio"] = mm.groupby(["model", "cell_kind", "e"]).ratio.agg(["mean", "std"]).reset_index()
    if "misalignment_upsampling_cells" in tables:
        ups = tables["misalignment_upsampling_cells"]
        out["misalignment_upsampling"] = (ups.groupby(["model", "upsampling", "cell_kind"])
                                          [["erf_mass_outside_irf", "top_q_iou", "irf_support_px"]].mean().reset_index())
    if "receptive_field_image_sizes" in tables:
        sizes = tables["receptive_field_image_sizes"]
        keys = ["model", "input_px", "grid", "cell_stride_px", "theoretical_rf_px", "irf_support_px"]
        out["receptive_field_sizes"] = sizes.groupby(keys, sort=False).erf90_px.mean().reset_index()
    if "attack_metrics" in tables:
        out["attack_summary"] = summary_table(tables["attack_metrics"])
    return out


def save_tables(tables: dict[str, pd.DataFrame], out_dir) -> None:
    """Write every table as ``<out_dir>/tables/<name>.csv`` (atomically)."""
    from .results import save_table

    for name, df in tables.items():
        save_table(df, out_dir, name)


def compute(experiment: str, runs: dict, params: RunParams, out_dir, sharded: bool = False):
    """A notebook's experiment over every model: ``runs`` maps a model name to ``(model, LoadedImages)``.

    Returns ``(tables, extras)`` and writes the tables (with :func:`summaries`) under ``out_dir``. With ``sharded``
    the tables are those a ``torchrun`` pre-step merged (:func:`ama.shards.merged_tables`) and ``extras`` is None;
    otherwise they are computed here and ``extras`` maps each model to what its figures reuse (the ERF maps, or
    the attack results). ``params``: the run's parameters (not yet :meth:`~ama.params.RunParams.fast_variant`).
    """
    from .shards import merged_tables

    if sharded:
        tables = merged_tables(experiment, params, out_dir)
        if tables is None:
            raise RuntimeError(f"sharded: no merged {experiment} tables for these parameters in {out_dir}/parts; "
                               f"run python -m ama.shards run/merge {experiment} first (make reproduce NPROC=N does)")
        return tables, None
    per_model, extras = [], {}
    for name, (model, data) in runs.items():
        if experiment == "attack":
            tables, extras[name] = attack_grid(model, data.images, data.names, params, out_dir=out_dir)
        elif experiment == "receptive_fields":
            extras[name] = rf.effective_receptive_field(model, data.images)
            tables = receptive_fields(model, data.images, data.names, params, erf=extras[name])
        else:
            tables = run(experiment, model, data.images, data.names, params)
        per_model.append(tables)
    tables = {k: pd.concat([t[k] for t in per_model], ignore_index=True) for k in per_model[0]}
    tables.update(summaries(tables))
    save_tables(tables, out_dir)
    return tables, extras


def load_runs(params: RunParams) -> dict:
    """``{model name: (model, LoadedImages)}`` for every model of the run, images at each model's input size."""
    from .data import load_images
    from .paths import resolve

    p = params.fast_variant()
    runs = {}
    for name in p.models:
        model = run_model(name, p.device)
        runs[name] = (model, load_images(resolve(p.images), model, n=p.n_images, seed=p.seed))
    return runs


def run_model(name: str, device: str = "auto") -> CAMModel:
    """A model as the experiments use it: :func:`ama.load_model`, on the CPU with channels-last weights (oneDNN's
    faster layout; the same network, float rounding aside)."""
    from .models import is_factory, load_factory_model, load_model

    model = load_factory_model(name, device) if is_factory(name) else load_model(name, device=device)
    return model.to(memory_format=torch.channels_last) if model.device.type == "cpu" else model


# --- the attack's figures need results: of the run, or recomputed for the shown images --------------
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
    from .attack import marginal_attack

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
    from .attack import marginal_attack

    s = attack_settings(params)
    e, n_iter = min(s["mode_e"]["keep"]), min(s["mode_n_iters"]["keep"])
    rows = table[(table.model == model.name) & (table["mode"] == "keep") & (table.e == e) & (table.n_iter == n_iter)
                 & table.quantized.astype(bool)]
    score = dict(zip(rows.image, rows.cam_cosine.where(~rows.fooled.astype(bool), 2.0)))
    best = min(range(len(data.names)), key=lambda i: (score.get(data.names[i], 3.0), i))
    if results is not None:
        return results[("attack", e, n_iter, "keep")], best
    r = marginal_attack(model, data.images[best:best + 1], e=e, n_iter=n_iter, lamb=s["lamb"], mode="keep",
                        seed=s["seed"], names=[data.names[best]])
    return r, 0


# --- the optimiser ablation (notebook 03, beyond the paper) ---------------------------------------
ABLATION_E = (1, 2)            # frame widths of the budget curve and of the optimisers not kept as images (adam)
ABLATION_BUDGET_SHARE = 4      # the budget curve: n_iter / 4 and n_iter passes per image (the full study: 10 to 100)
ABLATION_KEEP = ("sign", "apgd")  # keep mode at the smallest e: the reference and the default strongest


def ablation_settings(params: RunParams) -> dict:
    """The optimiser ablation of a run (keyword arguments of :func:`ama.attack.ablation`): the defaults of ``sign``
    and ``apgd`` (:data:`ADVERSARIAL_OPTIMIZERS`) at every ``e`` and of every optimiser at ``e`` in :data:`ABLATION_E`,
    at the run's ``n_iter``; the budget curve (``n_iter / 4`` too) at ``e`` in :data:`ABLATION_E`; keep mode at the
    smallest ``e`` for :data:`ABLATION_KEEP`; no per-ingredient grid (time).
    FAST: the smallest ``e``, 5 passes, and each ingredient switched once."""
    from .attack import OPTIMIZER_DEFAULTS

    p = params.fast_variant()
    low = min(p.e)
    common = dict(optimizers=list(OPTIMIZER_DEFAULTS), keep_e=[low], keep_optimizers=list(ABLATION_KEEP),
                  lamb=p.lamb, seed=p.seed)
    if p.fast:
        return dict(e=[low], budgets=[p.n_iter], variant_e=[low], budget_e=[low], **common)
    budgets = sorted({max(1, p.n_iter // ABLATION_BUDGET_SHARE), p.n_iter})
    few = [v for v in ABLATION_E if v in p.e] or [low]
    narrow = {o: few for o in OPTIMIZER_DEFAULTS if o not in ADVERSARIAL_OPTIMIZERS}
    return dict(e=list(p.e), budgets=budgets, variant_e=[], budget_e=few, optimizer_e=narrow, **common)
