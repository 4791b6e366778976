"""A run against its reference: compare tables, find the reference of a run's parameters, save a new one.

``results/reference/<run>/`` holds the tables, ``params.json``, ``run.json``, ``REPORT.md`` and the report's figures of
a finished run. A run matches its reference when every reference table is present with the same columns and the
same rows (matched by their key columns, the non-numeric ones) and its numbers agree within ``1e-5 + 1e-4 x |ref|``;
tables whose values pass through ``sign()`` steps and ``argmax`` (:data:`LOOSE_TABLES`) are compared by their
column means, because another CPU's float rounding can flip a step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .params import RunParams
from .paths import ROOT, resolve

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
# Tables whose values pass through sign() iterations or argmax can flip on another CPU's float rounding;
# they are compared as distributions (column means) with a wider tolerance. See README, "What matches means".
LOOSE_TABLES = {"attack": (0.05, 0.02), "transfer": (0.05, 0.02), "upsampling_comparison": (0.05, 0.02),
                "frame_mass_ratio": (0.05, 0.02)}


# Columns that say which unit a row is about (never a result): rows are matched on these.
IDENTITY_COLUMNS = ("model", "image", "file", "experiment", "setting", "mode", "optimizer", "variant", "restarts",
                    "cam_loss", "label_loss", "select", "e", "n_iter", "seed", "lamb", "mask", "target", "method",
                    "upsampling", "fill", "cell", "i", "j", "cell_kind", "patch", "top", "left", "iteration", "quantized",
                    "location", "measure")


def compare_tables(run: pd.DataFrame, ref: pd.DataFrame, name: str, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL) -> list[str]:
    """Differences between two versions of one table, as readable lines (empty: they match).

    Rows are matched by their :data:`IDENTITY_COLUMNS` (model, image, setting...): both tables are ordered by them
    (stably, so rows that share them keep their order) and those columns must be equal. Then every other
    non-numeric column is compared exactly and every numeric one within the tolerance; for :data:`LOOSE_TABLES`
    (results that pass through ``sign()`` steps and ``argmax``) every numeric or true/false column by its mean
    (a fooling rate, say) and text results (a class name) not at all."""
    loose = next((tol for prefix, tol in LOOSE_TABLES.items() if name.startswith(prefix)), None)
    if list(run.columns) != list(ref.columns):
        missing, extra = sorted(set(ref.columns) - set(run.columns)), sorted(set(run.columns) - set(ref.columns))
        return [f"{name}: columns differ (missing {missing}, extra {extra})"]
    if len(run) != len(ref):
        return [f"{name}: {len(run)} rows, reference has {len(ref)}"]
    run, ref = (_in_identity_order(df) for df in (run, ref))
    boolean = [c for c in ref.columns if pd.api.types.is_bool_dtype(ref[c])]
    numeric = [c for c in ref.columns if pd.api.types.is_numeric_dtype(ref[c]) and c not in boolean]
    identity = [c for c in ref.columns if c in IDENTITY_COLUMNS]
    exact = identity + ([] if loose else [c for c in ref.columns if c not in numeric and c not in identity])
    diffs = []
    for c in exact:
        bad = (run[c].astype(str).values != ref[c].astype(str).values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            diffs.append(f"{name}: column {c!r} differs in {int(bad.sum())} rows (first: row {i}: "
                         f"{run[c].iloc[i]!r} vs reference {ref[c].iloc[i]!r})")
    for c in [c for c in numeric + (boolean if loose else []) if c not in identity]:
        a, b = run[c].to_numpy(float), ref[c].to_numpy(float)
        if loose is not None:
            lrtol, latol = loose
            ma, mb = np.nanmean(a) if np.isfinite(a).any() else np.nan, np.nanmean(b) if np.isfinite(b).any() else np.nan
            if not np.isclose(ma, mb, rtol=lrtol, atol=latol, equal_nan=True):
                diffs.append(f"{name}: mean of {c!r} is {ma:.4g}, reference {mb:.4g} (tolerance {latol} + {lrtol:.0%})")
            continue
        close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            diffs.append(f"{name}: column {c!r} differs in {int((~close).sum())} of {len(a)} rows "
                         f"(first: row {i}: {a[i]:.6g} vs reference {b[i]:.6g}; tolerance {atol} + {rtol:g} x |ref|)")
    return diffs


def _in_identity_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows ordered (stably) by its :data:`IDENTITY_COLUMNS`, so that two versions of a table line up
    whatever order they were written in (a sharded run, a reordered experiment)."""
    columns = [c for c in IDENTITY_COLUMNS if c in df.columns]
    if not columns:
        return df.reset_index(drop=True)
    return df.sort_values(columns, kind="stable").reset_index(drop=True)


