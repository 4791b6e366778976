"""The figures of the controls beside the claims (notebooks 02, 03 and 05; tables of :mod:`ama.studies.controls` and
:mod:`ama.studies.ablation`): claim 1 beside its baselines, the attack's location control, the ingredient study. Each
function takes a summary table and returns a matplotlib ``Figure`` whose intervals are the verdicts'.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def misalignment_baselines_figure(verdicts: pd.DataFrame, threshold: float):
    """Claim 1 beside its baselines, per model and upsampling (:func:`ama.studies.controls.misalignment_by_upsampling`):
    the centre cells' ERF mass outside the IRF (bars: BCa 95% interval over images, as its verdict), a flat ERF's and a
    centred Gaussian's of the ERF's own spread (markers), and the claim's bar (dashed). ``verdicts``: rows of
    ``misalignment_upsampling_verdicts``; ``threshold``: claim 1's bar."""
    models = list(verdicts.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        d = verdicts[verdicts.model == model].reset_index(drop=True)
        x = np.arange(len(d))
        v = d.erf_mass_outside_irf
        ax.bar(x, v, yerr=[v - d.low, d.high - v], capsize=4, color="C0", label="ERF (95% CI over images)")
        ax.scatter(x, d.uniform_mass_outside_irf, marker="_", s=500, lw=2.5, color="k", zorder=3, label="flat ERF")
        if "centred_gaussian_mass_outside_irf" in d:
            ax.scatter(x, d.centred_gaussian_mass_outside_irf, marker="o", color="C3", zorder=3,
                       label="Gaussian of the ERF's spread, centred")
        ax.axhline(threshold, ls="--", color="grey", label=f"claim's bar ({100 * threshold:.0f}%)")
        ax.set_xticks(x, d.upsampling, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}: centre cell")
    axes[0, 0].set_ylabel("ERF mass outside the IRF support")
    fig.tight_layout()
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)  # beside, not on, the bars
    return fig


def location_control_figure(summary: pd.DataFrame):
    """Is the margin special? (:func:`ama.studies.controls.location_summary`): per location of the same pixel count, the
    fooling rate (exact 95% interval) and the mean CAM cosine to the clean CAM (BCa 95% interval); the frame's
    values as dotted lines."""
    models = list(summary.model.unique())
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        d = summary[summary.model == model].reset_index(drop=True)
        x = np.arange(len(d))
        colours = ["C3" if loc == "frame" else "C0" for loc in d.location]
        for ax, (col, lo, hi, label) in zip(row, (("fooling_rate", "fooling_low", "fooling_high", "fooling rate"),
                                                  ("cam_cosine", "cosine_low", "cosine_high", "CAM cosine to clean"))):
            ax.bar(x, d[col], yerr=[d[col] - d[lo], d[hi] - d[col]], capsize=4, color=colours)
            ax.axhline(float(d.loc[d.location == "frame", col].iloc[0]), ls=":", color="C3")
            ax.set_xticks(x, d.location, rotation=20, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(f"{label} (95% CI)")
        row[0].set_title(f"{model}: {int(d.mask_pixels.iloc[0])} pixels at e = {int(d.e.iloc[0])}, "
                         f"{int(d.n_images.max())} images")
        row[1].set_title("lower: the CAM moved more")
    fig.tight_layout()
    return fig


def ingredients_figure(summary: pd.DataFrame):
    """Which ingredient makes the attack strong? (:func:`ama.studies.ablation.ingredient_summary`): per variant on the
    reported half, the fooling rate and the CAM cosine (bars: BCa 95% interval over images, each image's mean over the
    seeds), the reference's values as dotted lines, the variant chosen on the tuning half in red."""
    rows = summary.dropna(subset=["fooling_rate"])
    groups = list(rows.groupby(["model", "e", "n_iter"], sort=False))
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False)
    for row, ((model, e, n_iter), d) in zip(axes, groups):
        d = d.reset_index(drop=True)
        y = np.arange(len(d))[::-1]
        colours = ["C3" if c else ("0.45" if v == "reference" else "C0") for v, c in zip(d.variant, d.chosen)]
        for ax, (col, lo, hi, label) in zip(row, (("fooling_rate", "fooling_low", "fooling_high", "fooling rate"),
                                                  ("cam_cosine", "cosine_low", "cosine_high", "CAM cosine to clean"))):
            ax.barh(y, d[col], xerr=[d[col] - d[lo], d[hi] - d[col]], capsize=4, color=colours)
            ref = d.loc[d.variant == "reference", col]
            if len(ref):
                ax.axvline(float(ref.iloc[0]), ls=":", color="0.3", label="reference")
            ax.set_xlim(0, 1.05)
            ax.set_xlabel(f"{label}, 8-bit (95% CI over images)")
            ax.set_yticks(y, d.variant if ax is row[0] else [""] * len(d))
        row[0].legend(fontsize=8, loc="lower right")
        row[0].set_title(f"{model}, e = {e}, {n_iter} passes: {int(d.n_images.max())} reported images x "
                         f"{int(d.n_seeds.max())} seed(s)", fontsize=10)
        row[1].set_title(f"red: chosen on {int(d.tune_images.max())} other images; lower cosine: the CAM moved more",
                         fontsize=10)
    fig.tight_layout()
    return fig


