"""Forest plots of paired comparisons: one row per comparison, its estimate and 95% interval against the line of no
difference, its counts written beside it. :func:`forest_figure` draws any table of such rows; the location control,
the frame's sides and the ingredient study draw theirs with it (:mod:`ama.figures.control_charts`).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..stats.intervals import FAILS, HOLDS, INCONCLUSIVE

SIDE_COLOURS = {"above": "C0", "below": "C3", "includes": "0.45"}  # where a row's interval lies against the reference

VERDICT_SIDES = {HOLDS: "above", FAILS: "below", INCONCLUSIVE: "includes"}


def interval_side(low: float, high: float, reference: float = 0.0) -> str:
    """``above``, ``below`` or ``includes``: where the interval ``[low, high]`` lies against ``reference`` (a missing
    bound: ``includes``)."""
    if np.isfinite(low) and low > reference:
        return "above"
    if np.isfinite(high) and high < reference:
        return "below"
    return "includes"


def forest_figure(rows: pd.DataFrame, label: str, estimate: str, low: str, high: str, notes: Sequence[str] | None = None,
                  panel: str | None = None, xlabel: str = "difference (95% interval)", title: str | None = None,
                  reference: float = 0.0, reference_label: str = "no difference", side_labels: dict | None = None,
                  scale: float = 1.0, sharex: bool = True, verdict: str | None = None):
    """A forest plot: one row per row of ``rows``, top to bottom in their order, with its ``estimate`` (a point) and its
    95% interval ``[low, high]`` (a line), coloured by where the interval lies against ``reference`` (above, below, or
    including it; :data:`SIDE_COLOURS`), the reference drawn as a dashed vertical line, named ``reference_label`` in the legend, and
    ``notes`` written at the right of each row. ``label``: the column naming each row; ``estimate``, ``low``, ``high``:
    the columns of the estimate and its interval; ``notes``: one text per row (e.g. ``n = 20; 3 vs 1 images``), or
    None; ``panel``: a column splitting the rows into panels stacked one above the other (one x axis), or None;
    ``xlabel``, ``title``: the axis label and the figure's title; ``side_labels``: the legend's words for ``above``,
    ``below`` and ``includes`` (defaults: the interval's side); ``scale``: the values are multiplied by it (100: a
    rate drawn in percentage points); ``sharex``: the panels share one x axis (False: each its own, each labelled with
    its panel's name when ``xlabel`` is a dict of them); ``verdict``: a column of three-valued verdicts
    (:mod:`ama.stats.intervals`: holds, does not hold, inconclusive) that colours the rows instead of the interval's
    side (a verdict may need an exact test beside its interval). Returns the figure; ``fig.forest_rows`` is the number of rows drawn."""
    rows = rows.reset_index(drop=True)
    notes = list(notes) if notes is not None else [""] * len(rows)
    groups = [(None, rows.index)] if panel is None else [(k, g.index) for k, g in rows.groupby(panel, sort=False)]
    heights = [max(len(idx), 2) + 1.4 for _, idx in groups]
    width_note = max((len(n) for n in notes), default=0)
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5 + 0.055 * width_note, 0.9 + 0.4 * sum(heights)),
                             squeeze=False, sharex=sharex, gridspec_kw=dict(height_ratios=heights))
    words = {"above": f"interval above {reference:g}", "below": f"interval below {reference:g}",
             "includes": f"interval includes {reference:g}", **(side_labels or {})}
    values = rows[[estimate, low, high]].astype(float) * scale
    seen = set()
    for ax, (key, idx) in zip(axes[:, 0], groups):
        y = np.arange(len(idx))[::-1]
        for yy, k in zip(y, idx):
            v, lo, hi = values.loc[k, estimate], values.loc[k, low], values.loc[k, high]
            side = (VERDICT_SIDES.get(rows.loc[k, verdict], "includes") if verdict
                    else interval_side(lo, hi, reference * scale))
            seen.add(side)
            ax.plot([lo, hi], [yy, yy], color=SIDE_COLOURS[side], lw=2.4, solid_capstyle="butt")
            ax.plot([v], [yy], "o", color=SIDE_COLOURS[side], mec="k", ms=8, zorder=3)
            ax.annotate(notes[k], (1.02, yy), xycoords=("axes fraction", "data"), va="center", fontsize=8)
        ax.axvline(reference * scale, color="k", lw=1, ls="--")
        ax.set_yticks(y, rows.loc[idx, label].astype(str).tolist())
        ax.set_ylim(-0.8, len(idx) - 0.2)
        ax.grid(axis="y", visible=False)
        if key is not None:
            ax.set_title(str(key), fontsize=10, loc="left")
    if isinstance(xlabel, dict):
        for ax, (key, _) in zip(axes[:, 0], groups):
            ax.set_xlabel(xlabel.get(key, ""))
    else:
        axes[-1, 0].set_xlabel(xlabel)
    handles = [Line2D([], [], color="k", lw=1, ls="--", label=f"{reference:g}: {reference_label}")]
    handles += [Line2D([], [], color=SIDE_COLOURS[s], lw=2.4, marker="o", mec="k", label=words[s])
                for s in SIDE_COLOURS if s in seen]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    fig.forest_rows = sum(len(idx) for _, idx in groups)
    return fig
