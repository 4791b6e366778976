"""The run report (``REPORT.md``): each of the paper's claims (:mod:`ama.studies.claims`) with its figure, its table rows and a
verdict written from this run's numbers (not fixed prose), then the sections beyond the claims: *Across models*, the
strongest attack at the same budget and a section per study of notebook 05 (:mod:`ama.studies.study`). Used by ``notebooks/04_report.ipynb``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..artifacts import FIGURES, TABLES
from ..attack import optimizers
from ..criteria import CRITERIA, pct
from ..figures.charts import attack_across_models_figure
from ..inputs.models import published_top1
from ..params import RunParams
from ..paths import atomic_write, resolve
from ..stats.intervals import FAILS, HOLDS
from ..stats.rows import eight_bit, original_attack
from ..store.tables import markdown_table, read_table, save_figure, save_table
from ..studies.ablation import ablation_summary, ingredient_lines
from ..studies.claims import collect_claims, existing_figures, model_table
from ..studies.confidence import confidence_lines
from ..studies.registry import studies
from .verdicts import adjusted_claims, multiplicity_lines, verdict_table

# Goals of the stronger optimisers (issue 11; lite0, the staged photos, 100 passes, 8-bit): e -> (fooling, cosine)
ATTACK_GOALS = {1: (0.9, 0.5), 2: (1.0, 0.3)}


# --- sections beyond the three claims --------------------------------------------------------------
@dataclass
class Section:
    """A report section: a title, sentences written from the run's tables, figures, a table."""

    title: str
    sentence: str
    figures: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_name: str = ""


def across_models_figure(run_dir: Path) -> str | None:
    """``figures/attack_across_models.png`` (:func:`ama.figures.charts.attack_across_models_figure`) of the run's
    ``attack_summary``; its path relative to the run folder, None without that table."""
    df = read_table(run_dir / "tables", TABLES.attack_summary)
    if df is None or df.empty:
        return None
    fig = attack_across_models_figure(original_attack(df))
    save_figure(fig, run_dir, FIGURES.attack_across_models)
    plt.close(fig)
    return f"figures/{FIGURES.attack_across_models}.png"


def section_across_models(run_dir: Path) -> Section | None:
    """*Across models* (runs of more than one model): the per-model table and which claims hold for which model."""
    table = model_table(run_dir)
    if table is None or len(table) < 2:
        return None
    verdicts = []
    for col, title in (("claim1", "misaligned fields"), ("claim2", "occlusion outside the IRF moves the cell"),
                       ("claim3", "a 1-pixel frame changes CAM and prediction, capability"),
                       ("claim3_prevalence", "the same, prevalence")):
        k = col[5]
        if col not in table:
            continue
        by_outcome = table.groupby(col, sort=False).model.agg(list)
        if list(by_outcome.index) == [HOLDS]:
            verdicts.append(f"claim {k} ({title}) holds for every model")
        else:
            verdicts.append(f"claim {k} ({title}) " + ", ".join(f"{o} for {', '.join(ms)}"
                                                              for o, ms in by_outcome.items()))
    if "margin_special" in table:  # the location control, a control beside claim 3
        verdicts.append("the margin is special (location control) " + ", ".join(
            f"{o} for {', '.join(ms)}" for o, ms in table.groupby("margin_special", sort=False).model.agg(list).items()))
    e_cols = [c for c in table.columns if c.startswith("fooling_e")]
    spread = ""
    if e_cols:
        e_min = e_cols[0]
        lo, hi = table[e_min].idxmin(), table[e_min].idxmax()
        spread = (f" At e = {e_min.removeprefix('fooling_e')} the reference attack fools from {pct(table[e_min][lo])} "
                  f"({table.model[lo]}) to {pct(table[e_min][hi])} ({table.model[hi]}) of the images.")
    sentence = (f"{len(table)} models, each at its own input size ({', '.join(f'{m} {p} px' for m, p in zip(table.model, table.input_px))}): "
                + "; ".join(verdicts) + "." + spread)
    figure = across_models_figure(run_dir)
    return Section("Across models", sentence, [figure] if figure else [], table.round(3), "model comparison")


