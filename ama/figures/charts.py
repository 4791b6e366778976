"""The notebooks' figures of the experiments' tables: each function takes tables (or maps) and returns a matplotlib
``Figure``; the notebooks save them (:func:`ama.store.tables.save_figure`). Drawing primitives (overlays, CAM grids,
the attack's per-image figures) are in :mod:`ama.figures.plots`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .. import geometry
from ..geometry import CELL_KINDS
from ..kernels import receptive_field as rf
from ..stats.intervals import clopper_pearson, median_interval, pooled, t_interval
from ..stats.rows import eight_bit
from . import plots


def set_theme() -> None:
    """The notebooks' seaborn style; images drawn pixel by pixel (``nearest``: a photo's or a map's pixels stay
    blocks, not smoothed, which keeps a full-colour PNG of it small)."""
    sns.set_theme(style="whitegrid", context="notebook", rc={"image.interpolation": "nearest"})


def kind_order(kinds) -> list[str]:
    """The cell kinds present, in :data:`ama.geometry.CELL_KINDS` order. ``kinds``: cell kinds, in any order, repeats
    allowed."""
    present = set(kinds)
    return [k for k in CELL_KINDS if k in present]


# --- the report ---------------------------------------------------------------------------------------
def attack_across_models_figure(summary: pd.DataFrame):
    """Fooling rate and CAM cosine against ``e``, one line per model, from the original optimiser's rows of
    ``attack_summary`` (8-bit images)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for model, rows in summary.groupby("model", sort=False):
        for ax, col in zip(axes, ("fooling_rate", "cam_cosine")):
            ax.plot(rows.e, rows[col], marker="o", label=model)
    for ax, label in zip(axes, ("fooling rate (prediction changed)", "cosine(clean CAM, adversarial CAM)")):
        plots.log_width_axis(ax, sorted(summary.e.unique()))
        ax.set(ylabel=label, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[1].legend(title="model")
    fig.suptitle(f"The original attack across models ({int(summary.n_iter.max())} iterations, 8-bit)")
    fig.tight_layout()
    return fig


# --- notebook 01: occlusion ----------------------------------------------------------------------------
def occlusion_irf_figure(irf: pd.DataFrame, moved_bar: float | None = None):
    """Keep-IRF and occlude-IRF as claim 2's verdict reads them: per image the median ``|rel_change|`` over its cells
    and fills (grey points, jittered, behind), and the median over images with its order-statistic 95% interval (bold, on top),
    per experiment, one panel per model; ``moved_bar``: claim 2's threshold, dashed. ``irf``: keep-IRF and
    occlude-IRF rows."""
    per_image = (irf.assign(abs_rel_change=irf.rel_change.abs())
                 .groupby(["model", "experiment", "image"], sort=False).abs_rel_change.median().reset_index())
    models, experiments = list(per_image.model.unique()), list(per_image.experiment.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(2.2 + 3.6 * len(models), 5.0), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, model in zip(axes[0], models):
        rows = per_image[per_image.model == model]
        for x, experiment in enumerate(experiments):
            v = rows.loc[rows.experiment == experiment, "abs_rel_change"].to_numpy(float)
            ax.scatter(x + rng.uniform(-0.18, 0.18, len(v)), v, s=12, color="0.55", alpha=0.35, lw=0, zorder=1)
            if len(v):
                low, high = median_interval(v)
                ax.errorbar([x], [np.median(v)], yerr=[[np.median(v) - low], [high - np.median(v)]], fmt="D",
                            color="C3", ms=9, mec="k", elinewidth=3, capsize=8, capthick=3, zorder=3,
                            label="median over images, 95% CI" if x == 0 else None)
        ax.axhline(0, color="k", lw=0.8)
        if moved_bar is not None:
            ax.axhline(moved_bar, color="k", lw=1, ls="--", label=f"claim 2's bar ({100 * moved_bar:.0f}% of the range)")
        ax.set_xticks(range(len(experiments)), [f"{e}\n({rows.image[rows.experiment == e].nunique()} images)"
                                                for e in experiments])
        ax.set_xlim(-0.6, len(experiments) - 0.4)
        ax.set_title(model, fontsize=10)
    axes[0, 0].set_ylabel("per image: median over its cells and fills\nof |change of R(i, j)| / range of R")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Filling outside a cell's IRF (keep_irf) still changes the cell;\nfilling inside it (occlude_irf) "
                 "changes it too (grey: one image each)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def margin_occlusion_figure(margin: pd.DataFrame, e_values):
    """Margin occlusion: the CAM's cosine to the clean CAM and the largest interior change, against ``e``. ``margin``:
    rows of ``occlusion_margin``."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sns.lineplot(data=margin, x="e", y="cam_cosine", hue="fill", style="model", marker="o", ax=axes[0], legend=False)
    axes[0].set(ylabel="cosine(clean CAM, occluded CAM)", title="whole CAM: similarity to the clean CAM")
    sns.lineplot(data=margin, x="e", y="interior_max_abs_rel_change", hue="fill", style="model", marker="o",
                 ax=axes[1])
    axes[1].set(ylabel="max |change of R| / range of R", ylim=(0, None),
                title="interior cells whose IRF misses the margin")
    for ax in axes:
        plots.log_width_axis(ax, e_values, "occluded margin e (pixels)")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Margin occlusion, {margin.image.nunique()} images (mean and 95% interval)", y=1.02)
    fig.tight_layout()
    return fig


def margin_cells_figure(cell_means: pd.DataFrame, e: int, fill: str):
    """Per model, each cell's mean change of the raw CAM ``|delta R(i, j)|`` over the map's range (what claim 2's
    sentence counts; the min-max normalised CAM would make interior cells move more than border cells) under an
    ``e``-pixel margin occlusion with ``fill``; cells whose IRF misses the margin framed white.
    ``cell_means``: rows of ``occlusion_margin_cell_means``."""
    rows = cell_means[(cell_means.e == e) & (cell_means.fill == fill)]
    models = list(dict.fromkeys(rows.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        sub = rows[rows.model == name]
        mean = sub.pivot(index="i", columns="j", values="abs_rel_change").to_numpy()
        touches = sub.pivot(index="i", columns="j", values="irf_touches_margin").to_numpy().astype(bool)
        im = ax.imshow(mean, cmap="magma", vmin=0)
        for (i, j), value in np.ndenumerate(mean):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 * mean.max() else "black")
            if not touches[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="white", lw=1.5))
        ax.set(title=f"{name}: mean |delta R(i, j)| / range of R\n{e}-pixel margin, fill {fill}", xticks=[],
               yticks=[])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|change of the raw CAM| / its range")
    fig.supxlabel("white frame: the cell's IRF does not touch the margin", fontsize=10)
    fig.tight_layout()
    return fig


def sliding_patch_figure(slides: pd.DataFrame, model: str, image: str, cell_px: float, threshold: float):
    """The number of cells one sliding patch moves (by more than ``threshold`` of the map's range) at each position,
    for one model and image; ``cell_px``: pixels per CAM cell of that model (the title compares the patch with it).
    ``slides``: rows of ``occlusion_sliding_patch``."""
    rows = slides[(slides.model == model) & (slides.image == image)]
    grid = rows.pivot(index="top", columns="left", values="n_cells_moved")
    patch = int(rows.patch.iloc[0])
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sns.heatmap(grid, annot=True, fmt="d", cmap="viridis", ax=ax,
                cbar_kws={"label": f"cells moved by > {threshold:.0%} of the range"})
    ax.set(title=f"{model}, {image}: cells moved by a {patch} px patch\n(one CAM cell spans {cell_px:g} px)",
           xlabel="patch left (px)", ylabel="patch top (px)")
    return fig


# --- notebook 02: receptive fields -----------------------------------------------------------------------
ERF_DISPLAY_SIGMA = 4.0  # px: the ERFs are shown smoothed (pixel gradients are speckled); numbers use the raw maps


IRF_LEVELS = (0.25, 0.5, 0.75)  # contours of the IRF's weight (the upsampling's tent, 1 at the cell's centre)


def run_sliding_patch_figure(slides: pd.DataFrame, model, data, threshold: float):
    """:func:`sliding_patch_figure` of ``model``'s first image of ``data`` (a run's
    :class:`~ama.inputs.images.LoadedImages`), the patch compared with the model's CAM cell. ``slides``: rows of
    ``occlusion_sliding_patch``; ``threshold``: what a moved cell moves by, over the map's range."""
    cell_px = geometry.cell_stride(model.input_size, model.feature_size())
    return sliding_patch_figure(slides, model.name, data.names[0], cell_px, threshold)


def erf_vs_irf_figure(model, images: torch.Tensor, names, erf: torch.Tensor, table: pd.DataFrame):
    """Per image (rows) the ERF (colour, smoothed, over its maximum) of a centre, an edge and a corner cell against its
    IRF drawn as what it is, the upsampling's tent-shaped weight (white contours at :data:`IRF_LEVELS`; dotted: the
    edge of its support), the cell's position in the upsampled map (white cross) and the ERF's centroid (cyan dot),
    each named in a legend below the maps;
    titles give the cell's row of ``table`` (:func:`ama.kernels.receptive_field.misalignment_table`). ``erf``
    ``(B, h*w, H, W)``."""
    import torchvision.transforms.functional as TF

    H, W = images.shape[-2:]
    grid = model.feature_size((H, W))
    irf = rf.implicit_receptive_field(grid, (H, W))
    support = rf.irf_support(irf)
    centres = geometry.cell_centres(grid, (H, W))
    k = int(2 * round(3 * ERF_DISPLAY_SIGMA) + 1)
    fig, axes = plt.subplots(len(names), 3, figsize=(10.5, 3.5 * len(names)), squeeze=False, layout="constrained")
    im = None
    for r, name in enumerate(names):
        for c, (kind, cell) in enumerate(geometry.representative_cells(grid).items()):
            ax = axes[r, c]
            m = erf[r, cell].detach().cpu()
            smooth = TF.gaussian_blur(m[None, None], [k, k], [ERF_DISPLAY_SIGMA] * 2)[0, 0]
            ax.imshow(plots.to_numpy_image(images[r]) * 0.6)
            im = ax.imshow((smooth / smooth.max()).numpy(), cmap="inferno", alpha=0.7, vmin=0, vmax=1)
            weight = irf[cell].numpy() / float(irf[cell].max())
            cs = ax.contour(weight, levels=list(IRF_LEVELS), colors="white", linewidths=(0.8, 1.3, 1.8))
            ax.clabel(cs, fmt=lambda v: f"{v:g}", fontsize=6)
            ax.contour(support[cell].numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8,
                       linestyles=":")
            ax.plot(centres[cell, 1], centres[cell, 0], "w+", ms=14, mew=2.5)
            cy, cx = rf.erf_centroid(m).tolist()
            ax.plot(cx, cy, "o", color="cyan", mec="k", ms=8)
            row = table[(table.model == model.name) & (table.image == name) & (table.cell == cell)].iloc[0]
            ax.set_title(f"{name}\n{kind} cell ({cell // grid[1]}, {cell % grid[1]})\nERF mass outside IRF "
                         f"{row.erf_mass_outside_irf:.0%}, offset {row.centroid_distance_px:.0f} px", fontsize=8)
            ax.set_axis_off()
    fig.colorbar(im, ax=axes, shrink=0.6, label="ERF (smoothed, / its maximum)")
    fig.suptitle(f"{model.name}: where each cell's CAM value comes from (ERF, colour) vs where upsampling puts it (IRF, "
                 "white)", fontsize=10)
    plots.irf_legend(fig, IRF_LEVELS)
    return fig



def run_erf_vs_irf_figure(model, data, table: pd.DataFrame, erf: torch.Tensor | None = None, k: int = 3):
    """:func:`erf_vs_irf_figure` of the first ``k`` images of ``data`` (a run's :class:`~ama.inputs.images.LoadedImages`);
    ``erf``: the run's ERF maps of all its images (reused), or None (computed again for the shown ones)."""
    shown = list(range(min(k, len(data.names))))
    erf = erf[shown] if erf is not None else rf.effective_receptive_field(model, data.images[shown])
    return erf_vs_irf_figure(model, data.images[shown], [data.names[i] for i in shown], erf, table)


NULL_GAPS = {"erf_mass_outside_irf": ("centred_gaussian_mass_outside_irf", "ERF mass outside the IRF"),
             "centroid_distance_px": ("null_centroid_distance_px", "ERF centroid to the cell's centre (px)")}


def misalignment_figure(table: pd.DataFrame, measures=tuple(NULL_GAPS), e: int | None = None):
    """Claim 1 as it is judged (:func:`ama.studies.claims.aligned_null_gaps`): per cell kind, each ``measure`` of
    :data:`NULL_GAPS` the table holds with its aligned null's (a Gaussian of the cell's own ERF spread centred on its
    IRF centre), both as the mean over images of each image's mean over that kind's cells (t 95% interval;
    left), and the ERF minus the null, paired per image, with its interval and the line of no difference (right): above
    0, the ERF lies farther from the IRF than an aligned ERF as wide would. One point per model, and the models pooled
    (the claim's statistic) when there are several. ``table``: rows of ``misalignment``; ``measures``: the columns to
    draw (others than :data:`NULL_GAPS`' are skipped: they have no aligned null); ``e``: unused (the margin's share is
    claim 3's, not drawn here), kept for the notebooks' call."""
    measures = [m for m in measures if m in NULL_GAPS and NULL_GAPS[m][0] in table]
    kinds = kind_order(table.cell_kind)
    series = [(m, table[table.model == m]) for m in table.model.unique()]
    series += [("all models (the claim)", table)] if len(series) > 1 else []
    fig, axes = plt.subplots(len(measures), 2, figsize=(11, 3.6 * len(measures)), squeeze=False)
    for row, measure in zip(axes, measures):
        null, label = NULL_GAPS[measure]
        d = table.assign(gap=table[measure] - table[null])
        for k, (name, rows) in enumerate(series):
            rows = d.loc[rows.index]
            dx = (k - (len(series) - 1) / 2) * 0.12
            for ax, cols in ((row[0], ((measure, "o", "ERF"), (null, "s", "aligned null"))), (row[1], (("gap", "o", ""),))):
                for j, (col, marker, what) in enumerate(cols):
                    est = [pooled(rows[rows.cell_kind == kind], col) for kind in kinds]
                    x = np.arange(len(kinds)) + dx + (j - (len(cols) - 1) / 2) * 0.3
                    v = np.array([e_.value for e_ in est])
                    ax.errorbar(x, v, yerr=[v - [e_.low for e_ in est], [e_.high for e_ in est] - v], fmt=marker,
                                color=f"C{k}", mfc=f"C{k}" if j == 0 else "white", capsize=3, ms=7,
                                label=" ".join(t for t in (what, name if len(series) > 1 else "") if t) or None)
        row[0].set_ylabel(f"{label}\n(mean over images, 95% CI)")
        row[1].set_ylabel(f"{label}:\nERF minus aligned null (95% CI)")
        row[1].axhline(0, color="k", lw=1, ls="--")
        row[1].text(0.99, 0, "0: as aligned as the null", transform=row[1].get_yaxis_transform(), ha="right",
                    va="bottom", fontsize=8)
        for ax in row:
            ax.set_xticks(np.arange(len(kinds)), [f"{k} cells" for k in kinds])
        for ax in row[:1 if len(series) == 1 else 2]:
            ax.legend(fontsize=8, loc="best")
    axes[0, 0].set_title("the ERF beside an aligned ERF as wide", fontsize=10)
    axes[0, 1].set_title("claim 1's statistic: above 0 = misaligned", fontsize=10)
    fig.suptitle(f"Claim 1: is the ERF farther from the IRF than an aligned ERF? {table.image.nunique()} images, "
                 "paired per image", fontsize=11)
    fig.tight_layout()
    return fig


def margin_mass_ratio_figure(long: pd.DataFrame, e_values):
    """The ERF mass in the ``e``-pixel margin over the margin's share of the image, per cell kind, against ``e``
    (rows of :func:`ama.kernels.receptive_field.margin_mass_ratio_long`); 1 = as much as its area. ``long``: rows of
    :func:`ama.kernels.receptive_field.margin_mass_ratio_long`."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=long, x="e", y="ratio", hue="cell_kind", hue_order=kind_order(long.cell_kind), style="model",
                 marker="o", ax=ax)
    ax.axhline(1, color="k", lw=0.8, ls="--")
    ax.set(ylabel="ERF mass in margin / margin area share", title="How much the image margin moves each kind of cell")
    plots.log_width_axis(ax, e_values, "margin width e (pixels)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1))
    return fig


SIZE_LABELS = {"input_px": "input image", "theoretical_rf_px": "theoretical RF",
               "irf_support_px": "IRF support (centre cell)", "erf90_px": "ERF, 90% of mass"}


def receptive_field_sizes_figure(sizes: pd.DataFrame):
    """Per model, the input side beside the centre cell's theoretical RF, IRF support and 90%-mass ERF side. ``sizes``:
    rows of ``receptive_field_sizes``."""
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.9 * len(sizes)))
    long = sizes.melt(id_vars="model", value_vars=list(SIZE_LABELS))
    long["variable"] = long.variable.map(SIZE_LABELS)
    sns.barplot(data=long, y="model", x="value", hue="variable", ax=ax, orient="h")
    ax.set(xlabel="size (pixels, one side)", ylabel="", title="Receptive fields of the centre cell vs the image")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title=None)
    return fig


# --- notebook 03: the attack -----------------------------------------------------------------------------
ATTACK_METRICS = {"joint": "fooled and completely changed", "fooled": "fooling rate", "cam_cosine": "CAM cosine to clean",
                  "cam_spearman": "CAM Spearman to clean", "top20_iou": "top-20% IoU with clean"}


def verdict_interval(values) -> tuple[float, float]:
    """The 95% interval a verdict gives per-image ``values``: the exact (Clopper-Pearson) interval of a yes/no rate
    (all values 0 or 1), else the t-interval of the mean (:mod:`ama.stats.intervals`); a figure's error bars and bands."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and np.isin(v, (0.0, 1.0)).all():
        return clopper_pearson(int(v.sum()), len(v))
    return t_interval(v)


def _per_image_lines(long: pd.DataFrame, hue: str, e_values, fooled_bar: float | None, bar_label: str = "bar",
                     wrap: int | None = None, **kw):
    """Lines against ``e`` from per-image rows ``long`` (``model, e, metric, value`` and ``hue``; ``metric`` a key of
    :data:`ATTACK_METRICS`), one facet per metric and model: mean and, shaded, the verdicts' 95% interval over images
    (:func:`verdict_interval`; error bars instead when there is one width: a band needs two points), on a log width
    axis in ``[0, 1]``; ``fooled_bar`` dashed on the first column, named on it ``bar_label``; ``wrap``: with one
    model, the metrics wrap after this many columns (None: one row); ``kw``: to ``seaborn.relplot``."""
    one_width = long.e.nunique() == 1
    facets = dict(col="metric", col_wrap=wrap) if wrap and long.model.nunique() == 1 else dict(col="metric", row="model")
    g = sns.relplot(data=long.assign(metric=long.metric.map(ATTACK_METRICS)), x="e", y="value", hue=hue, style=hue,
                    kind="line", markers=True, dashes=False, errorbar=verdict_interval,
                    err_style="bars" if one_width else "band", **facets, **kw)
    for ax in g.axes.flat:
        plots.log_width_axis(ax, e_values)
        ax.set_ylim(-0.03, 1.03)
    if fooled_bar is not None:
        first = g.axes[:1] if "row" not in facets else g.axes[:, 0]
        for ax in first:
            ax.axhline(fooled_bar, ls="--", color="grey", lw=1)
            ax.text(0.02, fooled_bar, f"{bar_label} ({100 * fooled_bar:.0f}%)", transform=ax.get_yaxis_transform(),
                    va="bottom", fontsize=8, color="0.3")
    g.set_ylabels(f"mean ({'bars' if one_width else 'shaded'}: 95% CI, exact / t)")
    return g


def attack_metrics_figure(metrics: pd.DataFrame, e_values, bar: float | None = None, null: pd.DataFrame | None = None):
    """Claim 3's joint event (fooled and completely changed, when ``null``, rows of ``cam_null``, is given:
    :mod:`ama.studies.complete_change`), fooling rate, CAM cosine and Spearman, top-20% IoU against ``e`` (8-bit
    images): the attack (per mode and ``n_iter``) and the random frame, from the per-image rows of ``attack_metrics``
    (mean and, shaded, the verdicts' 95% interval over images, :func:`verdict_interval`); ``bar``: the first column's
    threshold (claim 3's prevalence bar with ``null``, else the earlier fooling bar), dashed."""
    rows = eight_bit(metrics).assign(fooled=lambda d: d.fooled.astype(float))
    names = [m for m in ATTACK_METRICS if m != "joint"]
    if null is not None:
        tau = rows.model.map(null.groupby("model").cosine.median())
        rows, names = rows.assign(joint=rows.fooled * (rows.cam_cosine <= tau)), list(ATTACK_METRICS)
    long = rows.melt(id_vars=["model", "image", "e", "n_iter", "mode", "setting"], value_vars=names,
                     var_name="metric")
    long["run"] = ["random frame" if s == "random_frame" else f"AMA, {plots.mode_words(m).removeprefix('attack: ')}, "
                   f"{it} passes" for s, m, it in zip(long.setting, long["mode"], long.n_iter)]
    order = sorted(long.run.unique(), key=lambda r: (r == "random frame", r))
    g = _per_image_lines(long, "run", e_values, bar, f"claim 3's {'prevalence' if null is not None else 'earlier'} bar",
                         wrap=3, hue_order=order, palette=plots.run_palette(order), height=3.0, aspect=1.25,
                         facet_kws=dict(sharey=False))
    g.set_titles("{col_name}" if long.model.nunique() == 1 else "{row_name}: {col_name}")
    g.set_ylabels("")
    g.figure.supylabel(f"mean over images ({'bars' if long.e.nunique() == 1 else 'shaded'}: 95% CI, exact / t)",
                       fontsize=11)
    sns.move_legend(g, "lower right", bbox_to_anchor=(0.97, 0.12) if long.model.nunique() == 1 else (1, 0.5),
                    title="8-bit images", frameon=False)
    g.figure.suptitle(f"{', '.join(dict.fromkeys(long.model))}: AMA vs a random frame", y=1.03)
    return g.figure


CONFIDENCE_MIN_IMAGES = 10  # fewer images: no logistic fit (ama.studies.confidence), and no figure


def confidence_figure(table: pd.DataFrame):
    """The reference attack's fooling rate against the clean logit margin, per model and ``e``: the logistic fit's
    curve (its slope, through its predictions) with its 95% interval at each tercile's median margin, and the
    tercile's observed rate (crosses); the legend outside. Not drawn (None) where no fit exists (fewer than
    :data:`CONFIDENCE_MIN_IMAGES` images): three tercile rates on a handful of images are no trend. ``table``: rows of
    ``attack_confidence`` (:func:`ama.studies.confidence.confidence_regression`)."""
    if table is None or not {"predicted", "fit"} <= set(table.columns):
        return None
    fits = table[(table.fit == "ok") & table.predicted.notna() & (table.n_fit >= CONFIDENCE_MIN_IMAGES)]
    if not len(groups := list(fits.groupby(["model", "e"], sort=True))):
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(3.8 * len(groups) + 2.4, 3.4), squeeze=False, sharey=True)
    for ax, ((model, e), g) in zip(axes[0], groups):
        g = g[g.tercile != "all"].sort_values("margin_median")
        p = g.predicted.clip(1e-6, 1 - 1e-6)
        intercept = float(np.median(np.log(p / (1 - p)) - g.slope * g.margin_median))
        span = g.margin_median.max() - g.margin_median.min()
        m = np.linspace(max(0.0, g.margin_median.min() - 0.3 * span), g.margin_median.max() + 0.3 * span, 100)
        ax.plot(m, 1 / (1 + np.exp(-(intercept + g.slope.iloc[0] * m))), color="C0",
                label="logistic fit over images")
        ax.errorbar(g.margin_median, g.predicted, yerr=[g.predicted - g.predicted_low, g.predicted_high - g.predicted],
                    fmt="o", color="C0", capsize=3, label="the fit at a tercile's median (95% CI)")
        ax.plot(g.margin_median, g.fooling_rate, "x", color="black", ms=8, mew=2, label="observed rate, per tercile")
        ax.set(title=f"{model}, e = {e}: {int(g.n_fit.iloc[0])} images, slope {g.slope.iloc[0]:.2f}",
               xlabel="clean logit margin (top-1 minus top-2)", ylim=(-0.03, 1.03))
    axes[0][0].set_ylabel("fooling rate")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle("The reference attack (8-bit) against the clean confidence", fontsize=10)
    fig.tight_layout()
    return fig


def random_baseline_figure(metrics: pd.DataFrame):
    """CAM cosine and fooling rate of the attack (flip) beside the random frame, per ``e`` (8-bit), from the per-image
    rows of ``attack_metrics`` (bars: mean, the verdicts' 95% interval over images, :func:`verdict_interval`)."""
    rows = eight_bit(metrics[(metrics.setting == "random_frame") | (metrics["mode"] == "flip")])
    rows = rows.assign(fooled=rows.fooled.astype(float), run=["random frame" if s == "random_frame" else
                                                              f"AMA, change the prediction, {it} passes"
                                                              for s, it in zip(rows.setting, rows.n_iter)])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, label in ((axes[0], "cam_cosine", "cosine(clean CAM, adversarial CAM)"),
                           (axes[1], "fooled", "fooling rate")):
        sns.barplot(data=rows, x="e", y=col, hue="run", ax=ax, errorbar=verdict_interval, capsize=0.1)
        kind = "exact" if col == "fooled" else "t"
        ax.set(ylabel=f"{label} ({kind} 95% CI)", xlabel="frame width e (pixels)", ylim=(0, 1.05))
    axes[0].get_legend().remove()
    sns.move_legend(axes[1], "center left", bbox_to_anchor=(1.02, 0.5), title=None, fontsize=8)
    fig.suptitle(f"{', '.join(dict.fromkeys(rows.model))}: attack vs random frame, 8-bit images, "
                 f"{rows.image.nunique()} images")
    fig.tight_layout()
    return fig


def history_figure(history: pd.DataFrame, model: str, n_iter: int, lamb: float):
    """The CAM cosine to the clean CAM and the share still predicted as the clean class over the iterations (flip,
    ``n_iter``), per ``e``, for one model (rows of ``attack_history``). ``history``: rows of ``attack_history``."""
    h = history[(history.model == model) & (history["mode"] == "flip") & (history.n_iter == n_iter)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(data=h, x="iteration", y="cam_cosine", hue="e", palette="viridis", ax=axes[0], errorbar=("pi", 50))
    axes[0].set(ylabel="cosine(CAM of z, clean CAM)", title="median and interquartile range over images")
    frac = h.groupby(["e", "iteration"]).clean_class_held.mean().reset_index()
    sns.lineplot(data=frac, x="iteration", y="clean_class_held", hue="e", palette="viridis", ax=axes[1])
    axes[1].set(ylabel="share still predicted as the clean class", ylim=(-0.05, 1.05), title="prediction")
    fig.suptitle(f"{model}: AMA (attack: change the prediction; {n_iter} iterations, lambda {lamb:g})")
    fig.tight_layout()
    return fig


def ablation_figure(ablation: pd.DataFrame, fooled_bar: float | None = None):
    """Each optimiser's default (flip, 8-bit) against ``e``, one line per optimiser and budget, from the per-image rows
    of ``attack_ablation``: fooling rate and CAM cosine, mean and (shaded) the verdicts' 95% interval over images;
    ``fooled_bar``: claim 3's threshold, dashed and named. ``ablation``: rows of ``attack_ablation``."""
    rows = eight_bit(ablation[(ablation.variant == "default") & (ablation["mode"] == "flip")])
    rows = rows.assign(fooled=rows.fooled.astype(float),
                       setting=[f"{o}, {it} passes" for o, it in zip(rows.optimizer, rows.n_iter)])
    long = rows.melt(id_vars=["model", "image", "e", "setting"], value_vars=["fooled", "cam_cosine"], var_name="metric")
    g = _per_image_lines(long, "setting", sorted(rows.e.unique()), fooled_bar, "claim 3's bar", height=3.2, aspect=1.2)
    g.set_titles("{row_name}: {col_name} (8-bit)")
    g.figure.suptitle(f"Optimisers at equal budget ({rows.image.nunique()} images)", y=1.03, fontsize=10)
    return g.figure
