"""A run against its reference: compare tables, find the reference of a run's parameters, save a new one.

``results/reference/<run>/`` holds the tables (with their lineage, :mod:`ama.store.lineage`), ``params.json``,
``run.json``, ``REPORT.md`` and the report's figures of a finished run. A run matches its reference when every
reference table is present with the same columns and the same rows (matched by their :data:`IDENTITY_COLUMNS`), when
every claim's verdict is the same, and when each table's numbers agree as its lineage allows:

* a **deterministic** table (no attack in its lineage) number by number, within ``DEFAULT_ATOL + DEFAULT_RTOL x
  |reference|``, and every other value exactly;
* a **stochastic** table (computed from an attack's iterates or its saved images) as a random variable: an attack's
  ``sign()`` steps and ``argmax`` flip on float rounding, which differs between CPUs, thread counts and batch layouts,
  so such a table is one draw. Its rows are grouped into *units*, one per attacked image and attack setting (the
  identity columns but those of :data:`MEASUREMENT_COLUMNS`, which say how one attack's result was measured); for
  every number the per-unit change from the reference (differences within the deterministic tolerance count as
  none) is put to an exact two-sided sign test (``scipy.stats.binomtest``): a rerun's draw is as likely to come out
  above the reference's as below it. The p-values of one check form one family, adjusted by Holm
  (``statsmodels``); a number differs when its adjusted p is below :data:`ALPHA`. ``verdict`` columns must be equal.
  A sign test sees only a direction, so a yes/no (True/False) column is also bounded in how many units change at
  all: with ``k`` of ``n`` units changed (a unit changed when any of its rows' answer differs), the exact binomial
  p-value ``P(K >= k)``, ``K ~ Binomial(n, CHANGE_RATE)`` (``binomtest(k, n, CHANGE_RATE, alternative="greater")``),
  joins the same Holm family. :data:`CHANGE_RATE` bounds the share of units whose answer a genuine rerun changes
  (calibrated on reruns in another layout, batch size and thread count, ``docs/MATCHING.md``); if each unit changes
  independently with probability ``q <= CHANGE_RATE``, ``K`` is no larger in distribution than that binomial, so the
  p-value is valid. Scattered corruption (answers flipped both ways) is caught here.

So a genuine rerun is called different with probability at most :data:`ALPHA` per check, while a change that moves
a number the same way in many units (fewer iterations, no CAM term, another kernel) is caught. A table with few units
may not reach :data:`ALPHA` on its own (eight units: a sign test's p >= 0.0078 before adjustment, a yes/no bound's
p >= ``CHANGE_RATE ** 8`` = 1.5e-5): its line says so when none of its tests can.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from ..artifacts import TABLES
from ..params import RunParams
from ..paths import resolve, shown
from ..stats.intervals import FAILS, HOLDS
from ..store import lineage
from ..store.tables import compress_tables, save_reference_png, table_files, table_name
from ..studies import claims
from ..studies.registry import study_keys

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
SCALE_TOL = 1e-3  # of a column's largest magnitude: what float rounding moves between thread counts and batch layouts
                  # (measured: a difference of two CAM values by 1.5e-5, a top-q IoU by one pixel's share, 1.8e-4)
ALPHA = 0.01  # a genuine rerun fails a check with at most this probability (Holm over the check's tests and bounds)
CHANGE_RATE = 0.25  # at most this share of a yes/no column's units changes in a genuine rerun (docs/MATCHING.md)

# Columns that say which unit a row is about (never a result): rows are matched on these.
_STUDY_KEYS, _STUDY_MEASURED = study_keys()  # what each study declares of its own tables (:mod:`ama.studies.study`)
IDENTITY_COLUMNS = ("model", "image", "file", "experiment", "setting", "mode", "optimizer", "variant", "restarts",
                    "cam_loss", "label_loss", "select", "e", "n_iter", "seed", "lamb", "mask", "target", "method",
                    "upsampling", "fill", "cell", "i", "j", "cell_kind", "patch", "top", "left", "iteration", "quantized",
                    "measure")
IDENTITY_COLUMNS += tuple(k for k in _STUDY_KEYS if k not in IDENTITY_COLUMNS)
# Identity columns that say how one attacked image was measured (8-bit or float, which explanation, which cell,
# which pass), not which attack: a stochastic table's rows that differ only in these form one unit.
MEASUREMENT_COLUMNS = ("quantized", "method", "upsampling", "iteration", "cell", "i", "j", "cell_kind", "measure",
                       "fill", "patch", "top", "left")
MEASUREMENT_COLUMNS += tuple(k for k in _STUDY_MEASURED if k not in MEASUREMENT_COLUMNS)


@dataclass
class SignTest:
    """One number of a stochastic table: units that rose / fell against the reference, the means, the p-value."""

    column: str
    up: int
    down: int
    units: int
    run_mean: float
    ref_mean: float
    p: float
    p_adjusted: float = float("nan")

    @property
    def best_p(self) -> float:
        """The smallest p-value its units allow (all moved one way)."""
        return binomtest(self.units, self.units, 0.5).pvalue if self.units else 1.0

    def line(self, table: str) -> str:
        return (f"{table}: {self.column!r} moved in {self.up + self.down} of {self.units} units ({self.up} up, "
                f"{self.down} down; mean {self.run_mean:.4g}, reference {self.ref_mean:.4g}): sign test p = "
                f"{self.p:.2g}, Holm-adjusted {self.p_adjusted:.2g} < {ALPHA}")


@dataclass
class ChangeBound:
    """One yes/no column of a stochastic table: how many units changed their answer against the reference and the
    exact binomial p-value of at least that many if each changes with probability :data:`CHANGE_RATE`."""

    column: str
    changed: int
    units: int
    p: float
    p_adjusted: float = float("nan")

    @property
    def best_p(self) -> float:
        """The smallest p-value its units allow (all changed): ``CHANGE_RATE ** units``."""
        return binomtest(self.units, self.units, CHANGE_RATE, alternative="greater").pvalue if self.units else 1.0

    def line(self, table: str) -> str:
        return (f"{table}: yes/no {self.column!r} changed in {self.changed} of {self.units} units (a rerun changes "
                f"at most {CHANGE_RATE:.0%}): binomial p = {self.p:.2g}, Holm-adjusted {self.p_adjusted:.2g} < {ALPHA}")


@dataclass
class TableCheck:
    """One table's comparison: how it was compared (``how``), what differs (``problems``), its sign tests and its
    yes/no columns' change bounds (``bounds``)."""

    name: str
    stochastic: bool
    how: str = ""
    problems: list[str] = field(default_factory=list)
    tests: list[SignTest] = field(default_factory=list)
    bounds: list[ChangeBound] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'DIFF'}  {self.name}: {self.how}"

    def lines(self) -> list[str]:
        """The table's line and, under it, each problem it does not already say (a missing table's is said once)."""
        return [self.line(), *(f"          {p}" for p in self.problems if p != f"{self.name}: {self.how}")]