KEEP_GOAL = (1, 8 / 9, 0.7)  # keep mode at e = 1: the label kept on >= 8 of 9 images, CAM cosine below 0.7


def section_attack_strength(run_dir: Path) -> Section | None:
    """*Beyond the paper: the strongest attack at the same budget*: per model and ``e``, the reference optimiser's
    result beside the strongest of ``tables/attack_ablation.csv`` (flip, largest budget, 8-bit; strongest = highest
    fooling rate, then lowest CAM cosine) and keep mode per optimiser, each with its goal (the targeted shapes per
    optimiser are claim 3's, :func:`ama.studies.claims.claim_attack`); None when the ablation table is missing."""
    df = read_table(run_dir / "tables", TABLES.attack_ablation)
    if df is None or df.empty:
        return None

    s = ablation_summary(df)
    s = eight_bit(s)
    s = s[s.n_iter == s.n_iter.max()]
    lines = []
    for (model, e), g in s[s["mode"] == "flip"].groupby(["model", "e"]):
        ref = g[(g.optimizer == optimizers.ORIGINAL) & (g.variant == "default")]
        top = g.sort_values(["fooling_rate", "cam_cosine"], ascending=[False, True]).iloc[0]
        text = (f"{model}, e = {e}, {int(top.n_iter)} passes per image (8-bit): the strongest setting, "
                f"{top.optimizer} ({top.variant}), fools {pct(top.fooling_rate)} of the images with CAM cosine "
                f"{top.cam_cosine:.2f}")
        if len(ref):
            text += (f"; the original optimiser ({optimizers.ORIGINAL}) fools {pct(ref.fooling_rate.iloc[0])} with cosine "
                     f"{ref.cam_cosine.iloc[0]:.2f}")
        if e in ATTACK_GOALS:
            fool, cos = ATTACK_GOALS[e]
            met = top.fooling_rate >= fool and top.cam_cosine <= cos
            parts = [f"fooling rate {'met' if top.fooling_rate >= fool else f'missed by {fool - top.fooling_rate:.2f}'}",
                     f"cosine {'met' if top.cam_cosine <= cos else f'missed by {top.cam_cosine - cos:.2f}'}"]
            text += f". Goal (fooling >= {pct(fool)}, cosine <= {cos}): " + ("met" if met else ", ".join(parts))
        lines.append(f"- {text}.")
    goal_e, goal_kept, goal_cos = KEEP_GOAL
    for (model, e), g in s[(s["mode"] == "keep") & (s.variant == "default")].groupby(["model", "e"]):
        parts = [f"{r.optimizer} keeps the label on {round(r.kept_rate * r.n_images)} of {int(r.n_images)} images "
                 f"with CAM cosine {r.cam_cosine:.2f}" for r in g.itertuples()]
        text = f"- {model}, keep mode, e = {e}: " + "; ".join(parts)
        if e == goal_e:
            met = [r.optimizer for r in g.itertuples() if r.kept_rate >= goal_kept - 1e-9 and r.cam_cosine < goal_cos]
            text += (f". Goal (label kept on >= {pct(goal_kept)} of the images, cosine < {goal_cos}): "
                     + (f"met by {', '.join(met)}" if met else "missed"))
        lines.append(text + ".")
    return Section("Beyond the paper: the strongest attack at the same budget", "\n".join(lines),
                   existing_figures(run_dir / "figures", FIGURES.attack_ablation), None, TABLES.attack_ablation)


