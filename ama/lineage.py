"""A table's lineage: did an attack's iterates, or the images an attack saved, feed it?

An attack passes through ``sign()`` steps and ``argmax``, which flip on float rounding, and rounding differs between
CPUs, thread counts and batch layouts; so a table computed from an attack is one draw of a random variable, and
:mod:`ama.reference` compares it with its reference as statistics. Every other table is deterministic on the CPU and
is compared number by number.

The lineage is recorded as it happens, not listed by hand: the attack's entry points call :func:`touch` (``attack``:
:func:`ama.attack.marginal_attack`; ``adversarial images``: :func:`ama.attack.evaluate_images` of saved images), a
process that reads a run's tables inherits their sources (:func:`inherit`), ranks pass theirs to the merge
(:mod:`ama.shards`), and :func:`ama.results.save_table` writes, for every table, the sources its process had met before
writing it into ``tables/lineage.json`` (``{table: {"sources": [...]}}``). This errs one way only: a table written
after an attack in the same process counts as stochastic even if it did not use the attack (compared more loosely,
never wrongly as exact).
"""
from __future__ import annotations

import json
from pathlib import Path

FILE = "lineage.json"      # in a run's tables/ folder
ATTACK = "attack"
ADVERSARIAL_IMAGES = "adversarial images"
STOCHASTIC_SOURCES = (ATTACK, ADVERSARIAL_IMAGES)

_met: set[str] = set()     # the sources this process has met so far


def touch(source: str) -> None:
    """Record that this process computed from ``source`` (one of :data:`STOCHASTIC_SOURCES`)."""
    if source not in STOCHASTIC_SOURCES:
        raise ValueError(f"unknown lineage source {source!r}; use one of {', '.join(STOCHASTIC_SOURCES)}")
    _met.add(source)


def sources() -> list[str]:
    """The sources this process has met, sorted."""
    return sorted(_met)


def reset() -> None:
    """Forget the sources met (a test's fresh start)."""
    _met.clear()


def read(tables_dir) -> dict[str, dict]:
    """``{table: {"sources": [...]}}`` of a ``tables/`` folder; ``{}`` when it has no lineage file. ``tables_dir``: a
    run's ``tables/`` folder."""
    path = Path(tables_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def is_stochastic(entry: dict | None) -> bool:
    """Whether a table's lineage entry names a stochastic source. ``entry``: one table's entry of :func:`read`, or None."""
    return bool(entry) and any(s in STOCHASTIC_SOURCES for s in entry.get("sources", ()))


def inherit(tables_dir, names) -> None:
    """This process read the tables ``names`` of ``tables_dir``: it meets their sources too."""
    known = read(tables_dir)
    for name in names:
        for source in known.get(name, {}).get("sources", ()):
            touch(source)


def updated(tables_dir, names) -> str:
    """The text of ``tables_dir``'s lineage file once the tables ``names`` are written by this process (its sources),
    the other tables' entries kept; :func:`ama.results.save_tables` writes it, atomically."""
    entries = read(tables_dir)
    for name in names:
        entries[name] = {"sources": sources()}
    return json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