def compare_tables(run: pd.DataFrame, ref: pd.DataFrame, name: str, stochastic: bool = False,
                   rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> list[str]:
    """Differences between two versions of one table, as readable lines (empty: they match); a ``stochastic``
    table's sign tests are adjusted within the table (:func:`check_tables` adjusts over a whole check). ``run``,
    ``ref``: the run's and the reference's version; ``rtol``, ``atol``: the tolerance of a deterministic table's
    numbers."""
    check = table_check(run, ref, name, stochastic, rtol, atol)
    adjust([check])
    return check.problems


def table_check(run: pd.DataFrame, ref: pd.DataFrame, name: str, stochastic: bool, rtol: float = DEFAULT_RTOL,
                atol: float = DEFAULT_ATOL, sources=(lineage.ATTACK,)) -> TableCheck:
    """Compare one table (see the module docstring); a stochastic table's sign tests are not yet adjusted.
    ``sources``: its lineage's sources (named in ``how``). ``run``, ``ref``: the run's and the reference's version;
    ``stochastic``: compared as statistics (:mod:`ama.store.lineage`); ``rtol``, ``atol``: the tolerance of a
    deterministic table's numbers."""
    check = TableCheck(name, stochastic)
    if list(run.columns) != list(ref.columns):
        missing, extra = sorted(set(ref.columns) - set(run.columns)), sorted(set(run.columns) - set(ref.columns))
        check.problems.append(f"{name}: columns differ (missing {missing}, extra {extra})")
        check.how = "columns differ"
        return check
    if len(run) != len(ref):
        check.problems.append(f"{name}: {len(run)} rows, reference has {len(ref)}")
        check.how = "rows differ"
        return check
    run, ref = (_in_identity_order(df) for df in (run, ref))
    identity = [c for c in ref.columns if c in IDENTITY_COLUMNS]
    boolean = [c for c in ref.columns if pd.api.types.is_bool_dtype(ref[c]) and c not in identity]
    numeric = [c for c in ref.columns if pd.api.types.is_numeric_dtype(ref[c]) and c not in boolean + identity]
    text = [c for c in ref.columns if c not in identity + boolean + numeric]
    exact_set = set(identity) | (set() if stochastic else set(text + boolean))
    exact = [c for c in ref.columns if c in exact_set]
    if stochastic and "verdict" in text:
        _compare_verdicts(run.verdict, ref.verdict, check)
    for c in exact:
        bad = (run[c].astype(str).values != ref[c].astype(str).values) & ~(run[c].isna() & ref[c].isna()).values
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            check.problems.append(f"{name}: column {c!r} differs in {int(bad.sum())} rows (first: row {i}: "
                                  f"{run[c].iloc[i]!r} vs reference {ref[c].iloc[i]!r})")
    if not stochastic:
        for c in numeric:
            a, b = run[c].to_numpy(float), ref[c].to_numpy(float)
            scale = float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 0.0
            close = np.isclose(a, b, rtol=rtol, atol=atol + SCALE_TOL * scale, equal_nan=True)
            if not close.all():
                i = int(np.flatnonzero(~close)[0])
                check.problems.append(f"{name}: column {c!r} differs in {int((~close).sum())} of {len(a)} rows "
                                      f"(first: row {i}: {a[i]:.6g} vs reference {b[i]:.6g}; tolerance {atol} + "
                                      f"{rtol:g} x |ref| + {SCALE_TOL:g} x {scale:.3g}, the column's largest)")
        check.how = (f"deterministic: {len(ref)} rows, {len(numeric)} numbers within {atol} + {rtol:g} x |ref| + "
                     f"{SCALE_TOL:g} x the column's largest, {len(exact)} other columns exactly")
        return check
    units = _units(run, identity)
    for c in numeric + boolean:
        check.tests.append(_sign_test(run[c].to_numpy(float), ref[c].to_numpy(float), units, c, rtol, atol))
    check.bounds = [_change_bound(run[c].to_numpy(float), ref[c].to_numpy(float), units, c) for c in boolean]
    n_units = int(units.max()) + 1 if len(units) else 0
    keys = [c for c in identity if c not in MEASUREMENT_COLUMNS and (c == "image" or ref[c].nunique() > 1)]
    check.how = (f"stochastic (from {' and '.join(sources)}): {len(ref)} rows in {n_units} units "
                 f"({' x '.join(keys) or 'rows'}), {len(check.tests)} numbers by paired sign test"
                 + (f", {len(boolean)} yes/no by changed units (<= {CHANGE_RATE:.0%})" if boolean else "") + check.how)
    return check


def _compare_verdicts(run: pd.Series, ref: pd.Series, check: TableCheck) -> None:
    """A stochastic table's verdicts: one that crosses from holds to does not hold (or back) is a difference; one
    that moves to or from inconclusive is one draw of an interval near its threshold, counted in ``how``."""
    a, b = run.astype(object).where(run.notna(), None), ref.astype(object).where(ref.notna(), None)
    crossed = [(x, y) for x, y in zip(a, b) if {x, y} == {HOLDS, FAILS}]
    moved = sum(x != y for x, y in zip(a, b)) - len(crossed)
    if crossed:
        check.problems.append(f"{check.name}: {len(crossed)} verdict(s) crossed from one side to the other (first: "
                              f"{crossed[0][0]!r}, reference {crossed[0][1]!r})")
    check.how = (f", verdicts by side ({moved} moved to or from inconclusive, near their thresholds)" if moved
                 else ", verdicts by side (all equal)")


def _units(df: pd.DataFrame, identity: list[str]) -> np.ndarray:
    """``(rows,)`` unit index of each row: one unit per value of the non-measurement identity columns; a table without
    an ``image`` column (a summary) has one unit per row."""
    keys = [c for c in identity if c not in MEASUREMENT_COLUMNS]
    if "image" not in keys:
        return np.arange(len(df))
    return df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()


def _sign_test(a: np.ndarray, b: np.ndarray, units: np.ndarray, column: str, rtol: float, atol: float) -> SignTest:
    """The exact sign test of the per-unit mean change ``a - b``; rows where either is NaN are left out, changes
    within the deterministic tolerance count as none."""
    d = np.where(np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True), 0.0, a - b)
    both = np.isfinite(a) & np.isfinite(b)
    per_unit = pd.Series(d[both]).groupby(units[both]).mean().to_numpy() if both.any() else np.array([])
    up, down = int((per_unit > 0).sum()), int((per_unit < 0).sum())
    p = binomtest(up, up + down, 0.5).pvalue if up + down else 1.0
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    return SignTest(column, up, down, len(per_unit), mean(a), mean(b), float(p))


