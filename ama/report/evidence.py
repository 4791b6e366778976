"""The documents' generated blocks: what README.md and ``docs/`` quote of the committed references, written from
their tables by the kit's own sentences, so that no result is typed by hand. ``tools/update_generated_docs.py`` writes
every block of :data:`BLOCKS`; ``tests/test_readme.py`` fails while a page's block differs from what it would write.

A block lies between ``<!-- marker: start -->`` and ``<!-- marker: end -->`` on its page.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..artifacts import TABLES
from ..attack import optimizers
from ..params import RunParams
from ..paths import ROOT
from ..stats.intervals import Estimate
from ..stats.rows import eight_bit
from ..store.tables import read_table
from ..studies.ablation import ingredient_lines
from ..studies.claims import collect_claims, glance_runs, glance_table, reference_runs
from ..studies.padding_study import padding_summary
from ..studies.registry import studies
from .markdown import section_confidence, section_images, section_ingredients

REFERENCE = ROOT / "results" / "reference"
EVIDENCE_PROFILE, MODELS_PROFILE = "imagenet", "models"
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
    """Markdown paragraphs of a reference's report (``run_dir``) that a page quotes: each claim's verdict and sentence
    (its controls included; claim 3's table), the images, the confidence fit, the ingredient study's finding, the
    studies' own sentences (:attr:`ama.studies.study.Study.section`; the figures and the tables stay in the report)."""
    run_dir = Path(run_dir)
    lines = [f"Notebooks (`run.json`, code {json.loads((run_dir / 'run.json').read_text())['git_commit'][:7]}): "
             f"{wall_times(run_dir)}.", ""]
    for c in collect_claims(run_dir):
        lines += [f"**Claim {c.number}: {c.title}** — {c.verdict}. {c.sentence}", ""]
        if c.number == 3 and c.table is not None:  # the joint event per optimiser and e, the random frame beside
            lines += [f"`tables/{c.table_name}.csv`:", "", c.table.to_markdown(index=False), ""]
    for make in (section_images, section_confidence, section_ingredients):
        section = make(run_dir)
        if section is not None:
            text = section.sentence.split("\n```")[0].strip()  # the ingredient study's listing is its own block
            lines += [f"**{section.title}.**", "", text, ""]
    for study in studies().values():  # each study's sentences; its tables and figures stay in the report
        text = [line for line in (study.section(run_dir) if study.section else []) if not line.startswith(("|", "!["))]
        if "".join(text).strip():
            body = re.sub(r"\n{3,}", "\n\n", "\n".join(text).strip())  # one blank line between paragraphs
            lines += [f"**{study.question}** (notebook 05, `{study.name}`).", "", body, ""]
    return lines[:-1]


def optimizer_table(run_dir: Path) -> str:
    """Markdown: per optimiser of :data:`COMPARED` and ``e`` the fooling rate (exact 95% interval) / the CAM cosine
    (BCa) of the 8-bit images at the run's budget, and the strongest minus the reference paired per image (Newcombe's
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
    ("README.md", "results-at-a-glance"): lambda: glance_table(glance_runs()),
    ("docs/EVIDENCE.md", "reference-claims"): lambda: glance_table(reference_runs()),
    ("docs/EVIDENCE.md", "evidence-run"): lambda: "\n".join(evidence_lines(profile_reference(EVIDENCE_PROFILE))),
    ("docs/EVIDENCE.md", "padding-variants"): lambda: "\n".join(
        f"- {line}" for line in padding_summary(profile_reference(MODELS_PROFILE))),
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

