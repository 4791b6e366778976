"""The paper's protocol on labelled images (``SCIENCE.md`` section 7): each model's clean accuracy on the set, the
correctly classified images an attack runs on, drawn by a seeded class-stratified choice, and the run's image list.

A run whose images carry labels (an ImageNet layout, ``labels.csv``, or the kit's ``data/imagenet`` manifest) is
run on ``n_images`` images that **every** model of the run classifies correctly (so the models are compared on the
same images), one per stratum of the class-index order; the clean predictions of every image of the set are kept as
``tables/clean_predictions.csv`` and give the accuracy table. A run of unlabelled images (the staged photos) takes
``n_images`` of them at random with the run's seed, as before, and its fooling rate is "the prediction changed".
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch

from ..artifacts import TABLES
from ..deps import Graph
from ..params import FAST_ACCURACY_IMAGES, RunParams
from ..paths import cache_dir, exclusive, resolve
from ..stats.intervals import Estimate
from ..store.tables import save_table, write_csv
from .images import ImageLoadError, ImageRecord, list_images, load_records, open_image
from .models import run_model
from .padding import held_out, recal_base

BATCH = 50                     # images per forward pass of the accuracy pass
TOP_K = 5
PREDICTIONS = TABLES.clean_predictions  # the run's table of clean predictions (every labelled image x model)
ACCURACY = TABLES.clean_accuracy        # each model's top-1 / top-5 on the set
SELECTION = "selection.csv"        # the run's image list (file, name, label), in the run folder
VERSIONED = ("torch", "torchvision", "timm", "pillow")  # libraries whose version is part of a cached prediction's key


def predictions(model, records, batch_size: int = BATCH) -> pd.DataFrame:
    """One row per loadable image of ``records``: ``model, image, label, predicted, predicted_name, conf`` (softmax of
    the prediction), ``label_conf``, ``top1`` and ``top5`` (the label among the top 5), on the model's input."""
    rows = []
    for start in range(0, len(records), batch_size):
        data = load_records(records[start:start + batch_size], model)
        if not data.names:
            continue
        with torch.no_grad():
            prob = torch.softmax(model(data.images.to(model.device)).float(), 1).cpu()
        top = prob.topk(TOP_K, 1).indices
        labels = data.labels
        rows.append(pd.DataFrame(dict(
            model=model.name, image=data.names, label=labels.numpy(), predicted=top[:, 0].numpy(),
            predicted_name=[model.class_name(int(k)) for k in top[:, 0]], conf=prob.max(1).values.numpy(),
            label_conf=prob.gather(1, labels.clamp_min(0)[:, None])[:, 0].numpy(),
            top1=(top[:, 0] == labels).numpy(), top5=(top == labels[:, None]).any(1).numpy())))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _cached_predictions(name: str, device: str, files: tuple, code: tuple, versions: tuple) -> pd.DataFrame:
    """:func:`predictions` of the model ``name`` on ``device`` for ``files`` (``(path, name, label, size,
    mtime_ns)`` per image); ``code`` and ``versions`` are there only to be part of the cache's key."""
    return predictions(run_model(name, device), [ImageRecord(Path(f[0]), f[1], f[2]) for f in files])


def clean_predictions(name: str, device: str, records: list[ImageRecord]) -> pd.DataFrame:
    """:func:`predictions` of the model ``name`` (:func:`ama.inputs.models.run_model` on ``device``) on ``records``,
    computed once per model, device and image set and read back by every later run (``joblib.Memory`` under
    :func:`cache_dir`). The key holds the model's name, the device, each image's path, name, label, size and
    modification time, the versions of :data:`VERSIONED` and the text of every module the prediction runs through
    (:mod:`ama.deps`), so a changed image, library or module computes them again. Processes asking for one model
    take turns (``.lock.<model>``): the second reads what the first wrote."""
    stats = [(r, r.path.stat()) for r in records]
    files = tuple((str(r.path.resolve()), r.name, r.label, st.st_size, st.st_mtime_ns) for r, st in stats)
    graph = Graph()
    used = graph.files(graph.entry("inputs.protocol:_cached_predictions"))
    code = tuple((f, (graph.dir.parent / f).read_text()) for f in used)
    versions = tuple((d, metadata.version(d)) for d in VERSIONED)
    cached = joblib.Memory(cache_dir(), verbose=0).cache(_cached_predictions)
    with exclusive(cache_dir() / f".lock.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"):
        return cached(name, device, files, code, versions)


def accuracy(preds: pd.DataFrame) -> pd.DataFrame:
    """Per model: ``n_images``, ``top1`` and ``top5`` accuracy with their exact (Clopper-Pearson) 95% intervals
    (``*_low``, ``*_high``). ``preds``: rows of :func:`predictions`."""
    out = []
    for model, g in preds.groupby("model", sort=False):
        row = {"model": model, "n_images": len(g)}
        for k in ("top1", "top5"):
            est = Estimate.rate(int(g[k].sum()), len(g))
            row.update({k: est.value, f"{k}_low": est.low, f"{k}_high": est.high})
        out.append(row)
    return pd.DataFrame(out)


def stratified_choice(names, labels, n: int, seed: int) -> list[str]:
    """``n`` of ``names`` spread over the class-index order: the images sorted by ``labels`` are cut into ``n``
    contiguous strata of (nearly) equal size and one image is drawn from each with ``seed``; all of them when there
    are ``n`` or fewer. Returned in the order of ``names``."""
    order = np.argsort(np.asarray(labels), kind="stable")
    if n >= len(order):
        return list(names)
    rng = np.random.default_rng(seed)
    chosen = {int(stratum[rng.integers(len(stratum))]) for stratum in np.array_split(order, n)}
    return [name for k, name in enumerate(names) if k in chosen]


def evenly(names, k: int) -> list[str]:
    """``k`` of ``names`` at evenly spaced positions (all when ``k`` is 0 or at least their number): for a run's
    class-ordered selection, a subset that stays spread over the classes."""
    if not k or k >= len(names):
        return list(names)
    return [names[int(i)] for i in np.linspace(0, len(names) - 1, k).round().astype(int)]


def labelled(records: list[ImageRecord]) -> bool:
    """Whether every record carries a label (the protocol applies)."""
    return bool(records) and all(r.label is not None for r in records)


def select(records: list[ImageRecord], preds: pd.DataFrame, n: int | None, seed: int) -> list[ImageRecord]:
    """The records every model of ``preds`` classifies correctly, then :func:`stratified_choice` of ``n`` of them."""
    correct = preds.groupby("image").top1.all()
    ok = [r for r in records if bool(correct.get(r.name, False))]
    names = stratified_choice([r.name for r in ok], [r.label for r in ok], n or len(ok), seed)
    keep = set(names)
    return [r for r in ok if r.name in keep]


def run_records(params: RunParams, run_dir) -> list[ImageRecord]:
    """The images of a run, which every experiment, notebook and rank uses: the run folder's ``selection.csv``,
    written first by :func:`write_selection` when missing. Ranks started together choose once: the first to take
    the run folder's ``.lock.selection`` writes it, the others wait and read it."""
    path = resolve(run_dir) / SELECTION
    if not path.is_file():
        with exclusive(resolve(run_dir) / ".lock.selection"):
            if not path.is_file():
                write_selection(params, run_dir)
    chosen = set(pd.read_csv(path, keep_default_na=False).image)
    return [r for r in list_images(params.images) if r.name in chosen]


def run_names(params: RunParams, run_dir, names) -> list[str]:
    """The names of every image of the run in ``run_dir`` (:func:`run_records`), of which a rank or a batch holds
    ``names``; ``names`` themselves when ``run_dir`` is None or holds no ``selection.csv`` (not a run folder)."""
    if run_dir is None or not (resolve(run_dir) / SELECTION).is_file():
        return list(names)
    return [r.name for r in run_records(params, run_dir)]


def readable(records: list[ImageRecord]) -> list[ImageRecord]:
    """The records whose files open as images (:func:`ama.inputs.images.open_image`); each one that does not is named on
    stderr (``skipped <file>: <reason>``); an ImageLoadError when none does."""
    import sys

    kept, skipped = [], []
    for r in records:
        try:
            open_image(r.path)
            kept.append(r)
        except ImageLoadError as err:
            skipped.append(r.path.name)
            print(f"skipped {r.path.name}: {str(err).split(': ', 1)[-1]}", file=sys.stderr, flush=True)
    if not kept:
        raise ImageLoadError(f"none of the {len(records)} image file(s) chosen could be read (skipped: "
                             f"{', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}); give a folder of "
                             "readable images (IMAGES=...)")
    return kept


def checked_records(params: RunParams) -> list[ImageRecord]:
    """The images of the run's set whose clean predictions a labelled run checks: all of them; FAST: a stratified
    :data:`~ama.params.FAST_ACCURACY_IMAGES` (unlabelled sets: all their records). A run with a ``-recal`` model
    (:mod:`ama.inputs.padding`) leaves out the images its statistics were re-estimated on: it neither scores nor
    reports them."""
    records = list_images(params.images)
    if any(recal_base(m) is not None for m in params.models):
        skip = {r.path for r in held_out()}
        records = [r for r in records if r.path not in skip]
    if labelled(records) and params.fast:  # a smoke run predicts a stratified subset of the set, not all of it
        keep = set(stratified_choice([r.name for r in records], [r.label for r in records],
                                     FAST_ACCURACY_IMAGES, params.seed))
        records = [r for r in records if r.name in keep]
    return records


def choose(params: RunParams, records: list[ImageRecord], preds: pd.DataFrame | None) -> list[ImageRecord]:
    """The run's images: labelled ``records`` (:func:`checked_records`) with every model's clean predictions
    ``preds``: :func:`select`; otherwise ``n_images`` of the set at random with the seed (:func:`readable`)."""
    if preds is not None and labelled(records):
        return select(records, preds, params.n_images, params.seed)
    return readable(list_images(params.images, n=params.n_images, seed=params.seed))


def write_selection(params: RunParams, run_dir) -> pd.DataFrame:
    """Write the run's image list ``selection.csv`` (``image, label``; -1 unlabelled) and return it. Labelled images:
    every model's clean predictions on the whole set (:func:`clean_predictions`: once per model and image set, then
    from the shared cache; ``tables/clean_predictions.csv``, their accuracy in ``tables/clean_accuracy.csv``) and
    :func:`select`; unlabelled: ``n_images`` at random with the seed. FAST: the
    accuracy of :data:`~ama.params.FAST_ACCURACY_IMAGES` stratified images only."""
    records = checked_records(params)
    if labelled(records):
        preds = pd.concat([clean_predictions(name, params.device, records) for name in params.models],
                          ignore_index=True)
        save_table(preds, run_dir, PREDICTIONS)
        save_table(accuracy(preds), run_dir, ACCURACY)
    else:
        preds = None
    chosen = choose(params, records, preds)
    table = pd.DataFrame(dict(image=[r.name for r in chosen], label=[-1 if r.label is None else r.label
                                                                     for r in chosen]))
    resolve(run_dir).mkdir(parents=True, exist_ok=True)
    write_csv(table, resolve(run_dir) / SELECTION)
    return table
