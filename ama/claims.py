"""The paper's three claims: the statistic each one rests on, computed from a run's tables, and the verdict.

Each statistic is one function of a table, by model or pooled over the run's models, used by the claims below,
by the report's *Across models* table (:func:`model_table`) and by the notebooks.

Claims and the kit's criteria (the paper publishes no thresholds; these are the kit's, stated in every report):

1. **The IRF and the ERF are misaligned**: the centre cell's ERF puts most of its mass
   (> 50 %) outside its IRF support.
2. **Occlusion outside a cell's IRF moves it**: filling everything outside a cell's IRF changes that
   cell's raw CAM by more than 10 % (median over cells and images), and a 1-pixel margin occlusion
   moves interior cells whose IRF never touches the margin.
3. **A 1-pixel frame changes the saliency map and the prediction**: at ``e = 1`` the attack
   (reference setting, 8-bit quantised) fools most images (> 50 %) and leaves a CAM whose cosine
   similarity with the clean CAM is below that of a random (unoptimised) frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .paths import resolve

MISALIGNED_MASS = 0.5
MOVED_REL_CHANGE = 0.10
FOOLED_RATE = 0.5
INTERIOR_MOVED = 0.01  # an interior cell "moves" under margin occlusion beyond this share of the map's range
CRITERIA = __doc__.split("every report):", 1)[1].strip()


@dataclass
class Claim:
    """One claim of the paper as this run supports it (``holds`` None: not measured on this run)."""

    number: int
    title: str
    holds: bool | None
    sentence: str
    figures: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_name: str = ""

    @property
    def verdict(self) -> str:
        return {True: "holds on this run", False: "does NOT hold on this run", None: "not measured on this run"}[self.holds]


def read_table(tables: Path, stem: str) -> pd.DataFrame | None:
    """``tables/<stem>.csv`` of a run, or None when the run did not write it."""
    path = Path(tables) / f"{stem}.csv"
    return pd.read_csv(path) if path.is_file() else None


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def existing_figures(figures: Path, *stems: str) -> list[str]:
    """``figures/<stem>.png`` (relative to the run folder) of the stems whose figure the run wrote."""
    return [f"figures/{s}.png" for s in stems if (Path(figures) / f"{s}.png").is_file()]


def _by_model(df: pd.DataFrame, by_model: bool, statistic):
    return df.groupby("model", sort=False).apply(statistic, include_groups=False) if by_model else statistic(df)


# --- the statistics --------------------------------------------------------------------------------
def centre_mass_outside(misalignment: pd.DataFrame, by_model: bool = False):
    """Claim 1: mean ERF mass outside the IRF over the centre cells (all cells where a grid has none) of
    ``misalignment`` rows; a float, or a Series by model."""
    def stat(df):
        centre = df[df.cell_kind == "centre"].erf_mass_outside_irf
        return float(centre.mean() if len(centre) else df.erf_mass_outside_irf.mean())
    return _by_model(misalignment, by_model, stat)


def keep_irf_median_change(keep: pd.DataFrame, by_model: bool = False):
    """Claim 2: median ``|rel_change|`` of keep-IRF rows (over cells, images and fills); a float, or a Series by
    model."""
    return _by_model(keep, by_model, lambda df: float(df.rel_change.abs().median()))


def occlusion_medians(irf_rows: pd.DataFrame, keys=("model", "experiment", "cell_kind")) -> pd.DataFrame:
    """Median ``|rel_change|`` of keep-IRF / occlude-IRF rows per ``keys``, column ``median_abs_rel_change``."""
    out = irf_rows.assign(a=irf_rows.rel_change.abs()).groupby(list(keys)).a.median()
    return out.rename("median_abs_rel_change").reset_index()


def reference_attack(summary: pd.DataFrame) -> pd.DataFrame:
    """The reference attack's rows of ``attack_summary``: the attack (not the random frame), flip, 8-bit, the run's
    largest ``n_iter``; one per model and ``e``, with the random frame's rates beside (``random_*``)."""
    rows = summary[(summary.setting == "attack") & (summary["mode"] == "flip") & summary.quantized.astype(bool)]
    return rows[rows.n_iter == rows.n_iter.max()]


# --- the claims ------------------------------------------------------------------------------------
def claim_misalignment(run_dir: Path) -> Claim:
    title = "The implicit and the effective receptive field of a CAM cell are misaligned"
    df = read_table(run_dir / "tables", "misalignment")
    figs = existing_figures(run_dir / "figures", "erf_vs_irf", "misalignment_by_cell_kind")
    if df is None or df.empty:
        return Claim(1, title, None, "The misalignment table is missing (notebook 02 did not write it).", figs)
    from .receptive_field import misalignment_summary

    by_kind = misalignment_summary(df, ("erf_mass_outside_irf", "centroid_distance_px", "top_q_iou")).round(3)
    value = centre_mass_outside(df)
    holds = bool(value > MISALIGNED_MASS)
    sentence = (f"Over {df.image.nunique()} images and {df.model.nunique()} model(s), the centre cell's ERF puts "
                f"{pct(value)} of its mass outside its IRF (all cells: {pct(df.erf_mass_outside_irf.mean())}; "
                f"top-q IoU of ERF and IRF {df.top_q_iou.mean():.2f}); the kit calls the fields misaligned above "
                f"{pct(MISALIGNED_MASS)}, so the claim {'holds' if holds else 'does not hold'} here.")
    return Claim(1, title, holds, sentence, figs, by_kind, "misalignment")


def claim_occlusion(run_dir: Path) -> Claim:
    title = "Occlusion outside a cell's IRF changes that cell's value"
    keep = read_table(run_dir / "tables", "occlusion_keep_irf")
    margin = read_table(run_dir / "tables", "occlusion_margin")
    figs = existing_figures(run_dir / "figures", "occlusion_keep_occlude_irf", "occlusion_margin_delta")
    if keep is None or keep.empty:
        return Claim(2, title, None, "The keep-IRF table is missing (notebook 01 did not write it).", figs)
    med = keep_irf_median_change(keep)
    summary = occlusion_medians(keep, ("model", "fill", "cell_kind")).round(3)
    summary = summary.rename(columns={"median_abs_rel_change": "median |relative change| of R(i, j)"})
    holds = bool(med > MOVED_REL_CHANGE)
    sentence = (f"Filling every pixel outside a cell's IRF changes that cell's raw CAM by a median "
                f"{pct(med)} (over {len(keep)} cell x image x fill cases); were the IRF what the cell sees, it "
                f"would not change.")
    occlude = read_table(run_dir / "tables", "occlusion_occlude_irf")
    if occlude is not None and not occlude.empty:
        sentence += f" Filling the IRF itself changes the cell by a median {pct(keep_irf_median_change(occlude))}."
    if margin is not None and not margin.empty and "interior_max_abs_rel_change" in margin:
        e1 = margin[margin.e == margin.e.min()]
        moved = (e1.interior_max_abs_rel_change > INTERIOR_MOVED).mean()
        sentence += (f" A {int(e1.e.iloc[0])}-pixel margin occlusion moves an interior cell whose IRF never "
                     f"touches the margin by more than {pct(INTERIOR_MOVED)} of the map's range in {pct(moved)} of "
                     f"image x fill cases (median largest change {pct(e1.interior_max_abs_rel_change.median())}).")
    sentence += (f" The kit's criterion is a median change above {pct(MOVED_REL_CHANGE)}: the claim "
                 f"{'holds' if holds else 'does not hold'} here.")
    return Claim(2, title, holds, sentence, figs, summary, "occlusion_keep_irf")


def claim_attack(run_dir: Path) -> Claim:
    title = "A 1-pixel frame is enough to change the saliency map and the prediction"
    df = read_table(run_dir / "tables", "attack_summary")
    figs = existing_figures(run_dir / "figures", "attack_examples", "attack_metrics_vs_e")
    if df is None or df.empty:
        return Claim(3, title, None, "The attack summary table is missing (notebook 03 did not write it).", figs)
    ref = reference_attack(df)
    e_min = int(ref.e.min())
    q = ref[ref.e == e_min]
    fooling, cos = q.fooling_rate.mean(), q.cam_cosine.mean()
    base_fool, base_cos = q.random_fooling_rate.mean(), q.random_cam_cosine.mean()
    holds = bool(fooling > FOOLED_RATE and (pd.isna(base_cos) or cos < base_cos))
    sentence = (f"With only the {e_min}-pixel frame changed ({int(q.n_iter.max())} iterations, after 8-bit "
                f"quantisation), the attack changes the prediction of {pct(fooling)} of the images and leaves a CAM "
                f"with cosine similarity {cos:.2f} to the clean one; a random frame of the same width changes "
                f"{pct(base_fool)} of predictions, CAM cosine {base_cos:.2f}. The kit's criterion (fooling rate above "
                f"{pct(FOOLED_RATE)} and CAM similarity below the random frame's): the claim "
                f"{'holds' if holds else 'does not hold'} here.")
    return Claim(3, title, holds, sentence, figs, q.round(3), "attack_summary")


CLAIMS = (claim_misalignment, claim_occlusion, claim_attack)


def collect_claims(run_dir: str | os.PathLike) -> list[Claim]:
    run_dir = resolve(run_dir)
    return [make(run_dir) for make in CLAIMS]


def model_table(run_dir: Path) -> pd.DataFrame | None:
    """One row per model: input size, CAM grid, theoretical RF, each claim's statistic (the centre cell's ERF mass
    outside its IRF, the keep-IRF median |change|, the reference attack's fooling rate and CAM cosine, 8-bit, at each
    ``e``), with each claim's criterion judged for that model (``claim1`` ... ``claim3``)."""
    tables = Path(run_dir) / "tables"
    sizes, mis, keep, attack = (read_table(tables, t) for t in
                                ("receptive_field_sizes", "misalignment", "occlusion_keep_irf", "attack_summary"))
    if sizes is None:
        return None
    out = sizes[["model", "input_px", "grid", "theoretical_rf_px"]].copy()
    if mis is not None:
        out["centre_erf_mass_outside_irf"] = out.model.map(centre_mass_outside(mis, by_model=True))
        out["claim1"] = out.centre_erf_mass_outside_irf > MISALIGNED_MASS
    if keep is not None:
        out["keep_irf_median_change"] = out.model.map(keep_irf_median_change(keep, by_model=True))
        out["claim2"] = out.keep_irf_median_change > MOVED_REL_CHANGE
    if attack is not None:
        ref = reference_attack(attack)
        for e in sorted(ref.e.unique()):
            at = ref[ref.e == e].set_index("model")
            out[f"fooling_e{e}"] = out.model.map(at.fooling_rate)
            out[f"cam_cosine_e{e}"] = out.model.map(at.cam_cosine)
        e_min = ref.e.min()
        base_cos = ref[ref.e == e_min].set_index("model").random_cam_cosine
        out["claim3"] = (out[f"fooling_e{e_min}"] > FOOLED_RATE) & (out[f"cam_cosine_e{e_min}"] < out.model.map(base_cos))
    return out
