"""A run's orchestration for the notebooks: load its models and images, compute an experiment (or read the tables a
``torchrun`` pre-step merged), save its tables; open a finished run folder and show what it holds (:class:`RunFolder`).
Above :mod:`ama.studies.experiments` and :mod:`ama.runs.shards`, which it uses.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from ..artifacts import TABLES
from ..inputs.images import load_records
from ..inputs.models import run_model
from ..inputs.protocol import PREDICTIONS, SELECTION, checked_records, choose, run_records
from ..params import RunParams
from ..paths import atomic_write, is_reference, resolve, shown
from ..store.tables import read_table, save_figures, save_table, save_tables
from ..studies.captions import caption
from ..studies.experiments import EXPERIMENTS
from .shards import merged_tables


def load_models_and_images(params: RunParams, run_dir) -> dict:
    """``{model name: (model, LoadedImages)}`` for every model of the run: the run's images
    (:func:`ama.inputs.protocol.run_records`, chosen once per run folder) at each model's input size, with their labels."""
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
    """A notebook's experiment over every model: ``runs`` as :func:`load_models_and_images` gives them.

    Returns ``(tables, extras)`` and writes the tables (with the experiment's summaries) under ``out_dir``. With
    ``sharded`` the tables are those a ``torchrun`` pre-step merged (:func:`ama.runs.shards.merged_tables`) and
    ``extras`` is None; otherwise they are computed here and ``extras`` maps each model to what its figures reuse (the
    ERF maps, or the attack results). ``params``: the run's parameters.
    """
    spec = EXPERIMENTS[experiment]
    if sharded:
        tables = merged_tables(experiment, params, out_dir)
        if tables is None:
            raise RuntimeError(f"sharded: no merged {experiment} tables for these parameters in {out_dir}/parts; "
                               f"run python -m ama.runs.shards run/merge {experiment} first (make reproduce NPROC=N does)")
        return tables, None
    per_model, extras = [], {}
    for name, (model, data) in runs.items():
        tables, extras[name] = spec.run(model, data.images, data.names, params, out_dir, True, data.labels)
        per_model.append(tables)
    tables = {k: pd.concat([t[k] for t in per_model], ignore_index=True) for k in per_model[0]}
    tables.update(spec.summaries(tables))
    save_tables(tables, out_dir)
    return tables, extras


# --- a run folder as a notebook opens it ---------------------------------------------------------------------------
REDRAW = False  # every RunFolder opened while True draws its missing figures, attacks included (tools/redraw_figures.py)


class RunFolderError(ValueError):
    """A run folder a notebook cannot open as asked; the message says what to do."""


def run_params(params, out_dir) -> RunParams:
    """A notebook's ``params``: a dict of :class:`~ama.params.RunParams` fields, the path of a ``params.json`` (e.g. a
    finished run's), or None: ``out_dir``'s own ``params.json``, else the kit's defaults. Checked against ``out_dir``'s
    ``params.json`` when it has one: a run folder holds the results of one set of parameters."""
    saved = resolve(out_dir) / "params.json"
    if params is None:
        params = json.loads(saved.read_text()) if saved.is_file() else {}
    elif isinstance(params, (str, Path)):
        params = json.loads(resolve(params).read_text())
    run = RunParams.from_dict(params)
    if saved.is_file() and RunParams.from_dict(json.loads(saved.read_text())) != run:
        raise RunFolderError(f"{shown(saved.parent)} holds a run of other parameters; open it with "
                             f"params={shown(saved)!r}, or give another out_dir")
    return run


