"""The figures of the controls beside the claims (notebooks 02, 03 and 05; tables of :mod:`ama.studies.controls` and
:mod:`ama.studies.ablation`): claim 1 beside its baselines, the attack's location control, the ingredient study. Each
function takes a summary table and returns a matplotlib ``Figure`` whose intervals are the verdicts'.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..stats.intervals import holm_verdicts
from .forest import forest_figure


def misalignment_baselines_figure(verdicts: pd.DataFrame, threshold: float | None = None):
    """Claim 1 beside its baselines, per model and upsampling (:func:`ama.studies.controls.misalignment_by_upsampling`):
    the centre cells' ERF mass outside the IRF (bars: t 95% interval over images), a flat ERF's and a centred
    Gaussian's of the ERF's own spread (markers), at most three models a row. ``verdicts``: rows of
    ``misalignment_upsampling_verdicts``; ``threshold``: a bar to draw dashed (None, the default: none; claim 1 is
    judged against the aligned null, not a bar on this measure)."""
    models = list(verdicts.model.unique())
    cols = min(3, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False, sharey=True)
    for ax, model in zip(axes.flat, models):
        d = verdicts[verdicts.model == model].reset_index(drop=True)
        x = np.arange(len(d))
        v = d.erf_mass_outside_irf
        ax.bar(x, v, yerr=[v - d.low, d.high - v], capsize=4, color="C0", label="ERF (95% CI over images)")
        ax.scatter(x, d.uniform_mass_outside_irf, marker="_", s=500, lw=2.5, color="k", zorder=3, label="flat ERF")
        if "centred_gaussian_mass_outside_irf" in d:
            ax.scatter(x, d.centred_gaussian_mass_outside_irf, marker="o", color="C3", zorder=3,
                       label="Gaussian of the ERF's spread, centred on the IRF")
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="grey", label=f"a bar of {100 * threshold:.0f}%")
        ax.set_xticks(x, d.upsampling, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}: centre cell")
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ERF mass outside the IRF support")
    fig.tight_layout()
    axes[0, cols - 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)  # beside the bars
    return fig


LOCATION_NAMES = {"frame": "frame", "random": "scattered pixels", "strip": "a strip on one side",
                  "square": "centred square"}  # a location of the control as a figure names it


def location_name(location: str) -> str:
    """``location``, a mask of :func:`ama.geometry.location_masks`, in words: ``random`` is *scattered pixels* (not the random
    frame baseline), ``ring<d>`` a ring ``d`` px inside the border."""
    if location.startswith("ring") and location[4:].isdigit():
        return f"ring {location[4:]} px inside"
    return LOCATION_NAMES.get(location, location)


def location_control_figure(summary: pd.DataFrame):
    """Is the margin special? (:func:`ama.studies.controls.location_summary`): a forest plot
    (:func:`ama.figures.forest.forest_figure`) of the frame's fooling rate minus each location's of the same pixel
    count, paired per image (McNemar's exact 95% interval, percentage points), with the images only the frame fools and
    only the location fools, coloured by the Holm-adjusted verdict within the rows drawn (the question's family, as the
    report judges it); one panel per model, optimiser and ``e``. ``summary``: rows of ``attack_location_summary``; None
    when no location has a paired difference."""
    if summary is None or "frame_minus_fooled" not in summary:
        return None
    rows = summary.dropna(subset=["frame_minus_fooled"])
    if rows.empty:
        return None
    rows = rows.assign(
        label=["frame minus " + location_name(v) for v in rows.location],
        panel=[f"{m}, {o}, e = {e}: {int(px)} pixels, {int(n)} images" for m, o, e, px, n in
               zip(rows.model, rows.get("optimizer", pd.Series(["sign"] * len(rows), index=rows.index)), rows.e,
                   rows.mask_pixels, rows.n_images)])
    notes = [f"only the frame fools {int(a)}, only the location {int(b)} of n = {int(n)} images"
             for a, b, n in zip(rows.frame_only, rows.location_only, rows.n_images)]
    if "p_holds" in rows:  # coloured as the report judges: Holm within the question's family, every row drawn here
        rows = rows.assign(holm_verdict=holm_verdicts(rows.p_holds, rows.p_fails))
    return forest_figure(rows, "label", "frame_minus_fooled", "gap_low", "gap_high", notes, panel="panel",
                         xlabel="fooling rate, frame minus location (percentage points, McNemar exact 95% interval)",
                         title="Is the margin special? The same attack on as many pixels elsewhere, paired per image",
                         side_labels={"above": "the frame fools more (Holm)", "below": "the location fools more (Holm)",
                                      "includes": "not decided (exact test, Holm-adjusted)"}, scale=100,
                         verdict="holm_verdict" if "p_holds" in rows else "verdict" if "verdict" in rows else None)


def ingredients_figure(summary: pd.DataFrame):
    """Which ingredient makes the attack strong? (:func:`ama.studies.ablation.ingredient_summary`): a forest plot
    (:func:`ama.figures.forest.forest_figure`) of each variant's gain in fooling rate over the reference attack on the
    reported images (each image's mean over the seeds; 95% interval), with the images it fools more and fewer; the
    variant chosen on the tuning images is marked. Not drawn (None) when it would rest on one image: a gain on one
    image is 0 or +-100 points and says nothing. ``summary``: rows of ``attack_ingredients_summary``."""
    if summary is None or "gain" not in summary:
        return None
    rows = summary.dropna(subset=["gain"])
    if rows.empty or rows.n_images.max() < 2:
        return None
    rows = rows.assign(
        label=[f"{v} (chosen)" if c else str(v) for v, c in zip(rows.variant, rows.chosen.astype(bool))],
        panel=[f"{m}, e = {e}, {it} passes: {int(n)} reported images x {int(s)} seed(s); chosen on "
               f"{int(t)} other images" for m, e, it, n, s, t in
               zip(rows.model, rows.e, rows.n_iter, rows.n_images, rows.n_seeds, rows.tune_images)])
    notes = [f"fooled more {int(a)}, fewer {int(b)} of n = {int(n)} images"
             for a, b, n in zip(rows.more_fooled, rows.less_fooled, rows.n_images)]
    return forest_figure(rows, "label", "gain", "gain_low", "gain_high", notes, panel="panel",
                         xlabel="fooling rate, variant minus the reference attack (percentage points, 95% interval)",
                         title="Which ingredient makes the attack strong? Each variant's gain, paired per image",
                         side_labels={"above": "fools more than the reference", "below": "fools fewer",
                                      "includes": "not decided (interval or exact test)"}, scale=100,
                         verdict="verdict" if "verdict" in rows else None)


def erf_definitions_figure(summary: pd.DataFrame):
    """Claim 1 under two ERF definitions (:func:`ama.studies.erf_definitions.definition_summary`): per model and cell
    kind, the ERF mass outside the IRF minus the aligned null's, gradient beside occlusion (t 95% intervals over
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
    """The frame's sides (:mod:`ama.studies.sides`), opposite sides compared paired per image in a forest plot
    (:func:`ama.figures.forest.forest_figure`): per model, left minus right and top minus bottom of the ERF's mass on
    the side over the side's share of the image (all cells, t 95% intervals) and, when ``attack`` has them, of the
    one-side attack's fooling rate (McNemar's exact 95% intervals, with the images only one side fools); each side's own
    value beside its row. ``mass``: :func:`ama.studies.sides.side_mass_summary` rows; ``attack``:
    :func:`ama.studies.sides.side_attack_summary` rows, or None."""
    MASS, FOOL = ("ERF mass on the side over its area share (1: as much as its area), all cells",
                  "fooling rate of the attack on that side only")
    rows, notes = [], []
    mass = mass[mass.cell_kind == "all"]
    for model, g in mass.groupby("model", sort=False):
        one = g.set_index("measure")
        for pair in (m for m in one.index if " - " in m):
            a, b = pair.split(" - ")
            r = one.loc[pair]
            rows.append(dict(label=f"{model}: {a} minus {b}", panel=MASS, value=r.value, low=r.low, high=r.high))
            notes.append(f"{a} {one.loc[a, 'value']:.2f}, {b} {one.loc[b, 'value']:.2f}; n = {int(r.n_images)}")
    if attack is not None and len(attack):
        for model, g in attack.groupby("model", sort=False):
            one = g.set_index("side")
            for pair in (m for m in one.index if " - " in m):
                a, b = pair.split(" - ")
                r = one.loc[pair]
                rows.append(dict(label=f"{model}: {a} minus {b}, e = {int(r.e)}", panel=FOOL, value=r.fooling_rate,
                                 low=r.low, high=r.high))
                notes.append(f"{a} {one.loc[a, 'fooling_rate']:.0%}, {b} {one.loc[b, 'fooling_rate']:.0%}; only "
                             f"{a} fools {int(r.first_only)}, only {b} {int(r.second_only)}; n = {int(r.n_images)}")
    if not rows:
        return None
    return forest_figure(pd.DataFrame(rows), "label", "value", "low", "high", notes, panel="panel",
                         xlabel={MASS: "difference of the two sides' ratios (t 95% interval)",
                                 FOOL: "difference of the two sides' fooling rates (McNemar exact 95% interval)"},
                         title="The frame's opposite sides, paired per image", sharex=False,
                         side_labels={"above": "the first side more", "below": "the second side more",
                                      "includes": "not decided (interval includes 0)"})


def tau_curve_figure(curve: pd.DataFrame, declared: float):
    """Claim 3 against tau (:func:`ama.studies.complete_change.tau_curve`): per model and ``e`` a panel, the share of
    images fooled and completely changed (cosine to the clean CAM at most tau) with its exact 95% interval, against
    the null's quantile that sets tau, a line per optimiser (the random frame grey), the criterion's quantile dashed.
    ``curve``: rows of ``attack_tau_curve``; ``declared``: :data:`ama.criteria.TAU_QUANTILE`."""
    panels = list(curve.groupby(["model", "e"], sort=True))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, sharey=True)
    colours = {"random frame": "0.55", "sign": "C0", "apgd": "C1", "adam": "C2"}
    for ax, ((model, e), g) in zip(axes.flat, panels):
        for k, (optimizer, h) in enumerate(g.groupby("optimizer", sort=True)):
            h = h.sort_values("quantile")
            ax.errorbar(h["quantile"] + 0.008 * (k - 1), h.joint, yerr=[h.joint - h.joint_low, h.joint_high - h.joint],
                        marker="o", capsize=3, color=colours.get(optimizer, f"C{k + 3}"), label=optimizer)
        ax.axvline(declared, ls="--", color="k", lw=1, label=f"the criterion's tau (null quantile {declared:g})")
        taus = g.drop_duplicates("quantile").sort_values("quantile")
        ax.set_xticks(taus["quantile"], [f"{q:g}\n({t:.2f})" for q, t in zip(taus["quantile"], taus.tau)], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}, e = {e}, {int(g.n_images.max())} images", fontsize=10)
        ax.set_xlabel("null quantile (tau)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("fooled and completely changed\n(share of images, exact 95% CI)")
    fig.suptitle("Claim 3 against tau: a stricter 'completely changed' to the left", fontsize=11)
    fig.tight_layout()
    handles = {}
    for ax in axes.flat:  # every optimiser of every panel, once
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0, cols - 1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left",
                             bbox_to_anchor=(1.02, 1), frameon=False)
    return fig
