"""Claim 1 under a second definition of the ERF (``SCIENCE.md`` section 8): the gradient's (the paper's,
:func:`ama.effective_receptive_field`) beside the occlusion's (:func:`ama.kernels.occlusion.occlusion_erf`: the
``|change|`` of a cell's raw CAM when each 16 px patch is filled with the image's mean colour).

Both go through the same :func:`ama.kernels.receptive_field.misalignment` on the same images, so each gets claim 1's
statistics unchanged: the centre cell's mass outside its IRF and, per cell kind, the mass outside beyond the aligned
null (a Gaussian of that definition's own ERF spread centred on the IRF centre;
:func:`ama.studies.claims.aligned_null_gaps`). If the verdict differs between the definitions, the claim rests on the
definition; the report says which. The study ``erf_definitions``, declared at the end (:mod:`ama.studies.study`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..artifacts import TABLES
from ..figures.control_charts import erf_definitions_figure
from ..kernels import receptive_field as rf
from ..kernels.cam_model import CAMModel
from ..kernels.occlusion import OCCLUSION_ERF_PATCH, occlusion_erf
from ..store.tables import interval_text, read_table, readable
from .claims import aligned_null_gaps, centre_mass_outside, misalignment_outcome
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

DEFINITIONS = ("gradient", "occlusion")
COLUMNS = ["image", "model", "definition", "cell", "cell_kind", "erf_mass_outside_irf",
           "centred_gaussian_mass_outside_irf", "uniform_mass_outside_irf", "centroid_distance_px"]


def definition_rows(model: CAMModel, x: torch.Tensor, names: Sequence[str], e: int,
                    patch: int = OCCLUSION_ERF_PATCH) -> pd.DataFrame:
    """One row per image x definition x cell (:data:`COLUMNS`): :func:`ama.kernels.receptive_field.misalignment_table`
    of the gradient ERF and of the occlusion ERF (``patch`` px squares) of ``x`` ``(B, 3, H, W)`` in ``[0, 1]``; ``e``:
    the frame width of the margin measures."""
    maps = {"gradient": rf.effective_receptive_field(model, x), "occlusion": occlusion_erf(model, x, patch)}
    return pd.concat([rf.misalignment_table(model, x, names, e=(e,), erf=erf).assign(definition=d)[COLUMNS]
                      for d, erf in maps.items()], ignore_index=True)


def definition_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model x definition x cell kind of :func:`definition_rows`: ``centre_mass_outside`` (the centre cell's mean
    ERF mass outside the IRF, over images; the same on every row of a model and definition), ``null_gap`` = mass
    outside minus the aligned null's, per image first (t interval ``low``, ``high``) with its ``verdict`` against
    0, and ``claim1`` (misaligned: every kind above its null, :func:`ama.studies.claims.misalignment_outcome`). The occlusion
    rows carry their p-values (``p_holds``, ``p_fails``: the study's family; the gradient's are claim 1's)."""
    out = []
    for (model, definition), g in rows.groupby(["model", "definition"], sort=False):
        gaps = aligned_null_gaps(g)
        centre = centre_mass_outside(g)
        outcome = misalignment_outcome(gaps)
        for kind, gap in gaps.items():
            row = dict(model=model, definition=definition, cell_kind=kind, n_images=gap.n,
                       centre_mass_outside=centre.value, centre_low=centre.low, centre_high=centre.high,
                       null_gap=gap.value, low=gap.low, high=gap.high, verdict=gap.verdict(0.0), claim1=outcome)
            if definition != "gradient":
                row.update(gap.p_columns(0.0))
            out.append(row)
    return pd.DataFrame(out)


