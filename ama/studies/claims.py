"""The paper's three claims: the statistic each one rests on, its 95% interval over images, and a three-valued verdict.

Each statistic is summarised per image first (cells, fills and settings of one image are not independent samples),
then over images with its interval (:mod:`ama.stats.intervals`): a rate of images by its exact (Clopper-Pearson) interval, a mean or median
by a seeded bootstrap over images; with several models, per image over the models, then a bootstrap over images
(an image's models are not independent either). A verdict **holds** when the interval lies on the claim's side of
its threshold, **does not hold** when it lies on the other side and is **inconclusive** when it straddles it. The
same functions give the report's claims, its *Across models* table (:func:`model_table`) and the notebooks' numbers.

The claims and the kit's criteria for them, every threshold named once: :mod:`ama.criteria`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import FIGURES, TABLES
from ..attack.optimizers import ORIGINAL
from ..criteria import BARS, FOOLED_RATE, JOINT_RATE, KEEP_IRF_CHANGE, MARGIN_MOVES_INTERIOR, MISALIGNED_MASS, pct
from ..geometry import CELL_KINDS
from ..kernels.receptive_field import misalignment_summary
from ..params import RunParams
from ..paths import resolve
from ..stats.intervals import FAILS, HOLDS, INCONCLUSIVE, Estimate, image_rate, pooled
from ..stats.rows import eight_bit, original_attack
from ..store import lineage
from ..store.tables import read_table
from . import complete_change
from .controls import misalignment_baselines, misalignment_by_upsampling, per_area_influence
from .location import location_sentence, margin_special
from .targeted_shapes import targeted_lines

JOINT_COLUMNS = ["model", "e", "optimizer", "n_images", "tau", "fooled", "completely_changed", "joint", "joint_low",
                 "joint_high", "vs_random", "vs_random_low", "vs_random_high", "attack_only", "random_only", "p_value"]
VERDICTS = {HOLDS: "holds on this run", FAILS: "does NOT hold on this run", INCONCLUSIVE: "is inconclusive on this run",
            None: "not measured on this run"}


@dataclass
class Claim:
    """One claim of the paper as this run supports it: ``outcome`` ``holds`` / ``does not hold`` / ``inconclusive``
    (:mod:`ama.stats.intervals`), None when not measured on this run. ``parts``: a claim judged by several verdicts
    (claim 3: ``{"capability": ..., "prevalence": ...}``), each stated; ``outcome`` is then the first part's."""

    number: int
    title: str
    outcome: str | None
    sentence: str
    figures: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_name: str = ""
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.parts:
            return "; ".join(f"{name}: {VERDICTS[v]}" for name, v in self.parts.items())
        return VERDICTS[self.outcome]


def existing_figures(figures: Path, *stems: str) -> list[str]:
    """``figures/<stem>.png`` (relative to the run folder) of the stems whose figure the run wrote. ``figures``: the
    run's ``figures/`` folder."""
    return [f"figures/{s}.png" for s in stems if (Path(figures) / f"{s}.png").is_file()]


def combine(*outcomes: str) -> str:
    """A claim made of parts: holds when every part holds, does not hold when one part does not, else inconclusive."""
    if all(o == HOLDS for o in outcomes):
        return HOLDS
    return FAILS if FAILS in outcomes else INCONCLUSIVE


def _by_model(table: pd.DataFrame, estimate) -> dict:
    return {model: estimate(g) for model, g in table.groupby("model", sort=False)}


# --- the statistics --------------------------------------------------------------------------------
def centre_mass_outside(misalignment: pd.DataFrame) -> Estimate:
    """Claim 1: per image the mean ERF mass outside the IRF of its centre cell(s); the mean over images.
    ``misalignment``: rows of ``misalignment``."""
    centre = misalignment[misalignment.cell_kind == "centre"]
    return pooled(centre if len(centre) else misalignment, "erf_mass_outside_irf")


def keep_irf_change(keep: pd.DataFrame) -> Estimate:
    """Claim 2: per image the median ``|rel_change|`` of ``keep`` (keep-IRF rows; over cells and fills); the median
    over images."""
    return pooled(keep.assign(a=keep.rel_change.abs()), "a", np.median, "median")


