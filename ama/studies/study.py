"""A study, declared once: one question of notebook 05 (a control beside a claim, or a question beyond the paper) in
its own module, registered the way timm's ``@register_model`` fills its model list.

A study module ends with ``register(Study(...))``. The declaration says everything the kit needs to know of it:

* ``tables`` and ``figures`` (:class:`Table`, :class:`Figure`): declared into :data:`ama.artifacts.TABLES` /
  ``FIGURES`` by :func:`register`, so the rest of the kit names them ``TABLES.<name>`` as any other artifact;
* ``compute(model, inputs)``: its rows **per image** (:class:`Inputs`), so ``make reproduce NPROC=N`` splits it;
  ``summarise(tables)``: the tables over images; ``run_tables(folder)``: tables of the whole run, computed after the
  others (e.g. a defence's cost on the labelled set);
* its verdicts' families: a table's rows that carry a verdict say how (:class:`Verdicts`), and the question they
  answer is their family, within which Holm adjusts them: the study's name unless the table names another
  (``Verdicts.family``), so a question's family is the same whatever else a run computed;
* ``keys`` / ``measured_by``: the identity columns its tables add (:mod:`ama.runs.check` lines rows up by them);
* ``section(run_dir)``: what the report says of it (:class:`Finding`: a sentence, a table for people), written from
  the run's tables, None when the run did not compute it; notebook 05's cell (``beyond.show(folder, "<name>")``,
  :func:`ama.studies.beyond.show`) shows the same beside its figures and tables.

A study module imports this module only; :mod:`ama.studies.registry` imports every study module and gives the kit its lists
(so that a notebook that needs one study's declaration does not depend on the others). Adding a study: ``docs/STUDIES.md``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..artifacts import FIGURES, TABLES, Artifact
from ..params import OWN_MODELS

__all__ = ["Figure", "Finding", "Inputs", "Study", "deciding", "family_of", "StudyError", "Table", "Verdicts", "register", "registered", "unregister"]

LEVELS = ("image", "summary", "run")


class StudyError(ValueError):
    """A study declared twice, or one that is not declared (a one-line message)."""


@dataclass(frozen=True)
class Table:
    """A table a study writes: ``name`` (the file's stem), ``meaning`` (one line), ``level`` (``image``: rows per
    image, from ``compute``; ``summary``: over images, from ``summarise``; ``run``: from ``run_tables``), ``fast``
    False when a FAST run does not write it, ``verdicts`` how its rows carry a verdict (None: they carry none)."""

    name: str
    meaning: str
    level: str = "image"
    fast: bool = True
    verdicts: "Verdicts | None" = None


@dataclass(frozen=True)
class Figure:
    """A figure a study draws: ``name``, ``meaning``, ``draw(folder)`` (a :class:`ama.runs.folder.RunFolder`; a figure
    or None), ``attacks`` True when drawing it attacks images again and ``caption(run_dir)``: one or two sentences
    saying what it shows on the run in ``run_dir``, from its tables (None when they are missing;
    :func:`ama.studies.captions.caption` finds it)."""

    name: str
    meaning: str
    draw: Callable
    attacks: bool = False
    caption: Callable[[Path], str | None] | None = None


@dataclass
class Finding:
    """What a report section says of a question on one run: ``sentence`` (one, at most 60 words and 8 numbers: what
    the numbers mean), ``table`` (a DataFrame with columns named for people, e.g.
    :func:`ama.store.tables.readable`; None: none) and ``figures`` (figure names; the study's own when empty)."""

    sentence: str
    table: object = None
    figures: Sequence[str] = ()


@dataclass(frozen=True)
class Verdicts:
    """A table whose rows carry a verdict with its one-sided p-values (``p_holds``, ``p_fails``): the columns of the
    ``value`` and its interval (``low``, ``high``), the ``threshold``, ``name(row)``, how a row's verdict reads, and ``family``, the question the rows answer, within which
    Holm adjusts them ("": the declaring study's name)."""

    value: str
    low: str
    high: str
    threshold: float
    name: Callable
    family: str = ""


@dataclass
class Inputs:
    """What a study's ``compute`` gets besides the model: the images ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` and their
    ``names``, the run's ``params`` and folder ``out_dir``, ``labels`` ``(B,)`` (-1 where unknown), ``reported``
    (the names of every image the run reports, so that a fit can avoid them), ``attack(optimizer, e)`` (the run's
    saved attack of these images, attacked again where missing, once per run) and ``extras`` (what a study leaves
    for the notebook's figures, e.g. maps)."""

    x: object
    names: list
    params: object
    out_dir: object
    labels: object
    reported: list
    attack: Callable
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """One question, declared once (see the module docstring): ``name`` (its ``STUDIES`` value), ``question`` (the
    report's and the notebook's heading), what it computes and writes, ``judges`` (verdicts it reads off a table
    another notebook writes, by that table's name), how the report states it; ``always`` True for a study every run computes from what it has (``STUDIES`` does not name it);
    ``power`` the effect it must detect (:class:`ama.stats.power.PairedEffect`), from which its images are planned:
    the profile named after it (:data:`ama.params.PROFILES`; ``profile`` names another), or the command
    docs/EVIDENCE.md gives, has at least that many (tested)."""

    name: str
    question: str
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    compute: Callable | None = None
    summarise: Callable[[dict], dict] | None = None
    run_tables: Callable | None = None
    judges: Mapping[str, Verdicts] = field(default_factory=dict)
    keys: Sequence[str] = ()
    measured_by: Sequence[str] = ()
    section: Callable[[Path], "Finding | None"] | None = None
    always: bool = False
    notebook: str = "05"
    power: object = None
    profile: str = ""

    def in_run(self, params) -> bool:
        """Does a run of ``params`` (:class:`ama.params.RunParams`) compute it? Those its ``STUDIES`` name, and an
        ``always`` study (computed from what every run has) in every run."""
        return self.always or self.name in params.studies

    def table_names(self, level: str | None = None) -> list[Artifact]:
        """Its declared tables (``TABLES.<name>``), those of one ``level`` when given."""
        return [getattr(TABLES, t.name) for t in self.tables if level is None or t.level == level]


_REGISTRY: dict[str, Study] = {}
_MODULES: dict[str, str] = {}  # study name -> the module that declared it


def register(study: Study) -> Study:
    """Declare ``study``: its tables and figures into :data:`ama.artifacts.TABLES` / ``FIGURES``, itself into the
    registry; returned, so a module can keep it (``STUDY = register(Study(...))``)."""
    if study.name in _REGISTRY:
        raise StudyError(f"study {study.name!r} is declared twice")
    if any(t.level not in LEVELS for t in study.tables):
        raise StudyError(f"study {study.name!r}: table levels one of {LEVELS}")
    in_fast = study.name not in OWN_MODELS  # a study with models of its own runs only when named: FAST never writes it
    for t in study.tables:
        TABLES.declare(Artifact(t.name, "table", study.notebook, t.meaning, t.fast and in_fast))
    for f in study.figures:
        FIGURES.declare(Artifact(f.name, "figure", study.notebook, f.meaning, in_fast))
    _REGISTRY[study.name] = study
    _MODULES[study.name] = sys._getframe(1).f_globals.get("__name__", "")
    return study


def unregister(name: str) -> None:
    """Take the study ``name`` back out of the registry, with its tables and figures (an example, a test)."""
    study = _REGISTRY.pop(name, None)
    _MODULES.pop(name, None)
    for t in study.tables if study else ():
        TABLES.withdraw(t.name)
    for f in study.figures if study else ():
        FIGURES.withdraw(f.name)


def registered() -> dict[str, tuple[Study, str]]:
    """``{name: (Study, the module that declared it)}`` of the studies declared so far (:mod:`ama.studies.registry`
    imports them all first)."""
    return {n: (s, _MODULES[n]) for n, s in _REGISTRY.items()}


def deciding(run_dir, table: str, rows):
    """``rows`` of the declared verdict table ``table`` (a study's :class:`Table` or ``judges`` entry) with column
    ``verdict`` replaced by the verdict that decides: the run's ``tables/verdicts.csv`` (Holm-adjusted within its
    family, :mod:`ama.report.verdicts`), looked up by the row's name and model (a row outside every family keeps its
    own, marked "(unadjusted)"). Returned as ``(rows, label)``, the label ``"verdict (Holm)"``; where the run has no ``verdicts.csv`` yet (before its report), the rows' own verdicts
    and ``"verdict (unadjusted)"``. ``run_dir``: the run folder."""
    import pandas as pd

    declared = None
    for study in _REGISTRY.values():
        declared = declared or next((t.verdicts for t in study.tables if t.name == table and t.verdicts), None)
        declared = declared or study.judges.get(table)
    path = Path(run_dir) / "tables" / f"{TABLES.verdicts}.csv"
    if declared is None or not path.is_file() or "verdict" not in rows:
        return rows, "verdict (unadjusted)"
    v = pd.read_csv(path)
    v = v[v.table == table]
    lookup = {(r.verdict_of, r.model): r.holm_verdict for r in v.itertuples()}
    lookup.update({(r.verdict_of, None): r.holm_verdict for r in v.itertuples()})
    out = []
    for r in rows.itertuples():
        found = lookup.get((declared.name(r), getattr(r, "model", None)), lookup.get((declared.name(r), None)))
        out.append(r.verdict if not isinstance(r.verdict, str) else found or f"{r.verdict} (unadjusted)")
    return rows.assign(verdict=out), "verdict (Holm)"


def family_of(study: Study, verdicts: Verdicts) -> str:
    """The family of a verdict table's rows: the question they answer (``verdicts.family``), else the ``study``'s
    name: never what else a run computed."""
    return verdicts.family or study.name