def _change_bound(a: np.ndarray, b: np.ndarray, units: np.ndarray, column: str) -> ChangeBound:
    """How many units of a yes/no column changed (any row whose answer differs; rows where either is missing are left
    out) and the exact one-sided binomial p-value ``P(K >= changed)``, ``K ~ Binomial(units, CHANGE_RATE)``."""
    both = np.isfinite(a) & np.isfinite(b)
    changed_rows = pd.Series(a[both] != b[both]).groupby(units[both]).any()
    changed, n = int(changed_rows.sum()), len(changed_rows)
    p = binomtest(changed, n, CHANGE_RATE, alternative="greater").pvalue if n else 1.0
    return ChangeBound(column, changed, n, float(p))


def adjust(checks: list[TableCheck]) -> None:
    """Holm-adjust the sign tests and change bounds of ``checks`` as one family and add a problem for each adjusted p
    below :data:`ALPHA`; each stochastic table's ``how`` gets its smallest adjusted p."""
    tests = [t for c in checks for t in (*c.tests, *c.bounds)]
    if not tests:
        return
    reject, adjusted, _, _ = multipletests([t.p for t in tests], alpha=ALPHA, method="holm")
    for t, r, q in zip(tests, reject, adjusted):
        t.p_adjusted = float(q)
    for check in checks:
        if not check.tests:
            continue
        both = (*check.tests, *check.bounds)
        failed = [t for t in both if t.p_adjusted < ALPHA]
        check.problems += [t.line(check.name) for t in failed]
        smallest = min(both, key=lambda t: t.p_adjusted)
        best_possible = min(t.best_p for t in both)
        check.how += (f"; smallest adjusted p {smallest.p_adjusted:.2g} ({smallest.column})"
                      + (f"; too few units to differ alone (p >= {best_possible:.2g})" if best_possible >= ALPHA
                         else ""))