def definition_finding(summary: pd.DataFrame, verdict: str = "verdict") -> Finding:
    """The report's finding: claim 1 under the gradient ERF and the gradient-free occlusion ERF, per cell kind
    (``summary``: :func:`definition_summary`, its verdicts those that decide, headed ``verdict``)."""
    agree = all(g.groupby("definition").claim1.first().nunique() == 1 for _, g in summary.groupby("model"))
    occl = summary[summary.definition != "gradient"]
    sentence = (f"Is claim 1 an artefact of the gradient? Measured by occlusion instead ({int(summary.n_images.max())} "
                f"images), the ERF exceeds the aligned null by {occl.null_gap.min():+.2f} to {occl.null_gap.max():+.2f} "
                "across cell kinds; " + ("the two definitions give claim 1 the same verdict." if agree else
                                         "the verdict depends on the ERF's definition."))
    if summary.model.nunique() > 1:  # a row per model and definition: claim 1's verdict and its range over cell kinds
        rows = [{"model": m, "ERF by": d, "beyond the aligned null, over cell kinds": f"{g.null_gap.min():+.2f} to "
                 f"{g.null_gap.max():+.2f}", "claim 1": g.claim1.iloc[0]}
                for (m, d), g in summary.groupby(["model", "definition"], sort=False)]
        return Finding(sentence, pd.DataFrame(rows))
    columns = {}
    columns.update({"ERF by": "definition", "cell kind": "cell_kind",
                    "mass outside the IRF beyond the aligned null": lambda r: interval_text(r.null_gap, r.low, r.high,
                                                                                            signed=True),
                    verdict: "verdict"})
    return Finding(sentence, readable(summary, columns))


def _section(run_dir: Path) -> Finding | None:
    """The report's finding: :func:`definition_finding` of the run's ``erf_definitions``."""
    summary = read_table(Path(run_dir) / "tables", TABLES.erf_definitions)
    if summary is None or summary.empty:
        return None
    return definition_finding(*deciding(run_dir, TABLES.erf_definitions, summary))


def _figure(folder):
    """The figure ``erf_definitions`` from the run's table (None without it)."""
    summary = folder.read(TABLES.erf_definitions)
    return erf_definitions_figure(summary) if summary is not None and len(summary) else None


def _caption(run_dir: Path) -> str | None:
    """The figure's caption on the run in ``run_dir``: the mass outside the IRF beyond the aligned null under each ERF
    definition, across cell kinds (the first model's), None without ``erf_definitions``."""
    rows = read_table(Path(run_dir) / "tables", TABLES.erf_definitions)
    if rows is None or rows.empty:
        return None
    rows = rows[rows.model == rows.model.iloc[0]]
    parts = [f"the {d} ERF {100 * g.null_gap.min():+.0f}% to {100 * g.null_gap.max():+.0f}%"
             for d, g in rows.groupby("definition", sort=False)]
    return ("Beyond the aligned null, across cell kinds, " + ", ".join(parts) + " more mass outside the IRF "
            f"({int(rows.n_images.max())} images).")


STUDY = register(Study(
    name="erf_definitions", question="Why the margin? Claim 1 under the gradient and a gradient-free ERF",
    tables=(Table("erf_definitions_cells",
                  "image x definition x cell: claim 1's measures under the gradient and the occlusion ERF"),
            Table("erf_definitions", "definition x cell kind: the mass outside the IRF beyond the aligned null, "
                  "claim 1's verdict", "summary",
                  verdicts=Verdicts("null_gap", "low", "high", 0.0,
                                    lambda r: f"claim 1 with the {r.definition} ERF: mass outside the IRF beyond "
                                              f"the aligned null, {r.cell_kind} cells"))),
    figures=(Figure("erf_definitions", "claim 1 beyond the aligned null under the gradient and the occlusion ERF",
                    _figure, caption=_caption),),
    compute=lambda model, inputs: {TABLES.erf_definitions_cells: definition_rows(
        model, inputs.x, inputs.names, min(inputs.params.e))},
    summarise=lambda tables: {TABLES.erf_definitions: definition_summary(tables[TABLES.erf_definitions_cells])},
    keys=("definition",), measured_by=("definition",), section=_section))