def section_ingredients(run_dir: Path) -> Section | None:
    """*Which ingredient makes the attack strong?*: the ingredient study of ``tables/attack_ingredients_summary.csv``
    (:func:`ama.studies.ablation.ingredient_summary`): the setting chosen on one half of the images, each variant's result on
    the other half beside the reference's, and which ingredients raise the fooling rate there; None without it."""
    s = read_table(run_dir / "tables", TABLES.attack_ingredients_summary)
    if s is None or s.empty:
        return None

    lines = ["Each ingredient of the stronger optimisers alone on top of the reference (sign steps, cross-entropy, "
             "last iterate), and each optimiser with all three, at the same budget; the setting is chosen on one "
             "half of the study's images and every variant reported on the other half (fooling: each image's share "
             "of seeds fooled, mean over images; 95% BCa bootstrap intervals over images; gain: paired per image with "
             "the reference, judged against 0 by the exact sign test on the images where the two differ)."]
    for (model, e), g in s.groupby(["model", "e"], sort=False):
        rep = g.dropna(subset=["verdict"]) if "verdict" in g else g.iloc[:0]
        up = [r.variant for r in rep.itertuples() if r.verdict == HOLDS]
        down = [r.variant for r in rep.itertuples() if r.verdict == FAILS]
        chosen = g[g.chosen]
        text = (f"{model}, e = {e}: " + (f"fools more than the reference on the held-out images: {', '.join(up)}"
                                         if up else "no variant fools more than the reference on the held-out "
                                                    "images beyond its interval"))
        text += f"; fools less: {', '.join(down)}" if down else ""
        if len(chosen) and chosen.variant.iloc[0] != "reference" and "verdict" in chosen:
            c = chosen.iloc[0]
            text += (f". The setting chosen on the tuning half, {c.variant}, gains {100 * c.gain:+.0f} points "
                     f"({100 * c.gain_low:+.0f} to {100 * c.gain_high:+.0f}) there: {c.verdict}")
        lines.append(text + ".")
    lines.append("```\n" + "\n".join(ingredient_lines(s)) + "\n```")
    cols = ["model", "e", "variant", "chosen", "n_images", "n_seeds", "fooling_rate", "fooling_low", "fooling_high",
            "cam_cosine", "gain", "gain_low", "gain_high", "verdict"]
    return Section("Which ingredient makes the attack strong? (chosen on one half, reported on the other)",
                   "\n\n".join(lines), existing_figures(run_dir / "figures", FIGURES.attack_ingredients),
                   s[[c for c in cols if c in s]].round(3), TABLES.attack_ingredients_summary)


def section_confidence(run_dir: Path) -> Section | None:
    """*Beyond the paper: image confidence*: the reference attack's fooling against the clean logit margin
    (:func:`ama.studies.confidence.confidence_regression`, ``tables/attack_confidence.csv``); None when the table is
    missing."""
    table = read_table(run_dir / "tables", TABLES.attack_confidence)
    if table is None or table.empty:
        return None
    sentence = ("Do confident images resist? A logistic regression of fooled (the reference attack, 8-bit) on the "
                "clean logit margin (top-1 minus top-2 logit), per model and e, read off at the median margin of each "
                "third of the images by margin; the least confident third shows what less confident (validation-"
                "like) images would give:\n\n" + "\n".join(f"- {line}" for line in confidence_lines(table)))
    figs = existing_figures(run_dir / "figures", FIGURES.attack_confidence)
    return Section("Beyond the paper: image confidence", sentence, figs)


def section_images(run_dir: Path) -> Section | None:
    """*The images*: the clean accuracy of each model on a labelled set (with exact intervals) beside its published
    ImageNet validation top-1, which images the run attacked, the fooling rate by clean-confidence tercile and the
    spread of the attack across seeds."""
    tables = run_dir / "tables"
    accuracy, selection = read_table(tables, TABLES.clean_accuracy), run_dir / "selection.csv"
    lines = []
    if selection.is_file():
        chosen = pd.read_csv(selection, keep_default_na=False)
        if (chosen.label >= 0).all() and accuracy is not None:

            lines.append(f"The run attacks {len(chosen)} labelled images that every model classifies correctly, one "
                         "per stratum of the class order (a seeded, class-stratified choice, `ama.inputs.protocol`); fooled "
                         "means the 8-bit image's top-1 is not the true label. Clean accuracy on the labelled set: "
                         + "; ".join(f"{r.model} top-1 {pct(r.top1)} ({pct(r.top1_low)} to {pct(r.top1_high)}), top-5 "
                                     f"{pct(r.top5)} of {r.n_images} images" for r in accuracy.itertuples()) + ".")
            published = {m: published_top1(m) for m in accuracy.model}
            if any(v is not None for v in published.values()):
                lines.append("These accuracies are well above the published ImageNet validation top-1 ("
                             + ", ".join(f"{m} {v:.1f}%" for m, v in published.items() if v is not None)
                             + "), so the images are likely training images or easy picks; the attack's and the "
                               "receptive fields' questions do not depend on it.")
        else:
            lines.append(f"The run's {len(chosen)} images carry no labels: fooled means the prediction changed, and "
                         "no accuracy is measured.")
    conf = read_table(tables, TABLES.attack_by_confidence)
    if conf is not None and not conf.empty:
        e = conf.e.min()
        parts = [f"{r.tercile} ({r.conf_min:.2f} to {r.conf_max:.2f}): {pct(r.fooling_rate)} ({pct(r.low)} to "
                 f"{pct(r.high)}, {r.n_images} images)" for r in conf[conf.e == e].itertuples()]
        lines.append(f"The reference attack's fooling rate at e = {e} by tercile of the clean confidence: "
                     + "; ".join(parts) + ".")
    seeds = read_table(tables, TABLES.attack_seed_spread)
    if seeds is not None and not seeds.empty:
        lines.append("Across seeds (the start noise): " + "; ".join(
            f"{r.model} {r.optimizer} e = {r.e}: fooling {pct(r.fooling_rate)} on average over {r.n_seeds} seeds "
            f"(from {pct(r.fooling_min)} to {pct(r.fooling_max)}), CAM cosine {r.cam_cosine:.2f} (sd "
            f"{r.cam_cosine_sd:.3f})" for r in seeds.itertuples()) + ".")
    if not lines:
        return None
    return Section("The images", "\n\n".join(lines), [], accuracy.round(3) if accuracy is not None else None,
                   TABLES.clean_accuracy)


SECTIONS = (section_images, section_across_models, section_attack_strength, section_ingredients,
            section_confidence)


def section_studies(run_dir: Path) -> list[Section]:
    """A section per study of notebook 05 that this run computed (:func:`ama.studies.registry.studies`): its question,
    the report's lines it writes of itself and its figures; then one naming the studies this run did not compute."""
    out, missing = [], []
    for study in studies().values():
        lines = study.section(run_dir) if study.section is not None else []
        if lines:
            figs = existing_figures(run_dir / "figures", *(getattr(FIGURES, f.name) for f in study.figures))
            out.append(Section(study.question, "\n".join(lines).strip(), figs))
        elif not study.always:
            missing.append(study.name)
    if missing:
        out.append(Section("Studies not run", "Not computed on this run: " + ", ".join(f"`{m}`" for m in missing)
                           + " (`make study STUDIES=<name>` runs one alone; `STUDIES=all` every one)."))
    return out


FIGURE_LINE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def display_report(run_dir: str | os.PathLike) -> None:
    """In a notebook: ``REPORT.md`` as written, section by section, each figure line shown as the image itself, so
    that the notebook's HTML export is the whole report wherever it is opened (IPython's display)."""
    from IPython.display import Image, Markdown, display

    run_dir = resolve(run_dir)
    text = []

    def flush():
        if "".join(text).strip():
            display(Markdown("\n".join(text)))
        text.clear()

    for line in (run_dir / "REPORT.md").read_text().splitlines():
        figure = FIGURE_LINE.fullmatch(line.strip())
        if figure:
            flush()
            display(Image(filename=str(run_dir / figure[1]), width=720))
        else:
            text.append(line)
    flush()


