"""One truth: every claim's verdict that the README, docs/ and a reference's REPORT.md quote is the one that
reference's ``tables/verdicts.csv`` gives (Holm-adjusted within the claims' family); and the reports keep the
readability limits of issue 41."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ama.paths import ROOT
from ama.report.evidence import EVIDENCE_PROFILE, LOCATION_PROFILE, profile_reference
from ama.report.findings import ANSWER
from ama.report.readability import LIMITS, OTHER_LIMITS, check
from ama.store.tables import read_table
from ama.studies.claims import deciding_claims, study_alone

REFERENCES = sorted(p for p in (ROOT / "results" / "reference").iterdir() if (p / "REPORT.md").is_file())
DEFAULT = ROOT / "results" / "reference" / "lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0"


def decided(run: Path) -> dict:
    return deciding_claims(read_table(run / "tables", "verdicts"))


def quoted(report: str) -> dict[int, str]:
    """The verdict column of a REPORT.md's claims table, per claim."""
    out = {}
    for line in report.split("## The claims", 1)[1].split("## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.match(r"^\d\. ", cells[0]):
            out[int(cells[0][0])] = re.sub(r" \(p [<=] [0-9.e-]+\)", "", cells[-2].replace(" (smoke run)", ""))
    return out


def stated(verdict) -> str:
    """How the claims table writes a claim's verdict (``verdict``: an outcome, or claim 3's parts)."""
    if isinstance(verdict, dict):
        return "; ".join(f"{k} **{v}**" for k, v in verdict.items())
    return f"**{verdict}**"


@pytest.mark.parametrize("run", REFERENCES, ids=lambda p: p.name[:40])
def test_each_reports_claims_table_quotes_its_verdicts_csv(run):
    if study_alone(run):  # a study run alone states no claim: no claims table, no claim verdict
        assert "## The claims" not in (run / "REPORT.md").read_text()
        assert "claims" not in set(read_table(run / "tables", "verdicts").family)
        return
    got, want = quoted((run / "REPORT.md").read_text()), decided(run)
    assert got == {k: stated(want[k]) for k in (1, 2, 3)}


@pytest.mark.parametrize("run", REFERENCES, ids=lambda p: p.name[:40])
def test_each_report_is_readable(run):
    text = (run / "REPORT.md").read_text()
    assert check(text, LIMITS if run == DEFAULT else OTHER_LIMITS) == []
    assert not re.search(r"\bnan\b", text) and "p = 0 " not in text and "p = 0)" not in text


def test_a_questions_family_is_the_same_whatever_else_ran():
    """Holm adjusts within a family of one question, declared by its study: the default run (one study), the
    evidence run (every study but the location control) and the location study run alone hold the same verdicts in
    each family two of them state."""
    default, evidence, location = (read_table(run / "tables", "verdicts") for run in (
        DEFAULT, profile_reference(EVIDENCE_PROFILE), profile_reference(LOCATION_PROFILE)))
    assert {"claims", "upsampling", "ingredients"} <= set(default.family) & set(evidence.family)
    for a, b in ((default, evidence), (default, location), (evidence, location)):
        both = set(a.verdict_of) & set(b.verdict_of)
        assert all(set(a[a.verdict_of == v].family) == set(b[b.verdict_of == v].family)
                   for v in both)  # a verdict is in the same family in both
        for family in set(a.family) & set(b.family):
            assert set(a[a.family == family].verdict_of) == set(b[b.family == family].verdict_of), family
    assert "location" in set(default.family) & set(location.family)


def test_the_readmes_answers_are_the_evidence_runs_verdicts():
    want = decided(profile_reference(EVIDENCE_PROFILE))
    block = (ROOT / "README.md").read_text().split("<!-- findings: start -->")[1].split("<!-- findings: end -->")[0]
    for n in (1, 2, 3):
        line = next(x for x in block.splitlines() if x.startswith(f"- **Claim {n},"))
        v = want[n]
        if isinstance(v, dict):
            assert all(f"{k} {o}" in line for k, o in v.items()), line
        else:
            assert f"**{ANSWER[v]}**" in line, line


def test_the_evidence_pages_table_quotes_each_references_verdicts():
    from ama.studies.claims import reference_runs

    text = (ROOT / "docs" / "EVIDENCE.md").read_text()
    table = text.split("<!-- reference-claims: start -->")[1].split("<!-- reference-claims: end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
            if re.match(r"^\| \d\. ", line)]
    for column, run in enumerate(reference_runs().values(), start=1):
        want = decided(run)
        assert rows[0][column].endswith(f": {want[1]}") and rows[1][column].endswith(f": {want[2]}")
        assert f"capability {want[3]['capability']}, prevalence {want[3]['prevalence']}" in rows[2][column]


@pytest.mark.parametrize("run", sorted(p for p in (ROOT / "results" / "reference").iterdir()
                                      if next((p / "tables").glob("verdicts.csv*"), None)), ids=lambda p: p.name[:40])
def test_every_verdicts_interval_agrees_with_its_test(run):
    """Issue 42, item 6: in every committed verdicts.csv each row's interval, read against its threshold, gives the
    verdict its unadjusted test gives (the interval inverts the test that decides)."""
    from ama.stats.intervals import verdict

    rows = read_table(run / "tables", "verdicts")
    by_interval = [verdict((r.low, r.high), r.threshold) for r in rows.itertuples()]
    disagree = rows[[a != b for a, b in zip(by_interval, rows.p_verdict)]]
    assert disagree.empty, disagree[["verdict_of", "value", "low", "high", "p_holds", "p_fails"]].to_string()


@pytest.mark.parametrize("run", REFERENCES, ids=lambda p: p.name[:40])
def test_each_report_shows_every_figure_its_reference_holds(run):
    """A REPORT.md written again from a folder without its figures would link none: each reference's report links
    exactly the figures it holds, and names its own run."""
    linked = set(re.findall(r"\]\(figures/([^)]+\.png)\)", (run / "REPORT.md").read_text()))
    assert linked == {p.name for p in (run / "figures").glob("*.png")}
    assert f"Run `{run.name}`" in (run / "REPORT.md").read_text().splitlines()[0]
