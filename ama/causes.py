"""Why the margin? Notebook 05's and the report's account of three substitutions the kit makes (``SCIENCE.md``
section 8): the padding (:mod:`ama.padding_study`, on a run with padding variants), the frame's four sides
(:mod:`ama.sides`) and the ERF's definition (:mod:`ama.erf_definitions`), read from a run's tables.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .artifacts import FIGURES, TABLES
from .control_figures import erf_definitions_figure, frame_sides_figure
from .erf_definitions import definition_lines
from .intervals import INCONCLUSIVE
from .padding import AS_TRAINED, base_of, padding_of
from .padding_study import padding_lines, padding_tests, variant_table
from .results import read_table
from .sides import side_lines


def padding_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """``padding_variants`` and ``padding_tests`` of a run with padding variants, from its tables; ``{}`` for a run
    without."""
    tables = Path(run_dir) / "tables"
    table, ablation = variant_table(run_dir), read_table(tables, TABLES.attack_ablation)
    if table is None or ablation is None:
        return {}
    return {TABLES.padding_variants: table, TABLES.padding_tests: padding_tests(ablation)}


def frame_sides_of(run_dir: Path):
    """The figure ``frame_sides`` from the run's tables, or None when it has no side masses."""
    tables = Path(run_dir) / "tables"
    mass, attack = read_table(tables, TABLES.frame_side_mass), read_table(tables, TABLES.attack_sides_summary)
    return frame_sides_figure(mass, attack) if mass is not None and len(mass) else None


def erf_definitions_of(run_dir: Path):
    """The figure ``erf_definitions`` from the run's tables, or None when it has none."""
    definitions = read_table(Path(run_dir) / "tables", TABLES.erf_definitions)
    return erf_definitions_figure(definitions) if definitions is not None and len(definitions) else None


AXES = (("left - right", "left / right"), ("top - bottom", "top / bottom"))


def _axis_cause(lead, variants) -> str:
    """One axis of :func:`imbalance_line`: the as-trained model's row ``lead`` beside the symmetric variants' rows."""
    decided = [v for v in variants if v.verdict != INCONCLUSIVE]
    if lead.verdict == INCONCLUSIVE:
        return "no clear imbalance as trained" + (", though the symmetric paddings show one" if decided else "")
    if not variants:
        return "an imbalance as trained; run the padding variants (MODELS=lite0,lite0-zero-pad,...) to test the cause"
    if len(decided) == len(variants) and all((v.value > 0) != (lead.value > 0) for v in decided):
        return "it flips with the padding: the padding's geometry causes it"
    return "it does not follow the padding: the kit leaves it unexplained"


def imbalance_line(mass: pd.DataFrame) -> str | None:
    """Is the frame's imbalance of ERF mass between opposite sides the padding's? TF "same" gives the right column and
    the bottom row a stride-2 kernel's centre tap and the left and top only its edge tap, symmetric padding the
    reverse; so where the padding causes an imbalance, it flips between the as-trained model and its symmetric
    variants. Per axis (all cells): each model's paired difference, and that reading of it. ``mass``: rows of
    ``frame_side_mass`` (:func:`ama.sides.side_mass_summary`)."""
    rows = mass[mass.cell_kind == "all"].set_index(["model", "measure"])
    models = [m for m in mass.model.unique() if all((m, a) in rows.index for a, _ in AXES)]
    lead = [m for m in models if padding_of(m) == AS_TRAINED]
    if not lead:
        return None
    symmetric = [m for m in models if base_of(m) == lead[0] and m != lead[0]]
    text = lambda r: f"{r.value:+.2f} ({r.low:+.2f} to {r.high:+.2f}, {r.verdict})"  # noqa: E731
    parts = []
    for measure, axis in AXES:
        values = "; ".join(f"{m} {text(rows.loc[(m, measure)])}" for m in [lead[0], *symmetric])
        cause = _axis_cause(rows.loc[(lead[0], measure)], [rows.loc[(m, measure)] for m in symmetric])
        parts.append(f"{measure}: {values}: {cause}")
    return ("ERF mass on opposite sides of the frame, paired per image (TF 'same' padding gives the right column and the "
            "bottom row a stride-2 kernel's centre tap, symmetric padding the left and top): " + ". ".join(parts) + ".")


def cause_lines(run_dir: Path) -> list[str]:
    """The report's sentences: the ERF's two definitions, the frame's sides (and the imbalance's cause when the run
    has padding variants), the padding variants' comparison."""
    tables = Path(run_dir) / "tables"
    definitions, mass, attack = (read_table(tables, t) for t in (TABLES.erf_definitions, TABLES.frame_side_mass,
                                                                 TABLES.attack_sides_summary))
    lines = definition_lines(definitions) if definitions is not None and len(definitions) else []
    if (mass is not None and len(mass)) or (attack is not None and len(attack)):  # a sides study alone: no masses
        lines += side_lines(mass if mass is not None else pd.DataFrame(), attack)
        imbalance = imbalance_line(mass) if mass is not None and len(mass) else None
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