def _wall(notebook: str, info: dict) -> str:
    """``"03_... 3072.1 s (3016.0 s of it on several processes)"``: a notebook's wall time, its torchrun pre-step
    included."""
    pre = f" ({info['sharded_s']} s of it on several processes)" if info.get("sharded_s") else ""
    return f"{notebook} {info['wall_s']} s{pre}"


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/REPORT.md`` from the run's tables and figures; return its path."""
    run_dir = resolve(run_dir)
    claims = collect_claims(run_dir)
    params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else {}
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    lines = [f"# Report: {run_dir.name}", "",
             "Xia et al., *On the Receptive Field Misalignment in CAM-based Visual Explanations*, "
             "Pattern Recognition Letters 152 (2021). Every sentence below is written from this run's tables; the "
             "run's parameters, device and times are in the appendix at the end.", ""]
    if params.get("fast"):
        lines += ["> **FAST smoke run**: few images, small settings and few attack iterations. It checks that the "
                  "pipeline works; its verdicts do not test the paper's claims. Run `make reproduce` for those.", ""]
    smoke = " (FAST smoke run: a check of the pipeline, not a finding)" if params.get("fast") else ""
    verdicts = verdict_table(run_dir)
    save_table(verdicts, run_dir, TABLES.verdicts)
    adjusted = adjusted_claims(verdicts)
    lines += ["## Summary", "",
              "| claim | by its interval against its bar | by its one-sided tests, Holm-adjusted within the claims' family |",
              "| --- | --- | --- |"]
    lines += [f"| {c.number}. {c.title} | {c.verdict}{smoke} | {adjusted.get(c.number, 'not tested')} |" for c in claims]
    lines += ["", "## Criteria", "", "Claims and the kit's criteria (the paper publishes no thresholds; these are the "
              "kit's):", "", CRITERIA, ""]
    for c in claims:
        lines += [f"## Claim {c.number}: {c.title}", "", f"**Verdict: {c.verdict}{smoke}.** {c.sentence}", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in c.figures] + [""]
        if c.table is not None:
            lines += [f"From `tables/{c.table_name}.csv`:", "", markdown_table(c.table), ""]
    for section in [make(run_dir) for make in SECTIONS] + section_studies(run_dir):
        if section is None:
            continue
        lines += [f"## {section.title}", "", section.sentence, ""]
        lines += [f"![{Path(f).stem}]({f})" for f in section.figures] + [""]
        if section.table is not None:
            lines += [f"From the run's tables ({section.table_name}):", "", markdown_table(section.table), ""]
    if len(verdicts):
        lines += ["## Verdicts and multiplicity", "",
                  f"This report states {len(verdicts)} verdicts at 95%. Each has a one-sided p-value on each side of "
                  "its threshold (exact for a rate and for paired yes/no outcomes; a sign test for a median, a "
                  "t-test for a mean); within each family Holm's method adjusts them, and a verdict holds (does not "
                  "hold) when its adjusted p on that side is below 0.025, the intervals' level. The sentences above "
                  "state each verdict by its interval, unadjusted.", ""]
        lines += multiplicity_lines(verdicts) + ["", f"From `tables/{TABLES.verdicts}.csv`.", ""]
    lines += ["## Appendix: the run", ""]
    if params:
        used = RunParams.from_dict(params).to_dict()  # what the experiments used (FAST: the smoke run's)
        if info.get("device"):
            used["device"] = f"{used['device']} (used: {info['device']})"
        lines += ["| parameter | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in used.items()] + [""]
    if info:
        lines += [f"Device: {info.get('device')}; git commit {info.get('git_commit')}; versions: "
                  + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items() if v) + ".", ""]
        walls = info.get("notebooks", {})
        if walls:
            lines += ["Wall time: " + ", ".join(_wall(k, v) for k, v in walls.items() if v.get("wall_s")) + ".", ""]
    return atomic_write(run_dir / "REPORT.md", "\n".join(lines))
