"""The studies' registry: every module that declares a study (:mod:`ama.studies.study`) imported, in the order the
report and notebook 05 show them, and the lists the kit reads off it: the run's studies, their verdict tables with their
families, the identity columns their tables add.

Only what needs every study imports this module (notebook 05's :mod:`ama.studies.beyond`, the report, the verdicts, the
check against a reference), so an edit of one study reruns notebook 05 and the report, not the claims' notebooks
(:mod:`ama.deps` reads :data:`STUDY_MODULES` as imports).
"""
from __future__ import annotations

import importlib

from ..artifacts import TABLES
from .study import Study, StudyError, Verdicts, family_of, registered

__all__ = ["STUDY_MODULES", "studies", "study", "verdict_tables", "study_keys"]

# The modules that declare a study, in the order the report and notebook 05 show them.
STUDY_MODULES = ("across_models", "location", "transfer", "faithfulness", "border_defence", "erf_definitions", "sides",
                 "padding_study", "padding_leverage")


def studies() -> dict[str, Study]:
    """``{name: Study}`` of every declared study, its module imported first: those of :data:`STUDY_MODULES` in its
    order, then any other in the order declared."""
    for module in STUDY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    rank = {f"{__package__}.{m}": k for k, m in enumerate(STUDY_MODULES)}
    found = registered()
    names = sorted(found, key=lambda n: rank.get(found[n][1], len(rank)))  # stable: the rest as declared
    return {n: found[n][0] for n in names}


def study(name: str) -> Study:
    """The study called ``name``; a one-line error naming the declared ones otherwise."""
    found = studies()
    if name not in found:
        raise StudyError(f"no study {name!r}; declared: {', '.join(found)}")
    return found[name]


def verdict_tables() -> dict[str, tuple[str, Verdicts]]:
    """``{table: (family, Verdicts)}`` of every study's tables whose rows carry a verdict, in the registry's order
    (those it ``judges`` of another notebook's tables first)."""
    out = {}
    for s in studies().values():
        out.update({t: (family_of(s, v), v) for t, v in s.judges.items()})
        out.update({getattr(TABLES, t.name): (family_of(s, t.verdicts), t.verdicts) for t in s.tables
                    if t.verdicts is not None})
    return out


def study_keys() -> tuple[list[str], list[str]]:
    """The identity columns the studies' tables add, and those of them that say how a result was measured."""
    keys, measured = [], []
    for s in studies().values():
        keys += [k for k in s.keys if k not in keys]
        measured += [k for k in s.measured_by if k not in measured]
    return keys, measured