class RunFolder:
    """A notebook's run folder ``out_dir``: what its experiment computes goes there, and a finished run is read back.

    *Finished*: ``run.json`` says the notebook ran to the end (status ``ok``) for these parameters, and ``recompute``
    is False. A finished folder's tables are read, its saved figures shown, and only what is missing is drawn, from
    the tables; a missing figure that would need an attack is named, not drawn. Otherwise the experiment runs as
    before (:func:`compute`). A folder under ``results/reference/`` is read-only: nothing is written there (copy it
    to compute into it). ``make reproduce`` passes ``recompute=True``: a notebook it reruns computes everything.
    ``redraw`` (default :data:`REDRAW`): a finished folder draws a missing figure that needs an attack too, attacking
    its few example images again (``tools/redraw_figures.py`` redraws a reference's figures from its tables so).
    """

    def __init__(self, params, out_dir, notebook: str, recompute: bool = False, sharded: bool = False,
                 redraw: bool | None = None):
        self.out = resolve(out_dir)
        self.params = run_params(params, self.out)
        self.notebook, self.recompute, self.sharded = notebook, bool(recompute), bool(sharded)
        self.redraw = REDRAW if redraw is None else bool(redraw)
        self.read_only = is_reference(self.out)
        info = self.out / "run.json"
        status = (json.loads(info.read_text()).get("notebooks", {}).get(notebook, {}).get("status")
                  if info.is_file() else None)
        self.finished = not self.recompute and status == "ok"
        if self.read_only and not self.finished:
            raise RunFolderError(f"{shown(self.out)} is a committed reference, read-only: "
                                 + ("copy it under results/ to recompute it" if self.recompute
                                    else f"it has no finished {notebook}"))
        self.extras = None
        self._loaded = None

    @property
    def loaded(self) -> dict:
        """``{model name: (model, LoadedImages)}`` (:func:`load_models_and_images`), loaded on first use; a read-only folder's
        images are chosen again from its saved clean predictions, writing nothing."""
        if self._loaded is None:
            if self.read_only and not (self.out / SELECTION).is_file():
                records, self._loaded = chosen_records(self.params, self.out / "tables"), {}
                for name in self.params.models:
                    model = run_model(name, self.params.device)
                    self._loaded[name] = (model, load_records(records, model))
            else:
                self._loaded = load_models_and_images(self.params, self.out)
        return self._loaded

    def compute(self, experiment: str) -> dict:
        """The experiment's tables: read back when finished (``extras`` None), else computed and saved (``extras``:
        what its figures reuse, per model)."""
        if self.finished:
            return self.saved_tables()
        tables, self.extras = compute(experiment, self.loaded, self.params, self.out, self.sharded)
        return tables

    def saved_tables(self) -> dict:
        """Every table declared for this notebook that the folder holds, by name (notebook 05's studies declare theirs
        when :mod:`ama.studies.beyond` is imported)."""
        found = {t: read_table(self.out / "tables", t) for t in TABLES if t.notebook == self.notebook[:2]}
        return {t: df for t, df in found.items() if df is not None}

    def table(self, name: str, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Table ``name``: read back when finished and saved, else ``make()`` and saved (unless read-only)."""
        saved = read_table(self.out / "tables", name) if self.finished else None
        if saved is not None:
            return saved
        table = make()
        if not self.read_only:
            save_table(table, self.out, name)
        return table

    def figure(self, name: str, draw: Callable, attacks: bool = False):
        """Figure ``name``: its saved PNG shown when finished, else ``draw()`` (a figure or a list of figures, which
        the notebook shows; None: nothing to draw) saved unless read-only; then its caption, written from the run's
        tables (:func:`ama.studies.captions.caption`), as Markdown. ``attacks``: drawing it may attack images again,
        which a finished folder does not do (it says so instead) unless it was opened to ``redraw``."""
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        png = self.out / "figures" / f"{name}.png"
        if self.finished and png.is_file():
            display(Image(filename=str(png)))
            self.show_caption(name)
        elif self.finished and attacks and not self.redraw:
            print(f"{name}: not saved in this run folder, and drawing it attacks images again; "
                  "open the notebook with recompute=True to draw it")
        else:
            figs = draw()
            figs = [] if figs is None else figs if isinstance(figs, list) else [figs]
            if figs and not self.read_only:
                save_figures(figs, self.out, name)
            if figs:  # shown here, whatever matplotlib's backend, then closed: each figure once
                display(figs[0])
            for fig in figs:
                plt.close(fig)
            if figs:
                self.show_caption(name)

    def show_caption(self, name: str) -> str | None:
        """Figure ``name``'s caption on this run (:func:`ama.studies.captions.caption`) shown as Markdown, when the
        run's tables give one; returned (None: nothing shown)."""
        from IPython.display import Markdown, display

        text = caption(self.out, name)
        if text:
            display(Markdown(f"*{text}*"))
        return text

    def read(self, name: str) -> pd.DataFrame | None:
        """Table ``name`` as the folder holds it (None when it does not)."""
        return read_table(self.out / "tables", name)

    def save(self, tables: dict) -> dict:
        """``tables`` (``{name: DataFrame}``) saved, unless the folder is finished or read-only; returned."""
        if not (self.finished or self.read_only):
            save_tables(tables, self.out)
        return tables

    def write_text(self, name: str, text: str) -> None:
        """``tables/<name>`` (a text beside the tables, e.g. a Markdown table), written unless read-only."""
        if not self.read_only:
            atomic_write(self.out / "tables" / name, text)


def chosen_records(params: RunParams, tables) -> list:
    """The run's images chosen again from the clean predictions saved in ``tables`` (no model runs, nothing is
    written): :func:`ama.inputs.protocol.choose`, as the run chose them."""
    return choose(params, checked_records(params), read_table(tables, PREDICTIONS))


def open_run(params, out_dir, notebook: str, recompute: bool = False, sharded: bool = False,
             redraw: bool | None = None) -> RunFolder:
    """A notebook's :class:`RunFolder`: ``params`` (a dict, a ``params.json`` or None) and ``out_dir`` as
    :func:`run_params` takes them, ``notebook`` its name (``03_adversarial_marginal_attack``), ``recompute`` True to
    compute everything again, ``sharded`` True when ``torchrun`` computed the tables first, ``redraw`` True to draw
    a finished folder's missing figures that attack images again (default :data:`REDRAW`)."""
    return RunFolder(params, out_dir, notebook, recompute, sharded, redraw)
