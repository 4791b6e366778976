"""A run's orchestration for the notebooks: load its models and images, compute an experiment (or read the tables a
``torchrun`` pre-step merged), save its tables. Above :mod:`ama.experiments` and :mod:`ama.shards`, which it uses.
"""
from __future__ import annotations

import pandas as pd

from .data import load_records
from .experiments import EXPERIMENTS
from .models import run_model
from .params import RunParams
from .protocol import run_records
from .results import save_tables
from .shards import merged_tables


def load_runs(params: RunParams, run_dir) -> dict:
    """``{model name: (model, LoadedImages)}`` for every model of the run: the run's images
    (:func:`ama.protocol.run_records`, chosen once per run folder) at each model's input size, with their labels."""
    records = run_records(params, run_dir)
    runs = {}
    for name in params.models:
        model = run_model(name, params.device)
        runs[name] = (model, load_records(records, model))
    return runs


def describe(runs: dict, names: bool = False) -> str:
    """One line per model: its images (their names with ``names``) and the files it skipped."""
    lines = []
    for name, (model, data) in runs.items():
        line = f"{name}: {len(data.names)} images, {model.feature_size()} CAM cells"
        line += f" ({', '.join(data.names)})" if names else ""
        lines.append(line + (f"; skipped {data.skipped}" if data.skipped else ""))
    return "\n".join(lines)


def compute(experiment: str, runs: dict, params: RunParams, out_dir, sharded: bool = False):
    """A notebook's experiment over every model: ``runs`` as :func:`load_runs` gives them.

    Returns ``(tables, extras)`` and writes the tables (with the experiment's summaries) under ``out_dir``. With
    ``sharded`` the tables are those a ``torchrun`` pre-step merged (:func:`ama.shards.merged_tables`) and ``extras``
    is None; otherwise they are computed here and ``extras`` maps each model to what its figures reuse (the ERF maps,
    or the attack results). ``params``: the run's parameters.
    """
    spec = EXPERIMENTS[experiment]
    if sharded:
        tables = merged_tables(experiment, params, out_dir)
        if tables is None:
            raise RuntimeError(f"sharded: no merged {experiment} tables for these parameters in {out_dir}/parts; "
                               f"run python -m ama.shards run/merge {experiment} first (make reproduce NPROC=N does)")
        return tables, None
    per_model, extras = [], {}
    for name, (model, data) in runs.items():
        tables, extras[name] = spec.run(model, data.images, data.names, params, out_dir, True, data.labels)
        per_model.append(tables)
    tables = {k: pd.concat([t[k] for t in per_model], ignore_index=True) for k in per_model[0]}
    tables.update(spec.summaries(tables))
    save_tables(tables, out_dir)
    return tables, extras