def _in_identity_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows ordered (stably) by its :data:`IDENTITY_COLUMNS`, so that two versions of a table line up
    whatever order they were written in (a sharded run, a reordered experiment)."""
    columns = [c for c in IDENTITY_COLUMNS if c in df.columns]
    if not columns:
        return df.reset_index(drop=True)
    return df.sort_values(columns, kind="stable").reset_index(drop=True)


def find_reference(run_params: dict, reference: str | Path) -> Path | None:
    """The reference folder for a run's parameters: ``reference`` itself when it holds a ``run.json`` (one reference),
    else the sub-folder ``reference/<run>/`` whose ``run.json`` has the same parameters (the device aside).
    ``run_params``: the run's ``params.json``."""
    reference = resolve(reference)
    if (reference / "run.json").is_file():
        return reference
    wanted = _comparable(run_params)
    for folder in sorted(p.parent for p in reference.glob("*/run.json")):
        if _comparable(json.loads((folder / "run.json").read_text())["params"]) == wanted:
            return folder
    return None


def _comparable(params: dict) -> dict:
    """Parameters as compared between runs: normalised, the device aside (an older layout is kept as it is)."""
    try:
        params = RunParams.from_dict(params).to_dict()
    except ValueError:
        pass
    return {k: v for k, v in params.items() if k != "device"}


