"""Why the margin? Notebook 05's and the report's account of three substitutions the kit makes (``SCIENCE.md``
section 8): the padding (:mod:`ama.padding_study`, on a run with padding variants), the frame's four sides
(:mod:`ama.sides`) and the ERF's definition (:mod:`ama.erf_definitions`), read from a run's tables.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .artifacts import FIGURES, TABLES
from .control_figures import erf_definitions_figure, frame_sides_figure
from .erf_definitions import definition_lines
from .intervals import INCONCLUSIVE
from .padding import AS_TRAINED, padding_of
from .padding_study import padding_lines, padding_tests, variant_table
from .results import read_table, save_figure, save_table
from .sides import side_lines


def save_padding_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """``padding_variants`` and ``padding_tests`` of a run with padding variants (written to its tables, returned);
    ``{}`` for a run without (nothing written)."""
    tables = Path(run_dir) / "tables"
    table, ablation = variant_table(run_dir), read_table(tables, TABLES.attack_ablation)
    if table is None or ablation is None:
        return {}
    out = {TABLES.padding_variants: table, TABLES.padding_tests: padding_tests(ablation)}
    for name, df in out.items():
        save_table(df, run_dir, name)
    return out


def save_cause_figures(run_dir: Path) -> list[Path]:
    """The figures ``frame_sides`` and ``erf_definitions`` from the run's tables (those it has), saved; their paths."""
    tables, saved = Path(run_dir) / "tables", []
    mass, attack = read_table(tables, TABLES.frame_side_mass), read_table(tables, TABLES.attack_sides_summary)
    definitions = read_table(tables, TABLES.erf_definitions)
    for stem, make, ok in ((FIGURES.frame_sides, lambda: frame_sides_figure(mass, attack), mass is not None and len(mass)),
                           (FIGURES.erf_definitions, lambda: erf_definitions_figure(definitions),
                            definitions is not None and len(definitions))):
        if ok:
            fig = make()
            saved.append(save_figure(fig, run_dir, stem))
            plt.close(fig)
    return saved


def imbalance_line(mass: pd.DataFrame) -> str | None:
    """Is the frame's left / right imbalance of ERF mass the padding's? Each model's ``left - right`` and ``top -
    bottom`` (all cells) side by side, and what the padding's geometry predicts: TF "same" and symmetric padding each
    treat rows and columns alike (TF "same" pads a stride-2 layer on the right and bottom; symmetric padding at stride 2
    centres the kernels on the first row and column), so an imbalance on one axis only is not the padding's geometry.
    ``mass``: rows of ``frame_side_mass`` (:func:`ama.sides.side_mass_summary`)."""
    rows = mass[mass.cell_kind == "all"].set_index(["model", "measure"])
    models = [m for m in mass.model.unique() if (m, "left - right") in rows.index and (m, "top - bottom") in rows.index]
    if not models:
        return None
    text = lambda r: f"{r.value:+.2f} ({r.low:+.2f} to {r.high:+.2f}, {r.verdict})"  # noqa: E731
    parts = [f"{m} left - right {text(rows.loc[(m, 'left - right')])}, top - bottom {text(rows.loc[(m, 'top - bottom')])}"
             for m in models]
    lead = [m for m in models if padding_of(m) == AS_TRAINED]
    why = ""
    if lead:
        lr, tb = rows.loc[(lead[0], "left - right")].verdict, rows.loc[(lead[0], "top - bottom")].verdict
        if lr == INCONCLUSIVE and tb == INCONCLUSIVE:
            why = f": {lead[0]} shows no clear imbalance to explain"
        elif (lr == INCONCLUSIVE) != (tb == INCONCLUSIVE):
            why = (f": {lead[0]}'s imbalance is on one axis only, which the padding's geometry (alike for rows and "
                   "columns) does not predict; the kit leaves it unexplained")
        else:
            why = f": {lead[0]} is imbalanced on both axes, as the padding's geometry predicts"
    variants = "" if any(padding_of(m) != AS_TRAINED for m in models) else (
        " (run the padding variants, MODELS=lite0,lite0-zero-pad,..., to see the padding's part)")
    return "ERF mass on opposite sides of the frame, paired per image: " + "; ".join(parts) + why + variants + "."


def cause_lines(run_dir: Path) -> list[str]:
    """The report's sentences: the ERF's two definitions, the frame's sides (and the imbalance's cause when the run
    has padding variants), the padding variants' comparison."""
    tables = Path(run_dir) / "tables"
    definitions, mass, attack = (read_table(tables, t) for t in (TABLES.erf_definitions, TABLES.frame_side_mass,
                                                                 TABLES.attack_sides_summary))
    lines = definition_lines(definitions) if definitions is not None and len(definitions) else []
    if mass is not None and len(mass):
        lines += side_lines(mass, attack)
        imbalance = imbalance_line(mass)
        lines += [imbalance] if imbalance else []
    tests = read_table(tables, TABLES.padding_tests)
    lines += padding_lines(variant_table(run_dir), tests if tests is not None else pd.DataFrame())
    return lines


def padding_summary(run_dir: Path) -> list[str]:
    """The padding variants' lines of a run (:func:`ama.padding_study.padding_lines`) and the frame's imbalance beside
    them (:func:`imbalance_line`): docs/EVIDENCE.md's generated block of the models reference."""
    tables = Path(run_dir) / "tables"
    tests, mass = read_table(tables, TABLES.padding_tests), read_table(tables, TABLES.frame_side_mass)
    lines = padding_lines(variant_table(run_dir), tests if tests is not None else pd.DataFrame())
    imbalance = imbalance_line(mass) if mass is not None and len(mass) else None
    return lines + ([imbalance] if imbalance else [])