def erf_definitions_figure(summary: pd.DataFrame):
    """Claim 1 under two ERF definitions (:func:`ama.studies.erf_definitions.definition_summary`): per model and cell
    kind, the ERF mass outside the IRF minus the aligned null's, gradient beside occlusion (BCa 95% intervals over
    images; above 0: misaligned)."""
    models = list(summary.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        d = summary[summary.model == model]
        kinds = list(d.cell_kind.unique())
        for k, (definition, g) in enumerate(d.groupby("definition", sort=False)):
            g = g.set_index("cell_kind").reindex(kinds)
            x = np.arange(len(kinds)) + (k - 0.5) * 0.38
            ax.bar(x, g.null_gap, 0.36, yerr=[g.null_gap - g.low, g.high - g.null_gap], capsize=3, color=f"C{k}",
                   label=f"{definition} ERF: claim 1 {g.claim1.iloc[0]}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(kinds)), kinds)
        ax.set_title(f"{model}, {int(d.n_images.max())} images")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("mass outside the IRF minus the aligned null's")
    fig.tight_layout()
    return fig


def frame_sides_figure(mass: pd.DataFrame, attack: pd.DataFrame | None):
    """The frame's sides (:mod:`ama.studies.sides`): per model, each side's ERF mass over its share of the image (all
    cells, BCa 95% intervals) and, when ``attack`` is given, the one-side attack's fooling rate (exact 95% intervals).
    ``mass``: :func:`ama.studies.sides.side_mass_summary` rows; ``attack``: :func:`ama.studies.sides.side_attack_summary` rows."""
    mass = mass[mass.cell_kind == "all"]
    models = list(mass.model.unique())
    sides = [s for s in mass.measure.unique() if " - " not in s]
    panels = 2 if attack is not None and len(attack) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        x = np.arange(len(sides)) + (k - (len(models) - 1) / 2) * width
        d = mass[mass.model == model].set_index("measure").reindex(sides)
        axes[0, 0].bar(x, d.value, width * 0.95, yerr=[d.value - d.low, d.high - d.value], capsize=3, label=model)
        if panels == 2:
            a = attack[(attack.model == model)].set_index("side").reindex(sides)
            axes[0, 1].bar(x, a.fooling_rate, width * 0.95, yerr=[a.fooling_rate - a.low, a.high - a.fooling_rate],
                           capsize=3, label=model)
    axes[0, 0].axhline(1, ls=":", color="grey")
    axes[0, 0].set_ylabel("ERF mass on the side / its area share")
    for ax in axes[0]:
        ax.set_xticks(np.arange(len(sides)), sides)
        ax.legend(fontsize=7)
    if panels == 2:
        axes[0, 1].set_ylim(0, 1.05)
        axes[0, 1].set_ylabel("fooling rate, attack on that side only")
    fig.tight_layout()
    return fig
