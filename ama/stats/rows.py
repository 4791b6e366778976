"""The rows of the attack's tables that the statistics, figures and sentences read, each selection defined once.

The attack's tables (``attack_metrics``, ``attack_summary``, ``attack_seeds``, the ablation's) hold a row per setting:
``setting`` (``attack`` or ``random_frame``), ``mode`` (``flip``, ``keep``; ``random`` for the random frame),
``quantized`` (True: the 8-bit image a PNG holds; False: the float image before rounding), ``n_iter`` and ``e``.
"""
from __future__ import annotations

import pandas as pd


def eight_bit(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the 8-bit images (what a saved PNG gives back)."""
    return table[table.quantized]


def attack_rows(table: pd.DataFrame, mode: str = "flip") -> pd.DataFrame:
    """The attack's 8-bit rows of one ``mode`` (not the random frame's), every ``n_iter`` and ``e``."""
    rows = eight_bit(table)
    return rows[(rows.setting == "attack") & (rows["mode"] == mode)]


def grid_attack(ablation: pd.DataFrame) -> pd.DataFrame:
    """The attack grid's rows of ``attack_ablation`` as the grid runs each optimiser: 8-bit, flip, its default settings,
    the run's largest budget; one row per model x image x optimiser x ``e``. ``ablation``: rows of ``attack_ablation``."""
    q = eight_bit(ablation)
    q = q[q["mode"] == "flip"] if "mode" in q else q
    q = q[q.variant == "default"] if "variant" in q else q
    return q[q.n_iter == q.n_iter.max()] if "n_iter" in q else q


def original_attack(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's attack as a run states it: flip, 8-bit, the run's largest ``n_iter`` (every ``e``); in
    ``attack_summary`` with the random frame's rates beside (``random_*``)."""
    rows = attack_rows(table, "flip")
    return rows[rows.n_iter == rows.n_iter.max()]
