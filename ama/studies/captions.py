"""Every figure's caption, written from the run's own tables: one or two short sentences (at most 40 words and 6
numbers) saying what the figure shows on *this* run, shown under the figure by the notebooks
(:meth:`ama.runs.folder.RunFolder.figure`) and the report.

The figures of notebooks 01-04 have theirs here, one function per figure registered with :func:`captions_for`
(``@captions_for(FIGURES.<name>)``); a study's figures declare theirs in their :class:`ama.studies.study.Figure`
(``caption=``). :func:`caption` finds either. A caption is None when the tables it reads are missing or empty, never a
sentence with ``nan`` in it.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable

import pandas as pd

from ..artifacts import FIGURES, TABLES
from ..attack.optimizers import ORIGINAL
from ..criteria import pct
from ..stats.rows import attack_rows, original_attack
from ..store.tables import read_table
from .claims import aligned_null_gaps, attack_at, keep_irf_change
from .study import registered

__all__ = ["CAPTIONS", "caption", "captions_for", "figure_caption"]

CAPTIONS: dict[str, Callable[[Path], str | None]] = {}


def captions_for(name: str):
    """Register the decorated function as the caption of figure ``name`` (a ``FIGURES.<name>`` of notebooks 01-04)."""
    def register(fn: Callable[[Path], str | None]):
        CAPTIONS[str(name)] = fn
        return fn
    return register


def figure_caption(name: str) -> Callable[[Path], str | None] | None:
    """The caption function of figure ``name``: registered here, or declared with a study's figure (studies already
    imported: :func:`ama.studies.registry.studies` imports them all); None when it has none."""
    if str(name) in CAPTIONS:
        return CAPTIONS[str(name)]
    for study, _ in registered().values():
        for f in study.figures:
            if f.name == str(name):
                return f.caption
    return None


def caption(run_dir: str | os.PathLike, name: str) -> str | None:
    """The caption of figure ``name`` on the run in ``run_dir`` (its ``tables/``): one or two sentences, or None when
    the figure has no caption function or the tables it needs are missing (a caption with ``nan``, or a missing share written "–", counts as missing)."""
    fn = figure_caption(name)
    if fn is None:
        return None
    try:
        text = fn(Path(run_dir))
    except (KeyError, ValueError, IndexError, AttributeError, ZeroDivisionError):  # a table of another shape
        return None
    return None if not text or re.search(r"\bnan\b|(^| )– ", text, re.IGNORECASE) else text  # "–": a missing share


# --- helpers ----------------------------------------------------------------------------------------------------------
def tables(run_dir: Path, *names: str) -> list[pd.DataFrame] | None:
    """The tables ``names`` of the run in ``run_dir``, or None when one is missing or empty."""
    found = [read_table(Path(run_dir) / "tables", n) for n in names]
    return None if any(t is None or t.empty for t in found) else found


def first_model(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of ``df``'s first model and, when the table holds several, a phrase naming it
    (``" (lite0, the run's first model)"``; else ``""``)."""
    models = list(dict.fromkeys(df.model)) if "model" in df else []
    if len(models) <= 1:
        return df, ""
    return df[df.model == models[0]], f" ({models[0]}, the run's first model)"


def _n(df: pd.DataFrame) -> int:
    return int(df.image.nunique()) if "image" in df else int(df.n_images.max())


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


# --- notebook 01 ------------------------------------------------------------------------------------------------------
@captions_for(FIGURES.cam_pipeline)
def _cam_pipeline(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.occlusion_keep_irf)
    if found is None:
        return None
    rows, who = first_model(found[0])
    sizes = tables(run_dir, TABLES.receptive_field_sizes)
    grid = f"{sizes[0].grid.iloc[0]} " if sizes is not None else ""
    return (f"One of the run's {_n(rows)} images, its {grid}CAM of the clean class and the saliency map bilinear "
            f"upsampling paints from it: each cell's value spread over its IRF{who}.")


@captions_for(FIGURES.occlusion_keep_occlude_irf)
def _keep_occlude(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.occlusion_keep_irf, TABLES.occlusion_occlude_irf)
    if found is None:
        return None
    keep, who = first_model(found[0])
    occlude = found[1][found[1].model == keep.model.iloc[0]]
    k, o = keep_irf_change(keep).value, keep_irf_change(occlude).value
    return (f"Filling everything outside a cell's IRF changes the cell by a median {pct(k)} of the map's range, "
            f"filling the IRF itself by {pct(o)}: the cell sees beyond its IRF, over {_n(keep)} images{who}.")