def check_run(run_dir: str | os.PathLike, reference: str | os.PathLike) -> tuple[bool, list[str]]:
    """Compare the run with the reference for its parameters: every reference table as its lineage allows (see the
    module docstring) and every claim's verdict; ``(matches, report lines)``: a header, one line per table saying
    what was compared and how, the differences under it.

    A run whose parameters have no reference is not compared (``matches`` True, said so).
    """
    run_dir, reference = resolve(run_dir), resolve(reference)
    run_params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else None
    if run_params is None:
        return False, [f"{run_dir} has no params.json: is it a run folder? (make reproduce writes one)"]
    if not reference.is_dir():
        return True, [f"no reference at {reference}; nothing to compare"]
    folder = find_reference(run_params, reference)
    if folder is None:
        known = sorted(p.parent.name for p in reference.glob("*/run.json"))
        return True, [f"no reference for these parameters among the {len(known)} in {shown(reference)}: comparison "
                      "skipped (make reference saves a finished run as one)"]
    ref_params = _comparable(json.loads((folder / "run.json").read_text())["params"])
    if _comparable(run_params) != ref_params:
        changed = sorted(k for k in set(ref_params) | set(_comparable(run_params))
                         if _comparable(run_params).get(k) != ref_params.get(k))
        return True, [f"the reference is for other parameters ({', '.join(changed)} differ); comparison skipped"]
    checks = check_tables(run_dir / "tables", folder / "tables")
    verdicts = check_verdicts(run_dir, folder)
    problems = [p for c in checks for p in c.problems] + verdicts
    where = shown(folder)
    n_stochastic = sum(c.stochastic for c in checks)
    if not problems:
        header = (f"run {run_dir.name} matches the reference {where}: {len(checks)} tables ({len(checks) - n_stochastic}"
                  f" deterministic, {n_stochastic} stochastic; sign tests and yes/no bounds Holm-adjusted over the "
                  f"check at {ALPHA}), every claim's verdict equal")
    else:
        header = f"run {run_dir.name} differs from the reference {where} in {len(problems)} places:"
    lines = [header]
    for c in checks:
        lines += c.lines()
    lines += [f"  DIFF  {v}" for v in verdicts]
    return not problems, lines


def check_tables(run_tables: Path, ref_tables: Path) -> list[TableCheck]:
    """Every table of ``ref_tables`` against ``run_tables`` (either side's ``<name>.csv`` or ``<name>.csv.gz``,
    :func:`ama.store.tables.table_files`); stochastic where either side's lineage names an attack
    (a reference older than lineage files takes the run's), the sign tests adjusted together."""
    ref_lineage, run_lineage = lineage.read(ref_tables), lineage.read(run_tables)
    run_files = {table_name(p): p for p in table_files(run_tables)}  # <name>.csv or <name>.csv.gz: the same table
    checks = []
    for ref_path in table_files(ref_tables):
        name = table_name(ref_path)
        run_path = run_files.get(name)
        if run_path is None:
            checks.append(TableCheck(name, False, "missing from this run", [f"{name}: missing from this run"]))
            continue
        entries = [e for e in (ref_lineage.get(name), run_lineage.get(name)) if e]
        sources = sorted({s for e in entries for s in e.get("sources", ()) if s in lineage.STOCHASTIC_SOURCES})
        checks.append(table_check(pd.read_csv(run_path), pd.read_csv(ref_path), name, bool(sources),
                                  sources=sources))
    adjust(checks)
    return checks


