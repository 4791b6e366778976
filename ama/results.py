"""Where a run writes: ``<out_dir>/figures`` (PNG + PDF), ``<out_dir>/tables`` (CSV), resolved from the project root."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .paths import resolve


def output_dirs(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Create and return ``(figures_dir, tables_dir)`` under ``out_dir``."""
    root = resolve(out_dir)
    figures, tables = root / "figures", root / "tables"
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return figures, tables


def save_figure(fig, out_dir: str | os.PathLike, stem: str, dpi: int = 150) -> Path:
    """Save ``fig`` as ``<out_dir>/figures/<stem>.png`` and ``.pdf``; return the PNG path."""
    figures, _ = output_dirs(out_dir)
    png = figures / f"{stem}.png"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    fig.savefig(figures / f"{stem}.pdf", bbox_inches="tight")
    return png


def save_table(df: pd.DataFrame, out_dir: str | os.PathLike, stem: str, float_format: str = "%.6g") -> Path:
    """Write ``df`` atomically as ``<out_dir>/tables/<stem>.csv``; return the path."""
    _, tables = output_dirs(out_dir)
    path = tables / f"{stem}.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False, float_format=float_format)
    tmp.replace(path)
    return path
