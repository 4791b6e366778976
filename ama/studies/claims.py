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
from ..criteria import BARS, CLAIM2_FILL, FOOLED_RATE, JOINT_RATE, KEEP_IRF_CHANGE, MISALIGNED_MASS, pct
from ..geometry import CELL_KINDS
from ..paths import resolve
from ..stats.intervals import FAILS, HOLDS, INCONCLUSIVE, Estimate, image_rate, pooled
from ..stats.rows import eight_bit, original_attack
from ..store.tables import interval_text, p_text, read_table, readable
from . import complete_change
from .location import margin_special

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


def claim2_rows(keep: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The keep-IRF rows that decide claim 2: those of the fill :data:`ama.criteria.CLAIM2_FILL` when ``keep`` has it,
    else every fill's (a FAST run's); with the fill's name in words (``"blur"``, ``"every fill, pooled"``)."""
    primary = keep[keep.fill == CLAIM2_FILL] if "fill" in keep else keep.iloc[:0]
    return (primary, CLAIM2_FILL) if len(primary) else (keep, "every fill, pooled")


def claim2_change(keep: pd.DataFrame) -> tuple[Estimate, str]:
    """Claim 2's statistic, :func:`keep_irf_change` of :func:`claim2_rows`, with the fill it is of in words (``keep``:
    keep-IRF rows)."""
    rows, fill = claim2_rows(keep)
    return keep_irf_change(rows), fill


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
CLAIMS_FAMILY = "claims"
"""The family of the claims' verdicts (:mod:`ama.report.verdicts`): the paper's three claims, always the same seven."""

PAPER_WORDS = {
    1: '"there is a misalignment between the effective receptive field and the implicit receptive field"',
    2: '"Occlusion experiments are designed to empirically testify to its existence"',
    3: '"the provided saliency map can be completely changed to another shape by only perturbing the area with '
       '1-pixel width", fooling "the CAM-based method and the CNN model simultaneously"'}
"""Each claim in the paper's words (its abstract, ``SCIENCE.md``)."""


def claim_misalignment(run_dir: Path) -> Claim:
    title = "The implicit and the effective receptive field of a CAM cell are misaligned"
    df = read_table(run_dir / "tables", TABLES.misalignment)
    figs = existing_figures(run_dir / "figures", FIGURES.erf_vs_irf, FIGURES.misalignment_by_cell_kind,
                           FIGURES.misalignment_baselines)
    if df is None or df.empty:
        return Claim(1, title, None, "The misalignment table is missing (notebook 02 did not write it).", figs)
    gaps = aligned_null_gaps(df)
    lo, hi = min(gaps, key=lambda k: gaps[k].value), max(gaps, key=lambda k: gaps[k].value)
    sentence = (f"On {df.image.nunique()} images, every cell kind's ERF puts more of its mass outside the cell's IRF "
                f"than an aligned ERF of the same width (a Gaussian centred on the IRF): {pct(gaps[lo].value)} "
                f"({lo} cells) to {pct(gaps[hi].value)} ({hi} cells) more.")
    by_kind = df.groupby("cell_kind")
    table = pd.DataFrame([{"cell kind": kind, "ERF mass outside the IRF": pct(by_kind.get_group(kind).erf_mass_outside_irf.mean()),
                           "aligned null's": pct(by_kind.get_group(kind).centred_gaussian_mass_outside_irf.mean()),
                           "beyond the null (95% CI)": f"{pct(g.value)} ({pct(g.low)} to {pct(g.high)})",
                           "verdict": g.verdict(0.0),
                           "ERF centroid from the cell, px": f"{by_kind.get_group(kind).centroid_distance_px.mean():.0f}",
                           "top-q IoU of ERF and IRF": f"{by_kind.get_group(kind).top_q_iou.mean():.2f}"}
                          for kind, g in gaps.items()])
    return Claim(1, title, misalignment_outcome(gaps), sentence, figs, table, TABLES.misalignment)


def fill_changes(keep: pd.DataFrame) -> dict[str, Estimate]:
    """Claim 2 per fill: :func:`keep_irf_change` of each fill's keep-IRF rows (``keep``), ``{fill: Estimate}``."""
    return {fill: keep_irf_change(g) for fill, g in keep.groupby("fill", sort=True)}


def claim_occlusion(run_dir: Path) -> Claim:
    title = "Occlusion outside a cell's IRF changes that cell's value"
    keep = read_table(run_dir / "tables", TABLES.occlusion_keep_irf)
    figs = existing_figures(run_dir / "figures", FIGURES.occlusion_keep_occlude_irf, FIGURES.occlusion_margin_delta)
    if keep is None or keep.empty:
        return Claim(2, title, None, "The keep-IRF table is missing (notebook 01 did not write it).", figs)
    est, fill = claim2_change(keep)
    pooled_all = keep_irf_change(keep)
    occlude = read_table(run_dir / "tables", TABLES.occlusion_occlude_irf)
    sentence = (f"Filling everything outside a cell's IRF ({fill}) changes the cell's raw CAM by a median "
                f"{pct(est.value, 1)} ({pct(est.low, 1)} to {pct(est.high, 1)}) of the map's range on {est.n} images, "
                f"against the kit's bar of {pct(KEEP_IRF_CHANGE)} (every fill pooled: {pct(pooled_all.value)}); were "
                "the IRF all the cell sees, it would not move.")
    fills = fill_changes(keep)
    occluded = fill_changes(occlude) if occlude is not None and not occlude.empty else {}
    table = pd.DataFrame([{"fill": fill, "keep the IRF, fill the rest (95% CI)": f"{pct(e.value, 1)} ({pct(e.low, 1)} "
                                                                                 f"to {pct(e.high, 1)})",
                           f"against {pct(KEEP_IRF_CHANGE)} (unadjusted)": e.verdict(KEEP_IRF_CHANGE),
                           "fill the IRF only": pct(occluded[fill].value) if fill in occluded else "–"}
                          for fill, e in fills.items()])
    return Claim(2, title, est.verdict(KEEP_IRF_CHANGE), sentence, figs, table, TABLES.occlusion_keep_irf)


def claim_attack(run_dir: Path) -> Claim:
    """Claim 3 on the calibrated criterion (:mod:`ama.studies.complete_change`): the reference attack at the smallest
    ``e`` fools the model and completely changes the CAM on more images than the random frame (capability) and on more
    than :data:`~ama.criteria.JOINT_RATE` of them (prevalence)."""
    title = "A 1-pixel frame is enough to change the saliency map completely and the prediction"
    tables = run_dir / "tables"
    metrics, summary = read_table(tables, TABLES.attack_metrics), read_table(tables, TABLES.attack_summary)
    figs = existing_figures(run_dir / "figures", FIGURES.attack_examples, FIGURES.attack_metrics_vs_e,
                            FIGURES.attack_tau_curve)
    joint = complete_change.from_tables(tables)
    if metrics is None or metrics.empty or summary is None or joint is None:
        return Claim(3, title, None, "The attack tables are missing (notebook 03 did not write them).", figs)
    e_min = int(original_attack(metrics).e.min())
    cap, prev = complete_change.capability(joint, e_min, ORIGINAL), complete_change.prevalence(joint, e_min, ORIGINAL)
    parts = {"capability": cap.verdict(0.0), "prevalence": prev.verdict(JOINT_RATE)}
    at = joint[(joint.e == e_min) & (joint.optimizer == ORIGINAL)]
    rf = joint[(joint.e == e_min) & (joint.optimizer == complete_change.RANDOM_FRAME)]
    tau = at.groupby("model").tau.first()
    sentence = (f"Completely changed means a CAM cosine to the clean CAM of at most {tau.iloc[0]:.2f}, the median "
                f"between unrelated images' CAMs. At e = {e_min} the reference attack fools and completely changes the "
                f"CAM on {pct(prev.value)} ({pct(prev.low)} to {pct(prev.high)}) of {prev.n} images; the random frame "
                f"of the same pixels on {pct(rf.joint.mean())}.")
    table = read_table(tables, TABLES.attack_complete_change)
    table = readable(table[table.e == e_min], {
        "model": "model" if table.model.nunique() > 1 else None, "optimiser": "optimizer", "images": "n_images",
        "fooled": lambda r: pct(r.fooled), "completely changed": lambda r: pct(r.completely_changed),
        "both (95% CI)": lambda r: interval_text(r.joint, r.joint_low, r.joint_high, percent=True),
        "minus the random frame, paired": lambda r: interval_text(r.vs_random, r.vs_random_low, r.vs_random_high,
                                                                  True, signed=True),
        "only the attack / only random": lambda r: ("–" if pd.isna(r.attack_only) else
                                                    f"{int(r.attack_only)} / {int(r.random_only)}"),
        "McNemar": lambda r: p_text(r.p_value)})
    return Claim(3, title, parts["capability"], sentence, figs, table, TABLES.attack_complete_change, parts)


CLAIMS = (claim_misalignment, claim_occlusion, claim_attack)


def deciding_claims(verdicts: pd.DataFrame) -> dict:
    """The verdicts that decide the claims, from a run's ``verdicts.csv`` rows (``verdicts``, :mod:`ama.report.verdicts`:
    Holm-adjusted within the claims' family): ``{1: outcome, 2: outcome, 3: {"capability": ..., "prevalence": ...},
    "cells": {cell kind: outcome}}`` (claim 1 holds when every cell kind does)."""
    claims = verdicts[verdicts.family == CLAIMS_FAMILY]
    out: dict = {"cells": {}}
    parts: dict[int, dict] = {}
    for name, v in zip(claims.verdict_of, claims.holm_verdict):
        words = name.split(":")[0].split()
        number, part = int(words[1]), " ".join(words[2:])
        parts.setdefault(number, {}).setdefault(part, []).append(v)
        if number == 1:
            out["cells"][name.rsplit(", ", 1)[-1].removesuffix(" cells")] = v
    for number, by in parts.items():
        out[number] = combine(*by[""]) if list(by) == [""] else {k: combine(*v) for k, v in by.items()}
    return out


def collect_claims(run_dir: str | os.PathLike) -> list[Claim]:
    """The three claims of a run, each with the verdict that decides it: the run's ``tables/verdicts.csv``
    (:func:`deciding_claims`), or, before the report has written it, each claim's interval against its bar."""
    run_dir = resolve(run_dir)
    claims = [make(run_dir) for make in CLAIMS]
    verdicts = read_table(run_dir / "tables", TABLES.verdicts)
    if verdicts is None or verdicts.empty:
        return claims
    decided = deciding_claims(verdicts)
    for c in claims:
        if c.number not in decided:
            continue
        if c.parts:
            c.parts = dict(decided[c.number])
            c.outcome = c.parts.get("capability", c.outcome)
        else:
            c.outcome = decided[c.number]
        if c.number == 1 and c.table is not None and "verdict" in c.table:
            c.table = c.table.assign(verdict=c.table["cell kind"].map(decided["cells"]).fillna("–")).rename(
                columns={"verdict": "verdict (Holm)"})
    return claims


def model_table(run_dir: Path) -> pd.DataFrame | None:
    """One row per model: input size, CAM grid, theoretical RF, each claim's statistic with its interval (the centre
    cell's ERF mass outside its IRF, the keep-IRF median |change| under claim 2's fill, the reference attack's fooling
    rate at the smallest ``e``) and each claim's verdict for that model (``claim1`` ... ``claim3``; claim 1 against its aligned
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
        add("keep_irf_median_change", _by_model(keep, lambda g: claim2_change(g)[0]), KEEP_IRF_CHANGE, "claim2")
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
    """docs/EVIDENCE.md's table of the references' claims: a Markdown table, one row per claim, one column per run
    (``runs``: ``{label: run or reference folder}``), each cell the claim's statistic with its 95% interval and the
    verdict that decides (:func:`collect_claims`), from the folder's tables (``tests/test_readme.py`` checks that the
    page holds this)."""
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
                f"{short(claim2_change(keep)[0], True)}: {outcomes[2]}", third]

    titles = [f"{c.number}. {c.title} ({bar})" for c, bar in zip(collect_claims(next(iter(runs.values()))), BARS)]
    columns = {label: cells(path) for label, path in runs.items()}
    lines = ["| claim | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for k, title in enumerate(titles):
        lines.append(f"| {title} | " + " | ".join(col[k] for col in columns.values()) + " |")
    return "\n".join(lines)


CLAIM_NOTEBOOKS = ("01", "02", "03")  # the notebooks whose tables the claims read


def study_alone(run_dir: str | os.PathLike) -> bool:
    """Whether the run in ``run_dir`` computed notebook 05's studies alone (``make study``: its ``run.json`` times
    notebooks, none of them a claim's), so that it tests none of the claims."""
    path = Path(run_dir) / "run.json"
    walls = json.loads(path.read_text()).get("notebooks", {}) if path.is_file() else {}
    return bool(walls) and not any(k.startswith(CLAIM_NOTEBOOKS) for k in walls)


def reference_runs(reference: str | os.PathLike = "results/reference") -> dict[str, Path]:
    """Every committed reference of a full run (FAST ones and studies run alone aside), the one-model runs first,
    fewest images first, labelled by their image count (and model count): the columns of docs/EVIDENCE.md's generated
    table of claims."""
    found = []
    for folder in resolve(reference).iterdir():
        path = folder / "params.json"
        if path.is_file():
            params = json.loads(path.read_text())
            if not params.get("fast") and not study_alone(folder):
                models = params.get("models", [])
                found.append((len(models) > 1, params["n_images"], len(models), folder))
    return {f"{n} ImageNet images" + (f", {k} models" if k > 1 else ""): folder for _, n, k, folder in sorted(found)}