def find_reference(run_params: dict, reference: str | Path) -> Path | None:
    """The reference folder for a run's parameters: ``reference`` itself when it holds a ``run.json`` (one reference),
    else the sub-folder ``reference/<run>/`` whose ``run.json`` has the same parameters (the device aside)."""
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


def check_run(run_dir: str | Path, reference: str | Path) -> tuple[bool, list[str]]:
    """Compare every table of the reference for the run's parameters with the run's; ``(matches, report lines)``.

    A run whose parameters have no reference is not compared (``matches`` True, said so).
    """
    run_dir, reference = resolve(run_dir), resolve(reference)
    lines: list[str] = []
    run_params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else None
    if run_params is None:
        return False, [f"{run_dir} has no params.json: is it a run folder? (make reproduce writes one)"]
    if not reference.is_dir():
        return True, [f"no reference at {reference}; nothing to compare"]
    folder = find_reference(run_params, reference)
    if folder is None:
        known = sorted(p.parent.name for p in reference.glob("*/run.json"))
        return True, [f"no reference for these parameters in {reference} (references: {', '.join(known) or 'none'}); "
                      "comparison skipped"]
    ref_params = _comparable(json.loads((folder / "run.json").read_text())["params"])
    if _comparable(run_params) != ref_params:
        changed = sorted(k for k in set(ref_params) | set(_comparable(run_params))
                         if _comparable(run_params).get(k) != ref_params.get(k))
        return True, [f"the reference is for other parameters ({', '.join(changed)} differ); comparison skipped"]
    ref_tables = sorted((folder / "tables").glob("*.csv"))
    for ref_path in ref_tables:
        run_path = run_dir / "tables" / ref_path.name
        if not run_path.is_file():
            lines.append(f"{ref_path.stem}: missing from this run")
            continue
        lines += compare_tables(pd.read_csv(run_path), pd.read_csv(ref_path), ref_path.stem)
    ok = not lines
    shown = os.path.relpath(folder, ROOT) if folder.is_relative_to(ROOT) else str(folder)
    header = (f"run {run_dir.name} matches the reference {shown}: {len(ref_tables)} tables" if ok
              else f"run {run_dir.name} differs from the reference {shown} in {len(lines)} places:")
    return ok, [header, *lines]


REFERENCE_FIGURE_COLOURS = 128  # reference figures are palette PNGs: the repository stays small


def save_reference(run_dir: str | Path, reference: str | Path) -> Path:
    """Copy a finished run into ``reference/<run>/``: its tables, ``params.json``, ``run.json``, ``REPORT.md`` and the
    report's figures (as palette PNGs); replaces an older reference of the same run."""
    import re
    import shutil

    from PIL import Image

    run_dir = resolve(run_dir)
    report = run_dir / "REPORT.md"
    if not report.is_file():
        raise FileNotFoundError(f"{run_dir} has no REPORT.md: run make reproduce to the end first")
    dest = resolve(reference) / run_dir.name
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    shutil.copytree(run_dir / "tables", tmp / "tables", ignore=shutil.ignore_patterns("*.tmp", "*.md"))
    for name in ("params.json", "run.json", "REPORT.md"):
        shutil.copy2(run_dir / name, tmp / name)
    for figure in sorted(set(re.findall(r"\]\((figures/[^)]+\.png)\)", report.read_text()))):
        with Image.open(run_dir / figure) as im:
            im.convert("RGB").quantize(REFERENCE_FIGURE_COLOURS).save(tmp / figure, optimize=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest


