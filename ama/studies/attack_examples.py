"""The attacks notebook 03's figures show: the images chosen (failures included), their attacks reused from the run
or computed again for the shown images only (a sharded run keeps no tensors), and the figures drawn.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..attack.marginal import marginal_attack
from ..attack.result import GridKey
from ..figures.plots import attack_figure, attack_rows_figure, examples_figure
from ..kernels.cam_model import CAMModel
from ..params import RunParams
from ..stats.rows import attack_rows
from .attack_experiments import grid_plan


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
    (default: the run's) for the ``k`` images of :func:`example_images`; ``indices`` index the results' batch. ``results``:
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
    """Per model of ``runs`` (:func:`ama.runs.folder.load_models_and_images`), :func:`ama.figures.plots.attack_rows_figure` of the reference
    attack at the smallest ``e`` on up to ``k`` images of :func:`example_images`, failures included.
    ``results_by_model``: ``{model: the run's attack results}`` to reuse, or None."""
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
    e, n_iter = plan.first("keep")
    rows = attack_rows(table[(table.model == model.name) & (table.e == e) & (table.n_iter == n_iter)], "keep")
    score = dict(zip(rows.image, rows.cam_cosine.where(~rows.fooled, 2.0)))
    best = min(range(len(data.names)), key=lambda i: (score.get(data.names[i], 3.0), i))
    if results is not None and GridKey("attack", e, n_iter, "keep") in results:
        return results[GridKey("attack", e, n_iter, "keep")], best
    r = marginal_attack(model, data.images[best:best + 1], e=e, n_iter=n_iter, lamb=plan.lamb, mode="keep",
                        seed=plan.seed, names=[data.names[best]])
    return r, 0


def by_e_figure(runs: dict, params: RunParams, table: pd.DataFrame, results_by_model: dict | None = None):
    """:func:`ama.figures.plots.examples_figure` of the first model's first shown image attacked at every ``e`` of the
    run (reused from ``results_by_model``, ``{model: the run's attack results}``, or attacked again). ``runs``:
    :func:`ama.runs.folder.load_models_and_images`; ``params``: the run's; ``table``: its ``attack_metrics``."""
    name = params.models[0]
    model, data = runs[name]
    by_e, shown = attack_examples(model, data, params, table, (results_by_model or {}).get(name), k=1)
    return examples_figure(by_e, shown[0])


def keep_figure(runs: dict, params: RunParams, table: pd.DataFrame, results_by_model: dict | None = None):
    """:func:`ama.figures.plots.attack_figure` of the first model's :func:`keep_example` (``runs``, ``params``,
    ``table`` and ``results_by_model`` as :func:`by_e_figure` takes them)."""
    name = params.models[0]
    model, data = runs[name]
    keep, index = keep_example(model, data, params, table, (results_by_model or {}).get(name))
    return attack_figure(keep, index)