def occlusion_medians(irf_rows: pd.DataFrame, keys=("model", "experiment", "cell_kind")) -> pd.DataFrame:
    """Median ``|rel_change|`` of keep-IRF / occlude-IRF rows per ``keys``, column ``median_abs_rel_change``.
    ``irf_rows``: rows of ``occlusion_keep_irf`` or ``occlusion_occlude_irf``."""
    out = irf_rows.assign(a=irf_rows.rel_change.abs()).groupby(list(keys)).a.median()
    return out.rename("median_abs_rel_change").reset_index()


def attack_at(metrics: pd.DataFrame, e: int) -> pd.DataFrame:
    """Per (model, image) at frame width ``e``: the reference attack's ``fooled`` and ``cam_cosine`` (8-bit) and the
    random frame's ``random_cam_cosine``; ``cosine_gap`` = random minus attack (> 0: the attack moves the CAM more)."""
    q = eight_bit(metrics[metrics.e == e])
    attack = original_attack(q)[["model", "image", "fooled", "cam_cosine"]]
    random = q[q.setting == "random_frame"][["model", "image", "cam_cosine"]].rename(
        columns={"cam_cosine": "random_cam_cosine"})
    rows = attack.merge(random, on=["model", "image"], how="left")
    return rows.assign(cosine_gap=rows.random_cam_cosine - rows.cam_cosine, fooled=rows.fooled.astype(float))


def fooling_rate(rows: pd.DataFrame) -> Estimate:
    """Claim 3's rate: the exact interval for one model's images; a bootstrap over images for several models."""
    return image_rate(rows, "fooled")


def aligned_null_gaps(misalignment: pd.DataFrame, column: str = "erf_mass_outside_irf",
                      null: str = "centred_gaussian_mass_outside_irf") -> dict[str, Estimate]:
    """Claim 1 against its aligned null, per cell kind (``SCIENCE.md`` section 8): per image the mean over that kind's
    cells of the ERF's ``column`` minus the aligned null's ``null`` (a Gaussian of the cell's own ERF spread centred on
    its IRF centre, cut to the image and renormalised), then over images; ``{cell kind: Estimate}`` in
    :data:`ama.geometry.CELL_KINDS` order. ``misalignment``: rows of ``misalignment``."""
    d = misalignment.assign(null_gap=misalignment[column] - misalignment[null])
    kinds = [k for k in CELL_KINDS if k in set(d.cell_kind)]
    return {kind: pooled(d[d.cell_kind == kind], "null_gap") for kind in kinds}


def misalignment_outcome(gaps: dict[str, Estimate]) -> str:
    """Claim 1's verdict: misaligned when the ERF exceeds the aligned null for every cell kind (``gaps``:
    :func:`aligned_null_gaps`)."""
    return combine(*[g.verdict(0.0) for g in gaps.values()]) if gaps else INCONCLUSIVE


# --- the claims ------------------------------------------------------------------------------------
def claim_misalignment(run_dir: Path) -> Claim:
    title = "The implicit and the effective receptive field of a CAM cell are misaligned"
    df = read_table(run_dir / "tables", TABLES.misalignment)
    figs = existing_figures(run_dir / "figures", FIGURES.erf_vs_irf, FIGURES.misalignment_by_cell_kind,
                           FIGURES.misalignment_baselines)
    if df is None or df.empty:
        return Claim(1, title, None, "The misalignment table is missing (notebook 02 did not write it).", figs)

    by_kind = misalignment_summary(df, ("erf_mass_outside_irf", "centroid_distance_px", "top_q_iou")).round(3)
    est = centre_mass_outside(df)
    gaps = aligned_null_gaps(df)
    outcome = misalignment_outcome(gaps)
    sentence = (f"Over {df.image.nunique()} images and {df.model.nunique()} model(s), against the aligned null (a "
                "Gaussian of each cell's own measured ERF spread centred on its IRF centre, cut to the image and "
                "renormalised: an ERF as wide as the measured one but aligned with the IRF), the ERF puts more of "
                "its mass outside the IRF, paired per image, by: "
                + "; ".join(f"{kind} cells {g.text(percent=True)}, {g.verdict(0.0)}" for kind, g in gaps.items())
                + ". Misaligned means every cell kind exceeds the null.")
    if "null_centroid_distance_px" in df:
        offsets = aligned_null_gaps(df, "centroid_distance_px", "null_centroid_distance_px")
        sentence += (" The ERF's centroid lies farther from the cell's centre than the null's by "
                     + "; ".join(f"{kind} {g.value:+.1f} px (95% CI {g.low:+.1f} to {g.high:+.1f}), {g.verdict(0.0)}"
                                 for kind, g in offsets.items()) + ".")
    sentence += (f" The kit's earlier bar, the centre cell's ERF mass outside its IRF above {pct(MISALIGNED_MASS)}: "
                 f"{est.text(percent=True)} (all cells: {pct(df.erf_mass_outside_irf.mean())}; top-q IoU of ERF and "
                 f"IRF {df.top_q_iou.mean():.2f}); {est.against(MISALIGNED_MASS, percent=True)}.")
    sentence += baselines_sentence(df, read_table(run_dir / "tables", TABLES.misalignment_upsampling_cells))
    return Claim(1, title, outcome, sentence, figs, by_kind, TABLES.misalignment)


def baselines_sentence(df: pd.DataFrame, cells: pd.DataFrame | None) -> str:
    """Claim 1 beside its baselines (:func:`ama.studies.controls.misalignment_baselines`) and under each upsampling."""
    est = misalignment_baselines(df)
    parts = []
    if "uniform" in est:
        u = est["uniform"].value
        part = (f"Baselines: a flat ERF would put {pct(u)} outside the centre cell's IRF (the support covers "
                f"{pct(1 - u)} of the image), " + ("so the earlier bar is met by the IRF's small area alone" if
                                                   u > MISALIGNED_MASS else "below the bar")
                + (" and the measured ERF puts less outside than that: it is concentrated around the cell, only wider "
                   "than the IRF" if est["erf"].high < u else ""))
        parts.append(part)
    if cells is not None and not cells.empty:
        ups = misalignment_by_upsampling(cells, MISALIGNED_MASS)
        per = ups.groupby("upsampling", sort=False).agg(
            v=("erf_mass_outside_irf", "mean"), verdict=("verdict", lambda v: "/".join(sorted(set(v)))))
        part = "The IRF is the upsampling's: the centre value is " + ", ".join(
            f"{pct(r.v)} with {m} ({r.verdict})" for m, r in per.iterrows())
        if per.verdict.nunique() > 1:
            part += ", so the verdict depends on the upsampling that defines the IRF"
        parts.append(part)
    return "".join(f" {p}." for p in parts)


def claim_occlusion(run_dir: Path) -> Claim:
    title = "Occlusion outside a cell's IRF changes that cell's value"
    keep = read_table(run_dir / "tables", TABLES.occlusion_keep_irf)
    margin = read_table(run_dir / "tables", TABLES.occlusion_margin)
    figs = existing_figures(run_dir / "figures", FIGURES.occlusion_keep_occlude_irf, FIGURES.occlusion_margin_delta)
    if keep is None or keep.empty:
        return Claim(2, title, None, "The keep-IRF table is missing (notebook 01 did not write it).", figs)
    est = keep_irf_change(keep)
    summary = occlusion_medians(keep, ("model", "fill", "cell_kind")).round(3)
    summary = summary.rename(columns={"median_abs_rel_change": "median |relative change| of R(i, j)"})
    outcome = est.verdict(KEEP_IRF_CHANGE)
    sentence = (f"Filling every pixel outside a cell's IRF changes that cell's raw CAM by a median "
                f"{est.text(percent=True)} of the map's range (per image the median over its cells and fills); were "
                f"the IRF what the cell sees, it would not change: {est.against(KEEP_IRF_CHANGE, percent=True)}.")
    occlude = read_table(run_dir / "tables", TABLES.occlusion_occlude_irf)
    if occlude is not None and not occlude.empty:
        sentence += f" Filling the IRF itself changes the cell by a median {keep_irf_change(occlude).text(True)}."
    if margin is not None and not margin.empty and "interior_max_abs_rel_change" in margin:
        e1 = margin[margin.e == margin.e.min()]
        moved = (e1.interior_max_abs_rel_change > MARGIN_MOVES_INTERIOR).mean()
        sentence += (f" A {int(e1.e.iloc[0])}-pixel margin occlusion moves an interior cell whose IRF never "
                     f"touches the margin by more than {pct(MARGIN_MOVES_INTERIOR)} of the map's range in {pct(moved)} of "
                     f"image x fill cases (median largest change {pct(e1.interior_max_abs_rel_change.median())}).")
    if occlude is not None and not occlude.empty:
        sentence += per_area_sentence(keep, occlude)
    return Claim(2, title, outcome, sentence, figs, summary, TABLES.occlusion_keep_irf)


def per_area_sentence(keep: pd.DataFrame, occlude: pd.DataFrame) -> str:
    """Claim 2 per unit of area (:func:`ama.studies.controls.per_area_influence`), by cell kind. ``keep``, ``occlude``:
    rows of the keep-IRF and occlude-IRF tables."""
    rows = per_area_influence(keep, occlude)
    parts = []
    for kind, g in rows.groupby("cell_kind", sort=False):
        ratio = pooled(g, "irf_to_outside", np.median, "median")
        parts.append(f"{kind} cells (IRF {pct(g.irf_share.median())} of the image; filling it changes the cell by "
                     f"{pct(pooled(g, 'irf_change', np.median, 'median').value)}, filling the rest by "
                     f"{pct(pooled(g, 'outside_change', np.median, 'median').value)}) {ratio.value:.1f}x "
                     f"(95% CI {ratio.low:.1f} to {ratio.high:.1f})")
    cells = rows.drop_duplicates(["model", "cell"])
    return (" Per unit of area (each change divided by the share of the image filled; changes are shares of the map's "
            "range), a pixel of the IRF moves its cell more than a pixel outside it by a median factor of: "
            + "; ".join(parts) + f". {int((cells.cell_kind != 'centre').sum())} of the {len(cells)} cells tested "
            "(per model) are edge, corner or interior cells.")


def claim_attack(run_dir: Path) -> Claim:
    """Claim 3 on the calibrated criterion (:mod:`ama.studies.complete_change`): the reference attack at the smallest
    ``e`` fools the model and completely changes the CAM on more images than the random frame (capability) and on more
    than :data:`~ama.criteria.JOINT_RATE` of them (prevalence); the kit's earlier bar beside them."""
    title = "A 1-pixel frame is enough to change the saliency map completely and the prediction"
    tables = run_dir / "tables"
    metrics, summary = read_table(tables, TABLES.attack_metrics), read_table(tables, TABLES.attack_summary)
    figs = existing_figures(run_dir / "figures", FIGURES.attack_examples, FIGURES.attack_metrics_vs_e,
                            FIGURES.attack_location)
    joint = complete_change.from_tables(tables)
    if metrics is None or metrics.empty or summary is None or joint is None:
        return Claim(3, title, None, "The attack tables are missing (notebook 03 did not write them).", figs)
    e_min = int(original_attack(metrics).e.min())
    cap, prev = complete_change.capability(joint, e_min, ORIGINAL), complete_change.prevalence(joint, e_min, ORIGINAL)
    parts = {"capability": cap.verdict(0.0), "prevalence": prev.verdict(JOINT_RATE)}
    at = joint[(joint.e == e_min) & (joint.optimizer == ORIGINAL)]
    rf = joint[(joint.e == e_min) & (joint.optimizer == complete_change.RANDOM_FRAME)]
    taus = ", ".join(f"{m} {t:.2f}" for m, t in at.groupby("model").tau.first().items())
    against = "the true label" if "label" in metrics and (metrics.label >= 0).all() else "the clean prediction"
    n_iter = int(original_attack(metrics).n_iter.max())
    more, less = cap.discordant
    sentence = (f"Completely changed: a CAM whose cosine to the clean CAM is at most the median cosine between the "
                f"clean CAMs of two unrelated images (tau: {taus}; `tables/{TABLES.cam_null}.csv`). With only the "
                f"{e_min}-pixel frame changed ({n_iter} iterations, 8-bit), the attack completely changes the CAM on "
                f"{pct(at.completely_changed.mean())} of the images (random frame {pct(rf.completely_changed.mean())}) "
                f"and changes the top-1 away from {against} **and** completely changes the CAM on "
                f"{prev.text(percent=True)} (random frame {pct(rf.joint.mean())}). *Capability*, more than the random "
                f"frame on the same images: {100 * cap.value:+.0f} points ({100 * cap.low:+.0f} to "
                f"{100 * cap.high:+.0f}; {more} vs {less} images where only one does, McNemar's exact p = "
                f"{cap.p_value:.2g}): {parts['capability']}. *Prevalence*, against {pct(JOINT_RATE)}: "
                f"{prev.against(JOINT_RATE, percent=True)}.")
    rows = attack_at(metrics, e_min)
    fooled, gap = fooling_rate(rows), pooled(rows, "cosine_gap")
    sentence += (f" The kit's earlier bar, beside them: fooled {fooled.text(percent=True)} "
                 f"({fooled.against(FOOLED_RATE, percent=True)}); the random frame's CAM cosine minus the attack's "
                 f"{gap.text()} (attack {rows.cam_cosine.mean():.2f}, random frame "
                 f"{rows.random_cam_cosine.mean():.2f}): {gap.against(0.0)}.")
    if f"figures/{FIGURES.attack_examples}.png" in figs:
        sentence += (f" The examples figure shows fooled and unfooled images in equal numbers where the run has them, "
                     f"to show failures: its share of fooled images is not the run's {pct(fooled.value)}.")
    targeted = read_table(tables, TABLES.attack_targeted_summary)
    if targeted is not None and not targeted.empty:
        sentence += " " + " ".join(targeted_lines(targeted))
    location = read_table(tables, TABLES.attack_location)
    if location is not None and not location.empty:
        sentence += location_sentence(location)
    table = read_table(tables, TABLES.attack_complete_change)
    table = table[table.e == e_min][JOINT_COLUMNS].round(3)
    return Claim(3, title, parts["capability"], sentence, figs, table, TABLES.attack_complete_change, parts)


CLAIMS = (claim_misalignment, claim_occlusion, claim_attack)


def collect_claims(run_dir: str | os.PathLike) -> list[Claim]:
    run_dir = resolve(run_dir)
    return [make(run_dir) for make in CLAIMS]


def model_table(run_dir: Path) -> pd.DataFrame | None:
    """One row per model: input size, CAM grid, theoretical RF, each claim's statistic with its interval (the centre
    cell's ERF mass outside its IRF, the keep-IRF median |change|, the reference attack's fooling rate at the
    smallest ``e``) and each claim's verdict for that model (``claim1`` ... ``claim3``; claim 1 against its aligned
    null, :func:`misalignment_outcome`; claim 3 its capability, ``claim3_prevalence`` beside it, ``joint_e_min`` the
    share fooled and completely changed, ``claim3_earlier_bar`` the kit's earlier bar); the reference attack's fooling
    rate and CAM cosine (8-bit) at each ``e``; ``margin_special``, the location control's verdict (notebook 05)."""
    tables = Path(run_dir) / "tables"
    sizes, mis, keep, metrics, summary = (read_table(tables, t) for t in (
        TABLES.receptive_field_sizes, TABLES.misalignment, TABLES.occlusion_keep_irf, TABLES.attack_metrics,
        TABLES.attack_summary))
    if sizes is None:
        return None
    out = sizes[["model", "input_px", "grid", "theoretical_rf_px"]].copy()

    def add(name, estimates, threshold, claim):
        out[name] = out.model.map({m: e.value for m, e in estimates.items()})
        out[f"{name}_ci"] = out.model.map({m: f"{e.low:.2f} to {e.high:.2f}" for m, e in estimates.items()})
        out[claim] = out.model.map({m: e.verdict(threshold) for m, e in estimates.items()})

    if mis is not None:
        add("centre_erf_mass_outside_irf", _by_model(mis, centre_mass_outside), MISALIGNED_MASS, "claim1")
        out["claim1"] = out.model.map(_by_model(mis, lambda g: misalignment_outcome(aligned_null_gaps(g))))
    if keep is not None:
        add("keep_irf_median_change", _by_model(keep, keep_irf_change), KEEP_IRF_CHANGE, "claim2")
    if metrics is not None and summary is not None:
        ref = original_attack(summary)
        for e in sorted(ref.e.unique()):
            at = ref[ref.e == e].set_index("model")
            out[f"fooling_e{e}"] = out.model.map(at.fooling_rate)
            out[f"cam_cosine_e{e}"] = out.model.map(at.cam_cosine)
        rows = attack_at(metrics, int(ref.e.min()))
        fooled, gap = _by_model(rows, fooling_rate), _by_model(rows, lambda g: pooled(g, "cosine_gap"))
        out["fooling_ci"] = out.model.map({m: f"{e.low:.2f} to {e.high:.2f}" for m, e in fooled.items()})
        out["claim3_earlier_bar"] = out.model.map({m: combine(fooled[m].verdict(FOOLED_RATE), gap[m].verdict(0.0))
                                                   for m in fooled})
        joint = complete_change.from_tables(tables)
        if joint is not None:
            e = int(ref.e.min())
            by = {m: g for m, g in joint.groupby("model", sort=False)}
            prev = {m: complete_change.prevalence(g, e, ORIGINAL) for m, g in by.items()}
            out["joint_e_min"] = out.model.map({m: p.value for m, p in prev.items()})
            out["claim3"] = out.model.map({m: complete_change.capability(g, e, ORIGINAL).verdict(0.0)
                                           for m, g in by.items()})
            out["claim3_prevalence"] = out.model.map({m: p.verdict(JOINT_RATE) for m, p in prev.items()})
    location = read_table(tables, TABLES.attack_location_summary)
    if location is not None and len(location):  # the location control per model: is the frame special?
        out["margin_special"] = out.model.map({m: margin_special(g) for m, g in location.groupby("model")})
    return out


def glance_table(runs: dict[str, str | os.PathLike]) -> str:
    """The README's *Results at a glance*: a Markdown table, one row per claim, one column per run (``{label:
    run or reference folder}``), each cell the claim's statistic with its 95% interval and the verdict, computed by
    the functions above from the folder's tables (``tests/test_readme.py`` checks that the README holds this)."""
    def short(est: Estimate, percent: bool) -> str:
        f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.2f}")
        return f"{f(est.value)} ({f(est.low)}-{f(est.high)})"

    def cells(run_dir: Path) -> list[str]:
        tables = resolve(run_dir) / "tables"
        outcomes = {c.number: c.parts or c.outcome for c in collect_claims(run_dir)}
        mis, keep = read_table(tables, TABLES.misalignment), read_table(tables, TABLES.occlusion_keep_irf)
        metrics, joint = read_table(tables, TABLES.attack_metrics), complete_change.from_tables(tables)
        e = int(original_attack(metrics).e.min())
        n = attack_at(metrics, e).image.nunique()
        gaps = aligned_null_gaps(mis)
        kind, gap = ("centre", gaps["centre"]) if "centre" in gaps else next(iter(gaps.items()))
        third = "not measured"
        if joint is not None:
            cap, prev = complete_change.capability(joint, e, ORIGINAL), complete_change.prevalence(joint, e, ORIGINAL)
            third = (f"fooled and completely changed {short(prev, True)}, minus the random frame "
                     f"{100 * cap.value:+.0f} points: capability {outcomes[3]['capability']}, prevalence "
                     f"{outcomes[3]['prevalence']} ({n} images)")
        return [f"{kind} {short(gap, True)} beyond the aligned null: {outcomes[1]}",
                f"{short(keep_irf_change(keep), True)}: {outcomes[2]}", third]

    titles = [f"{c.number}. {c.title} ({bar})" for c, bar in zip(collect_claims(next(iter(runs.values()))), BARS)]
    columns = {label: cells(path) for label, path in runs.items()}
    lines = ["| claim | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for k, title in enumerate(titles):
        lines.append(f"| {title} | " + " | ".join(col[k] for col in columns.values()) + " |")
    return "\n".join(lines)


def reference_runs(reference: str | os.PathLike = "results/reference") -> dict[str, Path]:
    """Every committed reference of a full run (FAST ones aside), the one-model runs first, fewest images first,
    labelled by their image count (and model count): the columns of docs/EVIDENCE.md's generated table of claims."""
    found = []
    for folder in resolve(reference).iterdir():
        path = folder / "params.json"
        if path.is_file():
            params = json.loads(path.read_text())
            if not params.get("fast"):
                models = params.get("models", [])
                found.append((len(models) > 1, params["n_images"], len(models), folder))
    return {f"{n} ImageNet images" + (f", {k} models" if k > 1 else ""): folder for _, n, k, folder in sorted(found)}


def glance_runs(reference: str | os.PathLike = "results/reference") -> dict[str, Path]:
    """The references the README's table quotes: the default run's and the evidence run's (``PROFILE=imagenet``)."""
    default, evidence = RunParams(), RunParams.from_strings("imagenet")
    return {f"default run ({default.n_images} images)": resolve(reference) / default.run_name(),
            f"evidence run ({evidence.n_images} images)": resolve(reference) / evidence.run_name()}
