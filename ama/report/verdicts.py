"""Every verdict of a run in its family, with Holm's adjustment within the family (``SCIENCE.md`` section 8).

A run states many verdicts at 95%; some would come out "holds" by chance alone. They are grouped in families, one
per question: the paper's three claims (claim 1 per cell kind, claim 3 its two verdicts), claim 1 under each
upsampling, the ingredient study, and each study's question (:func:`ama.studies.study.family_of`: declared by the
study, so a question's family, and with it its verdicts, is the same whatever else the run computed). Each verdict carries a one-sided p-value on each side of its threshold
(:meth:`ama.stats.intervals.Estimate.p_values`: exact for rates and paired outcomes); within a family each side's
p-values are adjusted by Holm's method, and a verdict holds (does not hold) when its adjusted p on that side is below
:data:`ama.stats.intervals.ALPHA`, 0.025 on each side, the intervals' 95% level. :func:`verdict_table` lists them with
the verdict as the run states it (its interval against the threshold), the unadjusted and the adjusted one.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import TABLES
from ..attack.optimizers import ORIGINAL
from ..criteria import JOINT_RATE, KEEP_IRF_CHANGE
from ..stats.intervals import Estimate, holm, p_verdict
from ..stats.rows import original_attack
from ..store.tables import read_table
from ..studies import complete_change
from ..studies.claims import CLAIMS_FAMILY, aligned_null_gaps, claim2_change, combine
from ..studies.registry import studies, verdict_tables
from ..studies.study import Verdicts

CLAIMS = CLAIMS_FAMILY
FAMILIES = {CLAIMS: "the paper's three claims (claim 1 per cell kind; claim 3: capability and prevalence)",
            "upsampling": "claim 1 under each upsampling, against the aligned null (centre cells)",
            "ingredients": "which ingredient makes the attack strong"}
"""What the families of the claims' notebooks ask; a study's family is its name (or its table's ``Verdicts.family``)
and asks its question."""


# The verdict tables of the claims' notebooks, each with its family; every study declares its own
# (:func:`ama.studies.registry.verdict_tables`), read between these two in the registry's order.
CLAIM_CONTROLS = {TABLES.misalignment_upsampling_verdicts: ("upsampling", Verdicts(
    "null_gap", "gap_low", "gap_high", 0.0,
    lambda r: f"claim 1 under {r.upsampling} upsampling: beyond the aligned null, centre cells"))}
ATTACK_STUDIES = {TABLES.attack_ingredients_summary: ("ingredients", Verdicts(
    "gain", "gain_low", "gain_high", 0.0, lambda r: f"{r.variant} fools more than the reference, e = {r.e}"))}


def family_tables() -> dict[str, tuple[str, Verdicts]]:
    """``{table: (family, Verdicts)}``: every table whose rows carry a verdict, in the order the verdicts are listed."""
    return {**CLAIM_CONTROLS, **verdict_tables(), **ATTACK_STUDIES}


COLUMNS = ["family", "verdict_of", "model", "table", "value", "low", "high", "threshold", "verdict", "p_holds",
           "p_fails", "p_verdict", "p_holds_holm", "p_fails_holm", "holm_verdict", "changed"]


def _row(family: str, name: str, table: str, est: Estimate, threshold: float, model: str = "all") -> dict:
    return dict(family=family, verdict_of=name, model=model, table=table, value=est.value, low=est.low,
                high=est.high, threshold=threshold, verdict=est.verdict(threshold), **est.p_columns(threshold))


def claim_rows(run_dir: Path) -> list[dict]:
    """The claims' family: claim 1 (per cell kind), claim 2 and claim 3's two verdicts, capability and prevalence
    (over the run's models), as the report states them (:mod:`ama.studies.claims`). The kit's earlier bar of claim 3 is
    stated beside them in the report, not in a family."""
    tables = Path(run_dir) / "tables"
    mis, keep = read_table(tables, TABLES.misalignment), read_table(tables, TABLES.occlusion_keep_irf)
    metrics = read_table(tables, TABLES.attack_metrics)
    rows = []
    if mis is not None and not mis.empty:
        for kind, gap in aligned_null_gaps(mis).items():
            rows.append(_row(CLAIMS, f"claim 1: ERF mass outside the IRF beyond the aligned null, {kind} cells",
                             TABLES.misalignment, gap, 0.0))
    if keep is not None and not keep.empty:
        rows.append(_row(CLAIMS, "claim 2: the keep-IRF median change of a cell", TABLES.occlusion_keep_irf,
                         claim2_change(keep)[0], KEEP_IRF_CHANGE))
    joint = complete_change.from_tables(tables)
    if joint is not None:
        e = int(original_attack(metrics).e.min())
        rows.append(_row(CLAIMS, f"claim 3 capability: fooled and completely changed, attack minus random frame, "
                         f"e = {e}", TABLES.attack_complete_change, complete_change.capability(joint, e, ORIGINAL), 0.0))
        rows.append(_row(CLAIMS, f"claim 3 prevalence: fooled and completely changed, e = {e}",
                         TABLES.attack_complete_change, complete_change.prevalence(joint, e, ORIGINAL), JOINT_RATE))
    return rows


def table_rows(run_dir: Path) -> list[dict]:
    """The controls' and the beyond-the-paper families: every row with a verdict and p-values of the tables of
    :func:`family_tables` the run wrote."""
    rows = []
    for table, (family, spec) in family_tables().items():
        df = read_table(Path(run_dir) / "tables", table)
        if df is None or "p_holds" not in df:
            continue
        for r in df.dropna(subset=["p_holds"]).itertuples():
            rows.append(dict(family=family, verdict_of=spec.name(r), model=getattr(r, "model", "all"),
                             table=table, value=getattr(r, spec.value), low=getattr(r, spec.low),
                             high=getattr(r, spec.high), threshold=spec.threshold, verdict=r.verdict,
                             p_holds=r.p_holds, p_fails=r.p_fails))
    return rows


def verdict_table(run_dir: str | Path) -> pd.DataFrame:
    """Every verdict of the run (:func:`claim_rows`, :func:`table_rows`): ``family``, ``verdict_of``, ``model``,
    the ``table`` it is read from, ``value`` with its interval (``low``, ``high``), the ``threshold``, the ``verdict``
    as the run states it (interval against threshold), the one-sided ``p_holds`` / ``p_fails`` and their verdict
    (``p_verdict``), the same adjusted by Holm within the family (``p_holds_holm``, ``p_fails_holm``,
    ``holm_verdict``) and ``changed`` (the adjustment changed the verdict)."""
    rows = claim_rows(Path(run_dir)) + table_rows(Path(run_dir))
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    df["p_verdict"] = [p_verdict(h, f) for h, f in zip(df.p_holds, df.p_fails)]
    for side in ("p_holds", "p_fails"):
        df[f"{side}_holm"] = df.groupby("family", sort=False)[side].transform(lambda p: holm(p.to_numpy()))
    df["holm_verdict"] = [p_verdict(h, f) for h, f in zip(df.p_holds_holm, df.p_fails_holm)]
    df["changed"] = df.holm_verdict != df.p_verdict
    return df[COLUMNS]


def adjusted_claims(verdicts: pd.DataFrame) -> dict[int, str]:
    """``{claim number: verdict}`` after Holm within the claims' family, from the rows of :func:`verdict_table`
    (``verdicts``): the rows of one claim (claim 1's cell kinds) must all hold; a claim with named verdicts (``"claim
    3 capability: ..."``) states each: ``"capability: holds; prevalence: does not hold"``."""
    claims = verdicts[verdicts.family == CLAIMS]
    by: dict[int, dict[str, list]] = {}
    for name, v in zip(claims.verdict_of, claims.holm_verdict):
        words = name.split(":")[0].split()
        by.setdefault(int(words[1]), {}).setdefault(" ".join(words[2:]), []).append(v)
    return {k: combine(*parts[""]) if list(parts) == [""] else
            "; ".join(f"{part}: {combine(*v)}" for part, v in parts.items()) for k, parts in by.items()}




def family_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The report's account of multiplicity, a row per family (in the order the verdicts are listed): what it asks,
    how many verdicts, their outcomes after Holm within the family and how many the adjustment changed;
    ``verdicts``: rows of :func:`verdict_table`."""
    asks = {**{s.name: s.question for s in studies().values()}, **FAMILIES}
    rows = []
    for family, g in verdicts.groupby("family", sort=False):
        counts = g.holm_verdict.value_counts()
        rows.append({"family": family, "asks": asks.get(family, asks.get(family.split(":")[0], "")),
                     "how many": len(g), "hold": int(counts.get("holds", 0)),
                     "do not hold": int(counts.get("does not hold", 0)),
                     "inconclusive": int(counts.get("inconclusive", 0)), "changed by Holm": int(g.changed.sum())})
    return pd.DataFrame(rows)
