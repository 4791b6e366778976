"""The run report: each of the paper's claims with its figure, its table rows, and a verdict written
from this run's numbers (not fixed prose). Used by ``notebooks/04_report.ipynb``.

Claims and the kit's criteria (the paper publishes no thresholds; these are the kit's, stated in
every report):

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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .paths import resolve

MISALIGNED_MASS = 0.5
MOVED_REL_CHANGE = 0.10
FOOLED_RATE = 0.5


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


def _read(tables: Path, stem: str) -> pd.DataFrame | None:
    path = tables / f"{stem}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _figures(figures: Path, *stems: str) -> list[str]:
    return [f"figures/{s}.png" for s in stems if (figures / f"{s}.png").is_file()]


def claim_misalignment(run_dir: Path) -> Claim:
    title = "The implicit and the effective receptive field of a CAM cell are misaligned"
    df = _read(run_dir / "tables", "misalignment")
    figs = _figures(run_dir / "figures", "erf_vs_irf", "misalignment_by_cell_kind")
    if df is None or df.empty:
        return Claim(1, title, None, "The misalignment table is missing (notebook 02 did not write it).", figs)
    from .receptive_field import misalignment_summary

    by_kind = misalignment_summary(df, ("erf_mass_outside_irf", "centroid_distance_px", "top_q_iou")).round(3)
    centre = df[df.cell_kind == "centre"].erf_mass_outside_irf
    overall = df.erf_mass_outside_irf
    value = centre.mean() if len(centre) else overall.mean()
    holds = bool(value > MISALIGNED_MASS)
    n_images = df.image.nunique()
    sentence = (f"Over {n_images} images and {df.model.nunique()} model(s), the centre cell's ERF puts "
                f"{_pct(value)} of its mass outside its IRF (all cells: {_pct(overall.mean())}; "
                f"top-q IoU of ERF and IRF {df.top_q_iou.mean():.2f}); the kit calls the fields misaligned above "
                f"{_pct(MISALIGNED_MASS)}, so the claim {'holds' if holds else 'does not hold'} here.")
    return Claim(1, title, holds, sentence, figs, by_kind, "misalignment")


def claim_occlusion(run_dir: Path) -> Claim:
    title = "Occlusion outside a cell's IRF changes that cell's value"
    keep = _read(run_dir / "tables", "occlusion_keep_irf")
    margin = _read(run_dir / "tables", "occlusion_margin")
    figs = _figures(run_dir / "figures", "occlusion_keep_occlude_irf", "occlusion_margin_delta")
    if keep is None or keep.empty:
        return Claim(2, title, None, "The keep-IRF table is missing (notebook 01 did not write it).", figs)
    med = keep.rel_change.abs().median()
    summary = keep.groupby(["model", "fill", "cell_kind"]).rel_change.apply(lambda s: s.abs().median()).round(3)
    summary = summary.rename("median |relative change| of R(i, j)").reset_index()
    holds = bool(med > MOVED_REL_CHANGE)
    sentence = (f"Filling every pixel outside a cell's IRF changes that cell's raw CAM by a median "
                f"{_pct(med)} (over {len(keep)} cell x image x fill cases); were the IRF what the cell sees, it "
                f"would not change.")
    occlude = _read(run_dir / "tables", "occlusion_occlude_irf")
    if occlude is not None and not occlude.empty:
        sentence += (f" Filling the IRF itself changes the cell by a median {_pct(occlude.rel_change.abs().median())}.")
    if margin is not None and not margin.empty and "interior_max_abs_rel_change" in margin:
        e1 = margin[margin.e == margin.e.min()]
        moved = (e1.interior_max_abs_rel_change > 0.01).mean()
        sentence += (f" A {int(e1.e.iloc[0])}-pixel margin occlusion moves an interior cell whose IRF never "
                     f"touches the margin by more than 1% of the map's range in {_pct(moved)} of image x fill cases "
                     f"(median largest change {_pct(e1.interior_max_abs_rel_change.median())}).")
    sentence += f" The kit's criterion is a median change above {_pct(MOVED_REL_CHANGE)}: the claim " \
                f"{'holds' if holds else 'does not hold'} here."
    return Claim(2, title, holds, sentence, figs, summary, "occlusion_keep_irf")


def claim_attack(run_dir: Path) -> Claim:
    title = "A 1-pixel frame is enough to change the saliency map and the prediction"
    df = _read(run_dir / "tables", "attack_summary")
    figs = _figures(run_dir / "figures", "attack_examples", "attack_metrics_vs_e")
    if df is None or df.empty:
        return Claim(3, title, None, "The attack summary table is missing (notebook 03 did not write it).", figs)
    rows = df[(df["mode"] == "flip") & (df.setting == "attack")] if "setting" in df else df[df["mode"] == "flip"]
    e_min = int(rows.e.min())
    rows = rows[(rows.e == e_min) & (rows.n_iter == rows.n_iter.max())]
    q = rows[rows.quantized] if "quantized" in rows else rows
    fooling, cos = q.fooling_rate.mean(), q.cam_cosine.mean()
    base = df[(df.setting == "random_frame") & (df.e == e_min)] if "setting" in df else None
    if base is not None and "quantized" in base:
        base = base[base.quantized]
    base_cos = base.cam_cosine.mean() if base is not None and len(base) else float("nan")
    base_fool = base.fooling_rate.mean() if base is not None and len(base) else float("nan")
    holds = bool(fooling > FOOLED_RATE and (pd.isna(base_cos) or cos < base_cos))
    sentence = (f"With only the {e_min}-pixel frame changed ({int(rows.n_iter.max())} iterations, after 8-bit "
                f"quantisation), the attack changes the prediction of {_pct(fooling)} of the images and leaves a CAM "
                f"with cosine similarity {cos:.2f} to the clean one; a random frame of the same width changes "
                f"{_pct(base_fool)} of predictions, CAM cosine {base_cos:.2f}. The kit's criterion (fooling rate above "
                f"{_pct(FOOLED_RATE)} and CAM similarity below the random frame's): the claim "
                f"{'holds' if holds else 'does not hold'} here.")
    return Claim(3, title, holds, sentence, figs, q.round(3), "attack_summary")


# Goals of the stronger optimisers (issue 11; lite0, the staged photos, 100 passes, 8-bit): e -> (fooling, cosine)
ATTACK_GOALS = {1: (0.9, 0.5), 2: (1.0, 0.3)}


CLAIMS = (claim_misalignment, claim_occlusion, claim_attack)


# --- sections beyond the three claims --------------------------------------------------------------
@dataclass
class Section:
    """A report section: a title, sentences written from the run's tables, figures, a table."""

    title: str
    sentence: str
    figures: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_name: str = ""


def _reference_attack(df: pd.DataFrame) -> pd.DataFrame:
    """The reference attack's rows of ``attack_summary``: flip, the run's largest ``n_iter``, 8-bit."""
    rows = df[(df.setting == "attack") & (df["mode"] == "flip") & df.quantized.astype(bool)]
    return rows[rows.n_iter == rows.n_iter.max()]


def model_table(run_dir: Path) -> pd.DataFrame | None:
    """One row per model: input size, CAM grid, theoretical RF, the centre cell's ERF mass outside its IRF, the
    keep-IRF median |change|, and the reference attack's fooling rate and CAM cosine (8-bit) at each ``e``, with each
    claim's criterion judged for that model (``claim1`` ... ``claim3``)."""
    tables = run_dir / "tables"
    sizes, mis, keep, attack = (_read(tables, t) for t in
                                ("receptive_field_sizes", "misalignment_summary", "occlusion_keep_irf", "attack_summary"))
    if sizes is None:
        return None
    out = sizes[["model", "input_px", "grid", "theoretical_rf_px"]].copy()
    if mis is not None:
        centre = mis[mis.cell_kind == "centre"].set_index("model").erf_mass_outside_irf_mean
        out["centre_erf_mass_outside_irf"] = out.model.map(centre)
        out["claim1"] = out.centre_erf_mass_outside_irf > MISALIGNED_MASS
    if keep is not None:
        med = keep.assign(a=keep.rel_change.abs()).groupby("model").a.median()
        out["keep_irf_median_change"] = out.model.map(med)
        out["claim2"] = out.keep_irf_median_change > MOVED_REL_CHANGE
    if attack is not None:
        ref = _reference_attack(attack)
        base = attack[(attack.setting == "random_frame") & attack.quantized.astype(bool)]
        for e in sorted(ref.e.unique()):
            at = ref[ref.e == e].set_index("model")
            out[f"fooling_e{e}"] = out.model.map(at.fooling_rate)
            out[f"cam_cosine_e{e}"] = out.model.map(at.cam_cosine)
        e_min = ref.e.min()
        base_cos = base[base.e == e_min].set_index("model").cam_cosine
        out["claim3"] = (out[f"fooling_e{e_min}"] > FOOLED_RATE) & (out[f"cam_cosine_e{e_min}"] < out.model.map(base_cos))
    return out