def check_verdicts(run_dir: Path, ref_dir: Path) -> list[str]:
    """Each claim whose verdict differs between the run and the reference, as a line (empty: all equal). ``ref_dir``:
    the reference's folder."""
    ref = {c.number: c for c in claims.collect_claims(ref_dir)}
    lines = []
    for c in claims.collect_claims(run_dir):
        theirs = ref.get(c.number)
        if theirs is None or (c.outcome, c.parts) != (theirs.outcome, theirs.parts):
            lines.append(f"claim {c.number} ({c.title}): this run: {c.verdict}; the reference: "
                         f"{theirs.verdict if theirs else 'not measured'}")
    return lines


class ReferenceError(ValueError):
    """A run that cannot become a reference; the message says what to do."""


def reference_commit(info: dict) -> str | None:
    """The one commit every notebook of a run (its ``run.json``, ``info``) ran at; a ReferenceError when one ran from
    a tree with uncommitted changes to ``ama/`` or ``notebooks/`` or the notebooks ran at different commits."""
    commits = {v.get("git_commit", info.get("git_commit")) for v in info.get("notebooks", {}).values()}
    commits = commits or {info.get("git_commit")}
    dirty = sorted(c for c in commits if c and c.endswith("+dirty"))
    if dirty:
        raise ReferenceError(f"the run was made with uncommitted changes ({dirty[0]}): commit them, rerun make "
                             "reproduce, then make reference")
    if len(commits) > 1:
        raise ReferenceError(f"the run's notebooks ran at different commits ({', '.join(sorted(map(str, commits)))}): "
                             "rerun make reproduce from a clean tree, then make reference")
    return next(iter(commits))


def save_reference(run_dir: str | Path, reference: str | Path) -> Path:
    """Copy a finished run into ``reference/<run>/``: its tables (and their lineage), ``params.json``, ``run.json``
    (stamped with the one commit all its notebooks ran at, :func:`reference_commit`), ``REPORT.md`` and the report's
    figures (full colour, capped in size, :func:`ama.store.tables.save_reference_png`); replaces an older reference of
    the same run. A study run alone (:func:`ama.studies.claims.study_alone`) is saved without ``clean_predictions``."""
    import re
    import shutil

    run_dir = resolve(run_dir)
    report = run_dir / "REPORT.md"
    if not report.is_file():
        raise FileNotFoundError(f"{run_dir} has no REPORT.md: run make reproduce to the end first")
    info = json.loads((run_dir / "run.json").read_text())
    commit = reference_commit(info)
    dest = resolve(reference) / run_dir.name
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    # a study run alone keeps its study's tables, not the selection's clean predictions of every labelled image under
    # every model (its images are in its per-image tables; the accuracy is in clean_accuracy)
    skip = [f"{TABLES.clean_predictions}.csv*"] if claims.study_alone(run_dir) else []
    shutil.copytree(run_dir / "tables", tmp / "tables", ignore=shutil.ignore_patterns("*.tmp", "*.md", *skip))
    compress_tables(tmp / "tables")
    for name in ("params.json", "REPORT.md"):
        shutil.copy2(run_dir / name, tmp / name)
    info["reference"] = {"made_by": "make reference", "commit": commit, "clean_tree": True}
    (tmp / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    for figure in sorted(set(re.findall(r"\]\((figures/[^)]+\.png)\)", report.read_text()))):
        save_reference_png(run_dir / figure, tmp / figure)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest


