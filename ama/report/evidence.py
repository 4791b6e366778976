"""The documents' generated blocks: what README.md and ``docs/`` quote of the committed references, written from
their tables by the kit's own sentences, so that no result is typed by hand. ``tools/update_generated_docs.py`` writes
every block of :data:`BLOCKS`; ``tests/test_readme.py`` fails while a page's block differs from what it would write.

A block lies between ``<!-- marker: start -->`` and ``<!-- marker: end -->`` on its page.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import TABLES
from ..attack import optimizers
from ..params import RunParams
from ..paths import ROOT
from ..stats.intervals import Estimate
from ..stats.rows import eight_bit
from ..store.tables import read_table
from ..store.tables import markdown_table
from ..studies.ablation import ingredient_lines
from ..studies.claims import collect_claims, glance_table, reference_runs
from ..studies.registry import studies
from ..studies.location import location_sentence
from .findings import SECTIONS, across_models_finding, claims_table, reproduce_bullets

REFERENCE = ROOT / "results" / "reference"
EVIDENCE_PROFILE, MODELS_PROFILE, LOCATION_PROFILE = "imagenet", "models", "location"
COMPARED = (optimizers.ORIGINAL, optimizers.STRONGEST)  # the optimiser table: the reference, the default strongest


def profile_reference(profile: str) -> Path:
    """The committed reference of ``profile`` (a name of :data:`ama.params.PROFILES`)."""
    return REFERENCE / RunParams.from_strings(profile).run_name()


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60} h {m % 60} min {s} s" if m >= 60 else f"{m} min {s} s" if m else f"{s} s"


def wall_times(run_dir: Path) -> str:
    """``"01_occlusion 5 min 17 s, ..., 04_report 22 s (together 1 h 10 min 3 s)"``: each notebook's wall time from
    ``run.json`` (its torchrun pre-step included; the image selection before them is not recorded)."""
    notebooks = json.loads((Path(run_dir) / "run.json").read_text())["notebooks"]
    times = {k: v["wall_s"] for k, v in notebooks.items() if v.get("wall_s")}
    return (", ".join(f"{k} {_minutes(v)}" for k, v in times.items())
            + f" (together {_minutes(sum(times.values()))})")


def evidence_lines(run_dir: Path) -> list[str]:
    """What a page quotes of a reference's report (``run_dir``): its notebooks' times, the claims table, "Does the
    paper reproduce?" and each section's and study's sentence (:mod:`ama.report.findings`; the figures and tables
    stay in the report)."""
    run_dir = Path(run_dir)
    params = json.loads((run_dir / "params.json").read_text())
    claims = collect_claims(run_dir)
    lines = [f"Notebooks (`run.json`, code {json.loads((run_dir / 'run.json').read_text())['git_commit'][:7]}): "
             f"{wall_times(run_dir)}.", "", markdown_table(claims_table(run_dir, claims, params)), ""]
    for number, bullets in reproduce_bullets(run_dir, claims).items():
        lines += [f"**Claim {number}.**", ""] + [f"- {b}" for b in bullets] + [""]
    for title, make in SECTIONS:
        finding = make(run_dir)
        if finding is not None:
            lines += [f"**{title}** {finding.sentence}", ""]
    for study in studies().values():
        finding = study.section(run_dir) if study.section else None
        if finding is not None:
            lines += [f"**{study.question}** (`{study.name}`) {finding.sentence}", ""]
    return lines[:-1]


def headline_lines(run_dir: Path) -> list[str]:
    """The README's first screen: per claim its answer on the reference ``run_dir`` and the first reason beside it
    (:func:`ama.report.findings.reproduce_bullets`): the answer and its first :data:`WHY` reasons."""
    claims = collect_claims(run_dir)
    lines, reasons = [], reproduce_bullets(Path(run_dir), claims)
    for c in claims:
        bullets = reasons[c.number]
        if c.number == 3 and location_sentence(Path(run_dir)) is None:  # the location control runs alone
            placement = location_sentence(profile_reference(LOCATION_PROFILE))
            if placement:
                bullets.insert(1, placement[:-2] + "; the location study, a run of its own: "
                                   "`make study PROFILE=location`).")
        lines.append(f"- **Claim {c.number}, {SHORT_TITLES[c.number]}.** {bullets[0]}")
        lines += [f"  - {b}" for b in bullets[1:1 + WHY[c.number]]]
    return lines


WHY = {1: 1, 2: 1, 3: 2}  # the reasons the README gives beside each claim's answer (its first bullets after the answer)
SHORT_TITLES = {1: "the two receptive fields are misaligned", 2: "occlusion outside the IRF moves the cell",
                3: "a 1-pixel frame changes the map completely and the prediction"}


def models_block(run_dir: Path) -> str:
    """docs/EVIDENCE.md's block on the models run ``run_dir``: its notebooks' times, the report's *Across models*
    table (each model's claims) and the ``across_models`` study's paired comparisons, each with its sentence."""
    run_dir, parts = Path(run_dir), []
    for finding in (across_models_finding(run_dir), studies()["across_models"].section(run_dir)):
        if finding is not None:
            parts += [finding.sentence, markdown_table(finding.table)]
    return "\n\n".join([f"Notebooks (`run.json`): {wall_times(run_dir)}."] + parts) if parts else ""


def study_block(name: str) -> str:
    """docs/EVIDENCE.md's block on the study ``name`` run alone on the images its power plan asks: its finding on the
    committed reference of the profile named after it (its sentence and its table), with the run's wall times."""
    run_dir = profile_reference(name)
    finding = studies()[name].section(run_dir)
    if finding is None:
        return ""
    return (f"Notebooks (`run.json`): {wall_times(run_dir)}.\n\n" + finding.sentence + "\n\n"
            + markdown_table(finding.table))


def optimizer_table(run_dir: Path) -> str:
    """Markdown: per optimiser of :data:`COMPARED` and ``e`` the fooling rate (exact 95% interval) / the CAM cosine
    (t) of the 8-bit images at the run's budget, and the strongest minus the reference paired per image (McNemar's exact
    interval, the discordant images and their exact sign test), from ``attack_ablation``."""
    t = eight_bit(read_table(Path(run_dir) / "tables", TABLES.attack_ablation))
    t = t[(t["mode"] == "flip") & (t.variant == "default") & (t.n_iter == t.n_iter.max()) & t.optimizer.isin(COMPARED)]
    widths = sorted(t.e.unique())
    cell = {}
    for (opt, e), g in t.groupby(["optimizer", "e"]):
        g = g.sort_values("image")
        fooled, cos = Estimate.rate(g.fooled.sum(), len(g)), Estimate.of(g.cam_cosine)
        cell[opt, e] = (f"{100 * fooled.value:.0f}% ({100 * fooled.low:.0f}-{100 * fooled.high:.0f}%) / "
                        f"{cos.value:.2f} ({cos.low:.2f}-{cos.high:.2f})", g.set_index("image").fooled.astype(float))
    strong, ref = COMPARED[1], COMPARED[0]
    rows = [f"| `{opt}`{' (the reference)' if opt == ref else ''} | "
            + " | ".join(cell[opt, e][0] for e in widths) + " |" for opt in COMPARED]
    gains = []
    for e in widths:
        a, b = cell[strong, e][1], cell[ref, e][1]
        d = Estimate.paired(a, b.reindex(a.index))
        gains.append(f"{100 * d.value:+.0f} points ({100 * d.low:+.0f} to {100 * d.high:+.0f}; {d.discordant[0]} vs "
                     f"{d.discordant[1]} images, exact p = {d.p_value:.2g})")
    rows.append(f"| `{strong}` - `{ref}`, fooled, paired per image | " + " | ".join(gains) + " |")
    head = ("| optimiser | " + " | ".join(f"e = {e}" for e in widths) + " |\n| --- |"
            + " --- |" * len(widths))
    return head + "\n" + "\n".join(rows) + f"\n\n{t.image.nunique()} images, {int(t.n_iter.max())} passes per image."


def ingredient_block(run_dir: Path) -> str:
    """The ingredient study's listing (:func:`ama.studies.ablation.ingredient_lines`) in a fenced block."""
    summary = read_table(Path(run_dir) / "tables", TABLES.attack_ingredients_summary)
    return "```\n" + "\n".join(ingredient_lines(summary)) + "\n```"


BLOCKS = {
    ("README.md", "findings"): lambda: "\n".join(headline_lines(profile_reference(EVIDENCE_PROFILE))),
    ("docs/EVIDENCE.md", "reference-claims"): lambda: glance_table(reference_runs()),
    ("docs/EVIDENCE.md", "evidence-run"): lambda: "\n".join(evidence_lines(profile_reference(EVIDENCE_PROFILE))),
    ("docs/EVIDENCE.md", "across-models"): lambda: models_block(profile_reference(MODELS_PROFILE)),
    ("docs/EVIDENCE.md", "location-study"): lambda: study_block(LOCATION_PROFILE),
    ("docs/EVIDENCE.md", "padding-leverage"): lambda: study_block("padding_leverage"),
    ("docs/ATTACK.md", "evidence-optimizers"): lambda: optimizer_table(profile_reference(EVIDENCE_PROFILE)),
    ("docs/ATTACK.md", "evidence-ingredients"): lambda: ingredient_block(profile_reference(EVIDENCE_PROFILE)),
}


def block_of(text: str, marker: str) -> str:
    """What ``text`` holds between ``<!-- marker: start -->`` and ``<!-- marker: end -->``."""
    start, end = f"<!-- {marker}: start -->\n", f"\n<!-- {marker}: end -->"
    if start not in text:
        raise ValueError(f"no '<!-- {marker}: start -->' line; add the block's two marker lines to the page")
    return text.split(start, 1)[1].split(end, 1)[0]


def replace_block(text: str, marker: str, content: str) -> str:
    """``text`` with what lies between ``<!-- marker: start -->`` and ``<!-- marker: end -->`` replaced by
    ``content``."""
    start, end = f"<!-- {marker}: start -->\n", f"\n<!-- {marker}: end -->"
    block_of(text, marker)
    head, rest = text.split(start, 1)
    return head + start + content + end + rest.split(end, 1)[1]