def across_models_figure(run_dir: Path) -> str | None:
    """``figures/attack_across_models.png``: fooling rate and CAM cosine (reference attack, 8-bit) against ``e``,
    one line per model; its path relative to the run folder."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import log_width_axis
    from .results import save_figure

    df = _read(run_dir / "tables", "attack_summary")
    if df is None or df.empty:
        return None
    ref = _reference_attack(df)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for model, rows in ref.groupby("model", sort=False):
        for ax, col in zip(axes, ("fooling_rate", "cam_cosine")):
            ax.plot(rows.e, rows[col], marker="o", label=model)
    for ax, label in zip(axes, ("fooling rate (prediction changed)", "cosine(clean CAM, adversarial CAM)")):
        log_width_axis(ax, sorted(ref.e.unique()))
        ax.set(ylabel=label, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[1].legend(title="model")
    fig.suptitle(f"The reference attack across models ({int(ref.n_iter.max())} iterations, 8-bit)")
    fig.tight_layout()
    save_figure(fig, run_dir, "attack_across_models")
    plt.close(fig)
    return "figures/attack_across_models.png"


def section_across_models(run_dir: Path) -> Section | None:
    """*Across models* (runs of more than one model): the per-model table and which claims hold for which model."""
    table = model_table(run_dir)
    if table is None or len(table) < 2:
        return None
    verdicts = []
    for k, title in ((1, "misaligned fields"), (2, "occlusion outside the IRF moves the cell"),
                     (3, "a 1-pixel frame changes CAM and prediction")):
        col = f"claim{k}"
        if col not in table:
            continue
        broken = list(table.model[~table[col].astype(bool)])
        verdicts.append(f"claim {k} ({title}) holds for every model" if not broken else
                        f"claim {k} ({title}) does NOT hold for {', '.join(broken)}")
    e_cols = [c for c in table.columns if c.startswith("fooling_e")]
    spread = ""
    if e_cols:
        e_min = e_cols[0]
        lo, hi = table[e_min].idxmin(), table[e_min].idxmax()
        spread = (f" At e = {e_min.removeprefix('fooling_e')} the reference attack fools from {_pct(table[e_min][lo])} "
                  f"({table.model[lo]}) to {_pct(table[e_min][hi])} ({table.model[hi]}) of the images.")
    sentence = (f"{len(table)} models, each at its own input size ({', '.join(f'{m} {p} px' for m, p in zip(table.model, table.input_px))}): "
                + "; ".join(verdicts) + "." + spread)
    figure = across_models_figure(run_dir)
    return Section("Across models", sentence, [figure] if figure else [], table.round(3), "model comparison")


KEEP_GOAL = (1, 8 / 9, 0.7)  # keep mode at e = 1: the label kept on >= 8 of 9 images, CAM cosine below 0.7


def section_attack_strength(run_dir: Path) -> Section | None:
    """*Beyond the paper: the strongest attack at the same budget*: per model and ``e``, the reference optimiser's
    result beside the strongest of ``tables/attack_ablation.csv`` (flip, largest budget, 8-bit; strongest = highest
    fooling rate, then lowest CAM cosine), keep mode per optimiser, the targeted attack per optimiser
    (``tables/attack_targeted.csv``), each with its goal; None when the ablation table is missing."""
    df = _read(run_dir / "tables", "attack_ablation")
    if df is None or df.empty:
        return None
    from .attack import ablation_summary

    if "mode" not in df:
        df = df.assign(mode="flip")
    s = ablation_summary(df)
    s = s[s.quantized & (s.n_iter == s.n_iter.max())]
    lines = []
    for (model, e), g in s[s["mode"] == "flip"].groupby(["model", "e"]):
        ref = g[(g.optimizer == "sign") & (g.variant == "default")]
        top = g.sort_values(["fooling_rate", "cam_cosine"], ascending=[False, True]).iloc[0]
        text = (f"{model}, e = {e}, {int(top.n_iter)} passes per image (8-bit): the strongest setting, "
                f"{top.optimizer} ({top.variant}), fools {_pct(top.fooling_rate)} of the images with CAM cosine "
                f"{top.cam_cosine:.2f}")
        if len(ref):
            text += (f"; the reference optimiser (sign) fools {_pct(ref.fooling_rate.iloc[0])} with cosine "
                     f"{ref.cam_cosine.iloc[0]:.2f}")
        if e in ATTACK_GOALS:
            fool, cos = ATTACK_GOALS[e]
            met = top.fooling_rate >= fool and top.cam_cosine <= cos
            parts = [f"fooling rate {'met' if top.fooling_rate >= fool else f'missed by {fool - top.fooling_rate:.2f}'}",
                     f"cosine {'met' if top.cam_cosine <= cos else f'missed by {top.cam_cosine - cos:.2f}'}"]
            text += f". Goal (fooling >= {_pct(fool)}, cosine <= {cos}): " + ("met" if met else ", ".join(parts))
        lines.append(f"- {text}.")
    goal_e, goal_kept, goal_cos = KEEP_GOAL
    for (model, e), g in s[(s["mode"] == "keep") & (s.variant == "default")].groupby(["model", "e"]):
        parts = [f"{r.optimizer} keeps the label on {round(r.kept_rate * r.n_images)} of {int(r.n_images)} images "
                 f"with CAM cosine {r.cam_cosine:.2f}" for r in g.itertuples()]
        text = f"- {model}, keep mode, e = {e}: " + "; ".join(parts)
        if e == goal_e:
            met = [r.optimizer for r in g.itertuples() if r.kept_rate >= goal_kept - 1e-9 and r.cam_cosine < goal_cos]
            text += (f". Goal (label kept on >= {_pct(goal_kept)} of the images, cosine < {goal_cos}): "
                     + (f"met by {', '.join(met)}" if met else "missed"))
        lines.append(text + ".")
    tg = _read(run_dir / "tables", "attack_targeted")
    if tg is not None and not tg.empty and "optimizer" in tg:
        t = tg[tg.quantized.astype(bool)].groupby(["model", "e", "optimizer"]).target_cosine.mean()
        for (model, e), g in t.groupby(level=[0, 1]):
            g = g.droplevel([0, 1])
            text = (f"- {model}, targeted, e = {e}: cosine to the target shape "
                    + ", ".join(f"{opt} {v:.2f}" for opt, v in g.items()))
            if "sign" in g and len(g) > 1:
                best = g.drop("sign").idxmax()
                text += (f"; {best} " + ("beats" if g[best] > g["sign"] else "does not beat") + " the reference")
            lines.append(text + ".")
    return Section("Beyond the paper: the strongest attack at the same budget", "\n".join(lines),
                   _figures(run_dir / "figures", "attack_ablation"), None, "attack_ablation")


def section_beyond_the_paper(run_dir: Path) -> Section | None:
    """*Beyond the paper* (notebook 05): transfer to other CAM methods, faithfulness, ERF-aware upsampling."""
    lines = beyond_the_paper(run_dir)
    if not lines:
        return None
    title = lines[0].removeprefix("## ").strip()
    return Section(title, "\n".join(lines[1:]).strip())


SECTIONS = (section_across_models, section_attack_strength, section_beyond_the_paper)


def collect_claims(run_dir: str | os.PathLike) -> list[Claim]:
    run_dir = resolve(run_dir)
    return [make(run_dir) for make in CLAIMS]


def _markdown_table(df: pd.DataFrame) -> str:
    try:
        return df.to_markdown(index=False)
    except ImportError:  # tabulate missing
        return "```\n" + df.to_string(index=False) + "\n```"


# --- Beyond the paper (notebook 05) ---------------------------------------------------------
REVEAL_MARGIN = 0.01  # ERF map's rise of mass near the frame must beat bilinear's by this share to "reveal" it

def beyond_the_paper(run_dir: str | os.PathLike) -> list[str]:
    """Markdown lines of the *Beyond the paper* section, written from ``transfer.csv``, ``transfer_scale_check.csv``,
    ``faithfulness.csv`` and ``upsampling_comparison.csv``; a sentence saying so where a table is missing."""
    tables = resolve(run_dir) / "tables"
    lines = ["## Beyond the paper", "",
             "Questions the paper leaves open (notebook 05, `SCIENCE.md` section 6). These are findings of this run, "
             "not verdicts on the paper's claims.", ""]
    tr, check = _read(tables, "transfer"), _read(tables, "transfer_scale_check")
    if tr is None or tr.empty:
        lines += ["**Transfer to other CAM methods:** not measured on this run (notebook 05 did not write "
                  "`tables/transfer.csv`).", ""]
    else:
        tr = tr.assign(optimizer=tr.optimizer.astype(str))
        g = tr.groupby(["optimizer", "method", "e"])[["cam_cosine", "random_cam_cosine", "top20_iou",
                                                     "random_top20_iou"]].mean()
        e_min, methods = int(tr.e.min()), sorted(tr.method.unique())
        sentences = []
        for opt in sorted(tr.optimizer.unique()):
            here = [m for m in methods if (opt, m, e_min) in g.index]
            parts = [f"{m} {g.loc[(opt, m, e_min), 'cam_cosine']:.3f} (random frame "
                     f"{g.loc[(opt, m, e_min), 'random_cam_cosine']:.3f})" for m in here]
            moved = [m for m in here if g.loc[(opt, m, e_min), "cam_cosine"] < g.loc[(opt, m, e_min), "random_cam_cosine"]]
            sentences.append(f"with the {opt} optimiser at e = {e_min} the clean vs attacked map cosine is "
                             + "; ".join(parts) + f", below the random frame's for {len(moved)} of {len(here)} methods"
                             + (f" ({', '.join(moved)})" if moved else ""))
        lines += [f"**Transfer to other CAM methods** (pytorch-grad-cam, {tr.image.nunique()} images, e = "
                  f"{', '.join(str(v) for v in sorted(tr.e.unique()))}): the attack optimises CAM only; "
                  + "; ".join(sentences) + "."
                  + ("" if "scorecam" in set(tr.method) else " Score-CAM was not computed on this run (one forward pass "
                     "per channel; notebook 05's `score_cam_images` turns it on)."), ""]
        lines += [_markdown_table(g.round(3).reset_index()), ""]
    if check is not None and not check.empty:
        lines += [f"Check, not a transfer result: Grad-CAM, HiResCAM and XGrad-CAM equal CAM up to a positive scale for "
                  f"this global-average-pool + linear head (largest difference of the normalised maps "
                  f"{check.max_abs_diff.max():.1e}).", ""]
    faith = _read(tables, "faithfulness")
    if faith is not None and not faith.empty:
        f = faith.groupby(["method", "upsampling"])[["deletion_auc", "insertion_auc"]].mean()
        best_del, best_ins = f.deletion_auc.idxmin(), f.insertion_auc.idxmax()
        lines += [f"**Faithfulness** (deletion to the mean colour, insertion from a blur; lower deletion and higher "
                  f"insertion are better): the lowest deletion AUC is {' / '.join(best_del)} "
                  f"({f.deletion_auc.min():.3f}), the highest insertion AUC {' / '.join(best_ins)} "
                  f"({f.insertion_auc.max():.3f}).", "", _markdown_table(f.round(3).reset_index()), ""]
    up = _read(tables, "upsampling_comparison")
    if up is None or up.empty:
        lines += ["**ERF-aware upsampling:** not measured on this run (no `tables/upsampling_comparison.csv`).", ""]
        return lines
    u = up.groupby("upsampling").mean(numeric_only=True)
    cols = [c for c in ("deletion_auc", "insertion_auc", "occlusion_spearman", "clean_band_mass", "adv_band_mass",
                        "clean_frame_mass", "adv_frame_mass") if c in u]
    sent = ("**ERF-aware upsampling:** occlusion agreement (Spearman with the sliding-patch map) is "
            + ", ".join(f"{m} {u.loc[m, 'occlusion_spearman']:.2f}" for m in u.index) + "; deletion AUC "
            + ", ".join(f"{m} {u.loc[m, 'deletion_auc']:.3f}" for m in u.index) + ".")
    if "adv_band_mass" in u and {"bilinear", "erf"} <= set(u.index):
        e = int(up.e.iloc[0])
        rise = u.adv_band_mass - u.clean_band_mass
        reveals = bool(rise["erf"] > 0 and rise["erf"] > rise["bilinear"] + REVEAL_MARGIN)
        sent += (f" Under the {e}-pixel attack the share of the map's mass within {e} + 16 px of the border goes from "
                 + ", ".join(f"{100 * u.loc[m, 'clean_band_mass']:.1f}% to {100 * u.loc[m, 'adv_band_mass']:.1f}% ({m})"
                             for m in u.index)
                 + ". Does the ERF-aware map reveal where the adversarial evidence comes from, where bilinear hides it? "
                 + ("Yes on this run" if reveals else "No on this run")
                 + f": the exact ERF projection moves {100 * rise['erf']:.1f} points of mass towards the frame, bilinear "
                   f"{100 * rise['bilinear']:.1f} (the kit says yes when the ERF map's rise is positive and exceeds "
                   f"bilinear's by more than {100 * REVEAL_MARGIN:.0f} point).")
    lines += [sent, "", _markdown_table(u[cols].round(3).reset_index()), ""]
    figs = _figures(resolve(run_dir) / "figures", "transfer_cosine", "upsampling_under_attack")
    lines += [f"![{Path(f).stem}]({f})" for f in figs] + [""]
    return lines


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/REPORT.md`` from the run's tables and figures; return its path."""
    run_dir = resolve(run_dir)
    claims = collect_claims(run_dir)
    params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else {}
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    lines = [f"# Report: {run_dir.name}", "",
             "Xia et al., *On the Receptive Field Misalignment in CAM-based Visual Explanations*, "
             "Pattern Recognition Letters 152 (2021). Every sentence below is written from this run's tables.", ""]
    if params:
        lines += ["| parameter | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in params.items()] + [""]
    if info:
        lines += [f"Device: {info.get('device')}; git commit {info.get('git_commit')}; versions: "
                  + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items() if v) + ".", ""]
        walls = info.get("notebooks", {})
        if walls:
            lines += ["Wall time: " + ", ".join(f"{k} {v['wall_s']} s" for k, v in walls.items() if v.get("wall_s"))
                      + ".", ""]
    if params.get("fast"):
        lines += ["> **FAST smoke run**: few images, small settings and few attack iterations. It checks that the "
                  "pipeline works; its verdicts do not test the paper's claims. Run `make reproduce` for those.", ""]
    lines += ["## Summary", ""] + [f"{c.number}. **{c.title}** — {c.verdict}." for c in claims] + [""]
    for c in claims:
        lines += [f"## Claim {c.number}: {c.title}", "", f"**Verdict: {c.verdict}.** {c.sentence}", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in c.figures] + [""]
        if c.table is not None:
            lines += [f"From `tables/{c.table_name}.csv`:", "", _markdown_table(c.table), ""]
    for make in SECTIONS:
        section = make(run_dir)
        if section is None:
            continue
        lines += [f"## {section.title}", "", section.sentence, ""]
        lines += [f"![{Path(f).stem}]({f})" for f in section.figures] + [""]
        if section.table is not None:
            lines += [f"From the run's tables ({section.table_name}):", "", _markdown_table(section.table), ""]
    lines += ["## Criteria", "", __doc__.split("every report):", 1)[1].strip(), ""]
    path = run_dir / "REPORT.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path