@captions_for(FIGURES.occlusion_margin_similarity)
def _margin_similarity(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.occlusion_margin_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    lo, hi = rows[rows.e == rows.e.min()], rows[rows.e == rows.e.max()]
    return (f"Filling the {int(lo.e.iloc[0])}-pixel margin keeps the CAM's cosine at least {lo.cam_cosine.min():.2f} "
            f"({hi.cam_cosine.min():.2f} at e = {int(hi.e.iloc[0])}), yet moves an interior cell beyond the margin's "
            f"IRF reach by up to {pct(lo.interior_max_abs_rel_change.max())} of the map's range{who}.")


@captions_for(FIGURES.occlusion_margin_delta)
def _margin_delta(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.occlusion_margin_cell_means)
    if found is None:
        return None
    rows, who = first_model(found[0])
    rows = rows[(rows.e == rows.e.min()) & (rows.fill == rows.fill.iloc[0])]
    inner, outer = rows[~rows.irf_touches_margin.astype(bool)], rows[rows.irf_touches_margin.astype(bool)]
    if inner.empty or outer.empty:
        return None
    return (f"Under a {int(rows.e.iloc[0])}-pixel margin fill ({rows.fill.iloc[0]}), the {len(inner)} cells whose IRF "
            f"never touches the margin still move by {pct(inner.abs_rel_change.mean())} of the map's range on average, "
            f"those whose IRF touches it by {pct(outer.abs_rel_change.mean())}{who}.")


@captions_for(FIGURES.occlusion_sliding_patch)
def _sliding_patch(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.occlusion_sliding_patch)
    if found is None:
        return None
    rows, who = first_model(found[0])
    moved = (rows.n_cells_moved > 0).mean()
    return (f"A {int(rows.patch.iloc[0])}-pixel patch moves at least one CAM cell at {pct(moved)} of its positions, "
            f"at most {int(rows.n_cells_moved.max())} cells at once, over {_n(rows)} images{who}.")


# --- notebook 02 ------------------------------------------------------------------------------------------------------
@captions_for(FIGURES.erf_vs_irf)
def _erf_vs_irf(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.misalignment_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    by = rows.set_index("cell_kind")
    if not {"centre", "corner"} <= set(by.index):
        return None
    return (f"The ERF spreads well beyond the IRF's support: {pct(by.erf_mass_outside_irf_mean['centre'])} of a "
            f"centre cell's ERF lies outside it, {pct(by.erf_mass_outside_irf_mean['corner'])} of a corner cell's, "
            f"whose ERF centroid sits {by.centroid_distance_px_mean['corner']:.0f} px from the cell{who}.")


@captions_for(FIGURES.misalignment_by_cell_kind)
def _by_cell_kind(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.misalignment)
    if found is None or "centred_gaussian_mass_outside_irf" not in found[0]:
        return None
    rows, who = first_model(found[0])
    gaps = aligned_null_gaps(rows)
    if not gaps:
        return None
    lo, hi = min(gaps, key=lambda k: gaps[k].value), max(gaps, key=lambda k: gaps[k].value)
    more = sum(g.value > 0 for g in gaps.values())
    return (f"On {'all ' if more == len(gaps) else f'{more} of '}{len(gaps)} cell kinds the ERF puts more mass "
            "outside the IRF than the aligned null (the same spread centred on the IRF): from "
            f"{100 * gaps[lo].value:+.0f}% ({lo}) to {100 * gaps[hi].value:+.0f}% ({hi}), {_n(rows)} images{who}.")


@captions_for(FIGURES.misalignment_baselines)
def _baselines(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.misalignment_upsampling_verdicts)
    if found is None:
        return None
    rows, who = first_model(found[0])
    ref = rows.iloc[0]
    lo, hi = rows.loc[rows.erf_mass_outside_irf.idxmin()], rows.loc[rows.erf_mass_outside_irf.idxmax()]
    return (f"With {ref.upsampling} upsampling the centre cell's ERF puts {pct(ref.erf_mass_outside_irf)} outside "
            f"its IRF, against {pct(ref.uniform_mass_outside_irf)} for a flat ERF and "
            f"{pct(ref.centred_gaussian_mass_outside_irf)} for the aligned Gaussian; across {len(rows)} upsamplings, from "
            f"{pct(lo.erf_mass_outside_irf)} ({lo.upsampling}) to {pct(hi.erf_mass_outside_irf)} ({hi.upsampling}){who}.")


@captions_for(FIGURES.margin_mass_ratio)
def _margin_mass_ratio(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.margin_mass_ratio)
    if found is None:
        return None
    rows, who = first_model(found[0])
    e1 = rows[rows.e == rows.e.min()]
    lo, hi = e1.loc[e1["mean"].idxmin()], e1.loc[e1["mean"].idxmax()]
    return (f"At e = {int(lo.e)} the ERF's mass on the margin over the margin's area share runs from "
            f"{lo['mean']:.2f} ({lo.cell_kind} cells) to {hi['mean']:.2f} ({hi.cell_kind}); above 1, the margin "
            f"moves a cell more than its area would{who}.")


@captions_for(FIGURES.receptive_field_sizes)
def _rf_sizes(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.receptive_field_sizes)
    if found is None:
        return None
    rows, who = first_model(found[0])
    r = rows.iloc[0]
    return (f"{r.model}'s theoretical receptive field is {r.theoretical_rf_px:.0f} px on a {r.input_px:.0f} px image; "
            f"the centre cell's IRF is {r.irf_support_px:.0f} px wide, while 90% of its ERF lies in a "
            f"{r.erf90_px:.0f} px square{who}.")


# --- notebook 03 ------------------------------------------------------------------------------------------------------
def _reference(run_dir: Path):
    """The reference attack's rows of ``attack_summary`` (flip, 8-bit, the run's ``n_iter``), its first model's."""
    found = tables(run_dir, TABLES.attack_summary)
    if found is None:
        return None, ""
    rows, who = first_model(found[0])
    rows = original_attack(rows)
    return (rows, who) if len(rows) else (None, "")


@captions_for(FIGURES.attack_examples)
def _examples(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_metrics)
    if found is None:
        return None
    rows, who = first_model(found[0])
    e = int(original_attack(rows).e.min())
    at = attack_at(rows, e)
    return (f"Fooled and unfooled images in equal numbers where the run has both, at e = {e}; over the run the "
            f"reference attack fools {pct(at.fooled.mean())} of {len(at)} images (8-bit){who}.")


@captions_for(FIGURES.attack_examples_by_e)
def _examples_by_e(run_dir: Path) -> str | None:
    rows, who = _reference(run_dir)
    if rows is None:
        return None
    lo, hi = rows.loc[rows.e.idxmin()], rows.loc[rows.e.idxmax()]
    return (f"One image attacked at every e; over the run the reference attack fools {pct(lo.fooling_rate)} of the "
            f"images at e = {int(lo.e)} and {pct(hi.fooling_rate)} at e = {int(hi.e)}{who}.")


@captions_for(FIGURES.attack_metrics_vs_e)
def _metrics_vs_e(run_dir: Path) -> str | None:
    rows, who = _reference(run_dir)
    if rows is None:
        return None
    lo, hi = rows.loc[rows.e.idxmin()], rows.loc[rows.e.idxmax()]
    return (f"The reference attack fools {pct(lo.fooling_rate)} of the images at e = {int(lo.e)} and "
            f"{pct(hi.fooling_rate)} at e = {int(hi.e)}; the random frame of the same width at most "
            f"{pct(rows.random_fooling_rate.max())} ({int(lo.n_images)} images){who}.")


@captions_for(FIGURES.attack_tau_curve)
def _tau_curve(run_dir: Path) -> str | None:
    curve = read_table(run_dir / "tables", TABLES.attack_tau_curve)
    if curve is None or curve.empty:
        return None
    g = curve[(curve.model == curve.model.iloc[0]) & (curve.e == curve.e.min()) & (curve.optimizer == ORIGINAL)]
    if g.empty:
        return None
    strict, lenient = g.loc[g["quantile"].idxmin()], g.loc[g["quantile"].idxmax()]
    return (f"The reference attack at e = {int(strict.e)} fools and completely changes the CAM on "
            f"{pct(strict.joint)} of the images at the null's {strict['quantile']:g} quantile (tau "
            f"{strict.tau:.2f}) and {pct(lenient.joint)} at its {lenient['quantile']:g} quantile.")


@captions_for(FIGURES.attack_random_baseline)
def _random_baseline(run_dir: Path) -> str | None:
    rows, who = _reference(run_dir)
    if rows is None:
        return None
    lo = rows.loc[rows.e.idxmin()]
    return (f"At e = {int(lo.e)} the random frame leaves the CAM's cosine to the clean one at "
            f"{lo.random_cam_cosine:.2f} and fools {pct(lo.random_fooling_rate)}; the attack on the same pixels: "
            f"{lo.cam_cosine:.2f} and {pct(lo.fooling_rate)}{who}.")


@captions_for(FIGURES.attack_history)
def _history(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_history)
    if found is None:
        return None
    rows, who = first_model(found[0])
    rows = rows[(rows["mode"] == "flip") & (rows.e == rows.e.min()) & (rows.n_iter == rows.n_iter.max())]
    steps = rows.groupby("iteration")[["cam_cosine", "clean_class_held"]].mean()
    if steps.empty:
        return None
    last = steps.iloc[-1]
    return (f"Over {int(steps.index.max())} iterations at e = {int(rows.e.iloc[0])} the mean CAM cosine goes from "
            f"{steps.cam_cosine.iloc[0]:.2f} to {last.cam_cosine:.2f}, and the clean class holds on "
            f"{pct(last.clean_class_held)} of the images at the end{who}.")


@captions_for(FIGURES.attack_keep_example)
def _keep(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    keep = attack_rows(rows, "keep")
    if keep.empty:
        return None
    r = keep[keep.n_iter == keep.n_iter.max()].sort_values("e").iloc[0]
    return (f"In keep mode at e = {int(r.e)} the label changes on {pct(r.fooling_rate)} of the images while the CAM's "
            f"cosine to the clean one falls to {r.cam_cosine:.2f}{who}.")


@captions_for(FIGURES.attack_targeted_example)
def _targeted(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_targeted_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    rows = rows[rows.e == rows.e.min()]
    attack, rand = rows[rows.optimizer != "random frame"], rows[rows.optimizer == "random frame"]
    if attack.empty or rand.empty:
        return None
    best = attack.loc[attack.target_cosine.idxmax()]
    return (f"Pulled towards a glyph at e = {int(best.e)}, the attacked CAM reaches a cosine of "
            f"{best.target_cosine:.2f} to its target at best ({best.optimizer}, {best.target}; reached on "
            f"{pct(best.reached)}), the random frame {rand.target_cosine.max():.2f}{who}.")


@captions_for(FIGURES.attack_confidence)
def _confidence(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_confidence)
    if found is None:
        return None
    rows, who = first_model(found[0])
    rows = rows[rows.e == rows.e.min()].set_index("tercile")
    if {"low", "high"} <= set(rows.index) and _finite(rows.fooling_rate["low"], rows.fooling_rate["high"]):
        fitted = "observed" if str(rows.fit.iloc[0]).startswith("fewer") else "fitted"
        return (f"At e = {int(rows.e.iloc[0])} the {fitted} fooling rate is {pct(rows.fooling_rate['low'])} for the "
                f"least confident third of the images and {pct(rows.fooling_rate['high'])} for the most confident, "
                f"over {int(rows.n_fit.iloc[0])} images{who}.")
    if "all" in rows.index and _finite(rows.fooling_rate["all"]):
        return (f"Too few images ({int(rows.n_fit.iloc[0])}) to split by confidence: at e = {int(rows.e.iloc[0])} the "
                f"reference attack fools {pct(rows.fooling_rate['all'])} of them{who}.")
    return None


@captions_for(FIGURES.attack_ablation)
def _ablation(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_ablation_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    rows = rows[rows.quantized & (rows.variant == "default") & (rows["mode"] == "flip")]
    rows = rows[(rows.e == rows.e.min()) & (rows.n_iter == rows.n_iter.max())]
    if rows.empty:
        return None
    rates = ", ".join(f"{o} {pct(r)}" for o, r in rows.groupby("optimizer", sort=False).fooling_rate.first().items())
    return (f"At the same budget ({int(rows.n_iter.iloc[0])} passes per image, e = {int(rows.e.iloc[0])}) the "
            f"optimisers fool: {rates} of the {int(rows.n_images.max())} images{who}.")


@captions_for(FIGURES.attack_ingredients)
def _ingredients(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_ingredients_summary)
    if found is None:
        return None
    rows, who = first_model(found[0])
    ref, rest = rows[rows.variant == "reference"], rows[rows.variant != "reference"].dropna(subset=["gain"])
    if ref.empty or rest.empty:
        return None
    best = rest.loc[rest.gain.idxmax()]
    n = int(best.n_images)
    held = f"On the {n} held-out images" if n != 1 else "On the one held-out image"
    if best.gain <= 0:
        return f"{held} no ingredient fools more than the reference ({pct(ref.fooling_rate.iloc[0])}){who}."
    return (f"{held} the reference fools {pct(ref.fooling_rate.iloc[0])}; {best.variant} gains most, "
            f"{100 * best.gain:+.0f} points, to {pct(best.fooling_rate)}{who}.")


# --- notebook 04 ------------------------------------------------------------------------------------------------------
@captions_for(FIGURES.attack_across_models)
def _across_models(run_dir: Path) -> str | None:
    found = tables(run_dir, TABLES.attack_summary)
    if found is None:
        return None
    rows = original_attack(found[0])
    rows = rows[rows.e == rows.e.min()]
    if rows.model.nunique() < 2:
        return None
    lo, hi = rows.loc[rows.fooling_rate.idxmin()], rows.loc[rows.fooling_rate.idxmax()]
    return (f"At e = {int(lo.e)} the reference attack fools from {pct(lo.fooling_rate)} ({lo.model}) to "
            f"{pct(hi.fooling_rate)} ({hi.model}) of the images across {rows.model.nunique()} models.")
