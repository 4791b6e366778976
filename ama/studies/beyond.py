"""Notebook 05: the run's studies (:mod:`ama.studies.study`), computed per image, summarised and shown.

The ``beyond`` experiment of :data:`ama.studies.experiments.EXPERIMENTS` (imported on first use, so that the other notebooks do
not import the studies): :func:`beyond` gives each study of the run the same :class:`ama.studies.study.Inputs` (the run's
saved attacks shared between them), :func:`beyond_summaries` its summaries; :func:`show` is a study's notebook cell.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..artifacts import FIGURES
from ..attack.result import OptimizerKey
from ..inputs.protocol import evenly, run_names
from ..kernels.cam_model import CAMModel
from ..params import RunParams
from ..store.tables import image_major
from . import attack_experiments
from .registry import studies
from .registry import study as find_study
from .study import Inputs

__all__ = ["beyond", "beyond_summaries", "show"]


def beyond(model: CAMModel, x: torch.Tensor, names: Sequence[str], params: RunParams, out_dir=None,
           progress: bool = False, labels=None) -> tuple[dict[str, pd.DataFrame], dict]:
    """The per-image tables of the run's studies (:func:`ama.studies.registry.studies` that
    :meth:`~ama.studies.study.Study.in_run`), each from its ``compute`` with the same :class:`ama.studies.study.Inputs`:
    the run's saved attacks (the adversarial PNGs notebook 03 saved in ``out_dir``, attacked again where missing) shared
    between them, on ``beyond_images`` of the run's images (:func:`ama.inputs.protocol.evenly`; all when 0). Extras:
    ``attacks`` (``{OptimizerKey: AttackResult}``) and what the studies left for the notebook's figures."""
    reported = run_names(params, out_dir, names)
    if params.beyond_images:  # notebook 05 on a spread subset of the run's images
        keep = set(evenly(reported, params.beyond_images))
        idx = [k for k, n in enumerate(names) if n in keep]
        if not idx:
            return {}, {}
        x, names = x[idx], [names[k] for k in idx]
        labels = None if labels is None else torch.as_tensor(labels)[idx]
    attacks = {}

    def attack(optimizer: str, e: int):  # the run's saved attack (attacked again where missing), once
        key = OptimizerKey.default(optimizer, e, params.n_iter)
        if key not in attacks:
            attacks[key] = attack_experiments.adversarial_result(model, x, names, params, out_dir, optimizer, e)
        return attacks[key]

    inputs = Inputs(x, list(names), params, out_dir, labels, reported, attack, dict(attacks=attacks))
    tables = {}
    for study in studies().values():
        if study.compute is not None and study.in_run(params):
            tables.update(study.compute(model, inputs))
    return image_major(tables, names), inputs.extras


def beyond_summaries(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each study's ``summarise`` of its per-image tables, for the studies whose first per-image table ``tables``
    holds (a table a study added later may be missing from an older run: its ``summarise`` leaves that summary out)."""
    out = {}
    for study in studies().values():
        mine = study.table_names("image")
        if study.summarise is not None and mine and mine[0] in tables:
            out.update(study.summarise(tables))
    return out


def show(folder, name: str) -> None:
    """Notebook 05's cell of the study ``name``: its run-level tables (read back when ``folder``, a
    :class:`ama.runs.folder.RunFolder`, is finished, else computed and saved), its figures
    (:meth:`~ama.runs.folder.RunFolder.figure`, each with its caption), and what the report says of it
    (:class:`ama.studies.study.Finding`: its sentence, its table for people). The study's per-image tables come from
    ``folder.compute("beyond")``, called first."""
    from IPython.display import Markdown, display

    declared = find_study(name)
    if not declared.in_run(folder.params):
        print(f"{name}: not among this run's studies ({', '.join(folder.params.studies)}); "
              f"make study STUDIES={name} runs it alone")
        return
    if declared.run_tables is not None and not folder.finished:
        folder.save({t: df for t, df in declared.run_tables(folder).items() if df is not None and len(df)})
    for f in declared.figures:
        folder.figure(getattr(FIGURES, f.name), lambda f=f: f.draw(folder), f.attacks)
    finding = declared.section(folder.out) if declared.section is not None else None
    if finding is None:
        display(Markdown(f"{name}: nothing to report on this run"))
        return
    display(Markdown(finding.sentence))
    if finding.table is not None and len(finding.table):
        display(finding.table)
