"""The run report (``REPORT.md``): the claims table, "Does the paper reproduce?", the paper's setting beside the
run's, the criteria, then a section per claim and per question (a sentence, its figures with their captions, a
table for people), the verdicts' multiplicity and an appendix with the run's parameters, device and times. The words
are those of :mod:`ama.report.findings` and the studies (:class:`ama.studies.study.Finding`); the shape is one
readable file, ``templates/report.md.j2`` (Jinja2). Used by ``notebooks/04_report.ipynb``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..artifacts import FIGURES, TABLES
from ..criteria import CRITERIA
from ..figures.charts import attack_across_models_figure
from ..params import RunParams
from ..paths import atomic_write, resolve
from ..stats.rows import original_attack
from ..store.tables import markdown_table, read_table, save_figure, save_table
from ..studies.captions import caption
from ..studies.claims import collect_claims, study_alone
from ..studies.registry import studies
from .findings import SECTIONS, claims_table, reproduce_bullets, setting_table, _n_images
from .verdicts import family_table, verdict_table

__all__ = ["write_report", "display_report", "report_context", "TEMPLATE"]

TEMPLATE = Path(__file__).with_name("templates") / "report.md.j2"
PAPER = ("Xia et al., *On the Receptive Field Misalignment in CAM-based Visual Explanations*, Pattern Recognition "
         "Letters 152 (2021).")


def across_models_figure(run_dir: Path) -> str | None:
    """``figures/attack_across_models.png`` (:func:`ama.figures.charts.attack_across_models_figure`) of the run's
    ``attack_summary`` when it has several models; its path relative to the run folder, None otherwise."""
    df = read_table(run_dir / "tables", TABLES.attack_summary)
    if df is None or df.empty or df.model.nunique() < 2:
        return None
    fig = attack_across_models_figure(original_attack(df))
    save_figure(fig, run_dir, FIGURES.attack_across_models)
    plt.close(fig)
    return f"figures/{FIGURES.attack_across_models}.png"


def _figures(run_dir: Path, names) -> list[dict]:
    """The figures of ``names`` the run drew, each ``{name, path, caption}`` (:func:`ama.studies.captions.caption`:
    what the figure shows on this run, written from its numbers)."""
    out = []
    for name in names:
        if (run_dir / "figures" / f"{name}.png").is_file():
            out.append(dict(name=name, path=f"figures/{name}.png", caption=caption(run_dir, name)))
    return out


def _section(run_dir: Path, title: str, finding, figures, source: str = "") -> dict:
    table = finding.table
    return dict(title=title, sentence=finding.sentence, figures=_figures(run_dir, figures),
                note=getattr(finding, "note", ""),
                table=markdown_table(table) if isinstance(table, pd.DataFrame) and len(table) else "")


def _outcome(claim) -> str:
    """A claim's verdict in a few words: ``"holds"``, or ``"capability: holds; prevalence: inconclusive"``."""
    if claim.outcome is None:
        return "not measured on this run"
    return "; ".join(f"{k}: {v}" for k, v in claim.parts.items()) if claim.parts else str(claim.outcome)


def _wall(notebook: str, info: dict) -> str:
    """``"03_... 3072.1 s (3016.0 s of it on several processes)"``: a notebook's wall time, its torchrun pre-step
    included."""
    pre = f" ({info['sharded_s']} s of it on several processes)" if info.get("sharded_s") else ""
    return f"{notebook} {info['wall_s']} s{pre}"


def report_context(run_dir: Path, verdicts: pd.DataFrame) -> dict:
    """Everything ``templates/report.md.j2`` writes, from the run's tables and files (``run_dir``) and its verdicts
    (``verdicts``: :func:`ama.report.verdicts.verdict_table`, already saved, so that every verdict quoted is
    that table's)."""
    params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else {}
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    fast = bool(params.get("fast"))
    walls = info.get("notebooks", {})
    alone = study_alone(run_dir)  # `make study`: the report states the studies, not the claims
    claims = [] if alone else collect_claims(run_dir)
    sections = []
    for c in claims:
        sections.append(dict(_section(run_dir, f"Claim {c.number}: {c.title}", c, [Path(f).stem for f in c.figures]),
                             sentence=f"**Verdict (Holm): {_outcome(c)}{' (smoke run)' if fast else ''}.** "
                                      f"{c.sentence}"))
    across = across_models_figure(run_dir)
    for title, make in SECTIONS:
        finding = make(run_dir)
        if finding is not None:
            names = [n for n in finding.figures if n != FIGURES.attack_across_models or across]
            sections.append(_section(run_dir, title, finding, names))
    not_run = []
    for study in studies().values():
        finding = study.section(run_dir) if study.section is not None else None
        if finding is not None:
            names = list(finding.figures) or [f.name for f in study.figures]
            sections.append(_section(run_dir, study.question, finding, names))
        elif not study.always:
            not_run.append(f"`{study.name}`")
    used = RunParams.from_dict(params).to_dict() if params else {}
    if info.get("device") and used:
        used["device"] = f"{used['device']} (used: {info['device']})"
    provenance = ""
    if info:
        rows = {"device": info.get("device"), "git commit": info.get("git_commit"),
                "versions": ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items() if v),
                "wall time": ", ".join(_wall(k, v) for k, v in walls.items() if v.get("wall_s"))}
        provenance = "| run | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items() if v)
    return dict(
        run=run_dir.name, paper=PAPER, fast=fast,
        alone=", ".join(f"`{name}`" for name in params.get("studies") or []) if alone else "",
        intro="Every sentence and table below is written from this run's tables; each verdict is the one "
              f"`tables/{TABLES.verdicts}.csv` gives, Holm-adjusted within its family.",
        claims_table="" if alone else markdown_table(claims_table(run_dir, claims, params, fast)),
        reproduce={} if alone else reproduce_bullets(run_dir, claims),
        setting=markdown_table(setting_table(params, _n_images(run_dir))), criteria=markdown_table(pd.DataFrame(
            [line.split(". ", 1) for line in CRITERIA.splitlines()], columns=["claim", "the kit's criterion"])),
        sections=sections, not_run="" if alone else ", ".join(not_run),
        multiplicity=(f"The report states {len(verdicts)} verdicts. Each has a one-sided p-value on each side of its "
                      "threshold (exact for rates and paired yes/no outcomes); Holm's method adjusts them within each "
                      "family, and a verdict holds (does not hold) when its adjusted p on that side is below 0.025. "
                      "The 95% intervals beside the verdicts are not adjusted: where Holm leaves a verdict "
                      "inconclusive, its interval can still exclude the threshold (the column \"changed by Holm\" "
                      "counts them). A paired yes/no interval inverts McNemar's exact test: when every image that "
                      "differs goes one way, its bound on that side equals the estimate. \"(unadjusted)\": a verdict "
                      "in no family."),
        families=markdown_table(family_table(verdicts)) if len(verdicts) else "",
        parameters=("The run's parameters (`params.json`):\n\n```\n" + "\n".join(f"{k} = {v}" for k, v in used.items())
                    + "\n```") if used else "", provenance=provenance)


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


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/REPORT.md`` (and ``tables/verdicts.csv``, first) from the run's tables and figures through
    ``templates/report.md.j2``; return its path."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    run_dir = resolve(run_dir)
    verdicts = verdict_table(run_dir)
    save_table(verdicts, run_dir, TABLES.verdicts)
    env = Environment(loader=FileSystemLoader(str(TEMPLATE.parent)), undefined=StrictUndefined, keep_trailing_newline=True,
                      autoescape=False)
    text = env.get_template(TEMPLATE.name).render(**report_context(run_dir, verdicts))
    return atomic_write(run_dir / "REPORT.md", re.sub(r"\n{3,}", "\n\n", text))
