"""A table's lineage: did an attack's iterates, or the images an attack saved, feed it?

An attack passes through ``sign()`` steps and ``argmax``, which flip on float rounding, and rounding differs between
CPUs, thread counts and batch layouts; so a table computed from an attack is one draw of a random variable, and
:mod:`ama.runs.check` compares it with its reference as statistics. Every other table is deterministic on the CPU and
is compared number by number.

The lineage is recorded as it happens, not listed by hand: the attack kernel counts its entry points' calls
(:data:`ama.attack.marginal.CALLS`; it imports nothing of this module), and :func:`sources` reads those counts (``attack``:
:func:`ama.attack.marginal.marginal_attack`; ``adversarial images``: :func:`ama.attack.marginal.evaluate_images` of
saved images); a process that reads a run's tables inherits their sources (:func:`inherit`), ranks pass theirs to the
merge (:mod:`ama.runs.shards`), and :func:`ama.store.tables.save_table` writes, for every table, the sources its process
had met before writing it into ``tables/lineage.json`` (``{table: {"sources": [...]}}``). This errs one way only: a
table written after an attack in the same process counts as stochastic even if it did not use the attack (compared more
loosely, never wrongly as exact).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FILE = "lineage.json"      # in a run's tables/ folder
ATTACK = "attack"
ADVERSARIAL_IMAGES = "adversarial images"
STOCHASTIC_SOURCES = (ATTACK, ADVERSARIAL_IMAGES)
KERNEL_CALLS = {"marginal_attack": ATTACK, "evaluate_images": ADVERSARIAL_IMAGES}  # ama.attack.marginal.CALLS' keys -> sources

_met: set[str] = set()     # the sources this process has met so far, besides the kernel's calls
_seen: dict[str, int] = {}  # the kernel's call counts at the last reset


def _kernel_calls() -> dict[str, int]:
    """``ama.attack.marginal.CALLS`` where this process imported the attack (no import here: without it, no attack ran)."""
    attack = sys.modules.get(f"{__package__.rpartition('.')[0]}.attack.marginal")
    return dict(getattr(attack, "CALLS", {}))


def touch(source: str) -> None:
    """Record that this process computed from ``source`` (one of :data:`STOCHASTIC_SOURCES`)."""
    if source not in STOCHASTIC_SOURCES:
        raise ValueError(f"unknown lineage source {source!r}; use one of {', '.join(STOCHASTIC_SOURCES)}")
    _met.add(source)


def sources() -> list[str]:
    """The sources this process has met since the last :func:`reset`, sorted: those touched or inherited, and the
    attack kernel's entry points called since."""
    called = {KERNEL_CALLS[k] for k, n in _kernel_calls().items() if k in KERNEL_CALLS and n > _seen.get(k, 0)}
    return sorted(_met | called)


def reset() -> None:
    """Forget the sources met (a test's fresh start)."""
    _met.clear()
    _seen.clear()
    _seen.update(_kernel_calls())


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
    the other tables' entries kept; :func:`ama.store.tables.save_tables` writes it, atomically."""
    entries = read(tables_dir)
    for name in names:
        entries[name] = {"sources": sources()}
    return json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
