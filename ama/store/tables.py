"""Where a run writes, atomically: ``<out_dir>/figures`` (PNG + PDF), ``<out_dir>/tables`` (CSV), 8-bit PNG images.

Every file is written under a temporary name and renamed into place, so a killed run never leaves a half-written
file under the final name. Paths are resolved from the project root (:func:`ama.paths.resolve`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..paths import atomic_write, resolve
from . import lineage

FLOAT_FORMAT = "%.6g"  # every CSV the kit writes


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``df`` as a CSV (no index, :data:`FLOAT_FORMAT`), atomically."""
    return atomic_write(path, df.to_csv(index=False, float_format=FLOAT_FORMAT))


def output_dirs(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Create and return ``(figures_dir, tables_dir)`` under ``out_dir``."""
    root = resolve(out_dir)
    figures, tables = root / "figures", root / "tables"
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return figures, tables


def save_figure(fig, out_dir: str | os.PathLike, stem: str, dpi: int = 150) -> Path:
    """Save ``fig`` as ``<out_dir>/figures/<stem>.png`` and ``.pdf``; return the PNG path. ``dpi``: of the PNG."""
    figures, _ = output_dirs(out_dir)
    png = figures / f"{stem}.png"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    fig.savefig(figures / f"{stem}.pdf", bbox_inches="tight")
    return png


def save_figures(figs, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Save figures as ``<stem>``, ``<stem>_1``, ``<stem>_2``, ...; every figure after the first is closed (a notebook
    shows the first). ``figs``: matplotlib figures, in order."""
    import matplotlib.pyplot as plt

    paths = []
    for k, fig in enumerate(figs):
        paths.append(save_figure(fig, out_dir, stem if k == 0 else f"{stem}_{k}"))
        if k:
            plt.close(fig)
    return paths


def save_table(df: pd.DataFrame, out_dir: str | os.PathLike, stem: str) -> Path:
    """Write ``df`` atomically as ``<out_dir>/tables/<stem>.csv`` with its lineage (:mod:`ama.store.lineage`); return
    the path."""
    return save_tables({stem: df}, out_dir)[0]


def save_tables(tables: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write every table as ``<out_dir>/tables/<name>.csv`` (atomically) and record their lineage
    (``tables/lineage.json``, :mod:`ama.store.lineage`); return the paths."""
    _, folder = output_dirs(out_dir)
    paths = [write_csv(df, folder / f"{name}.csv") for name, df in tables.items()]
    atomic_write(folder / lineage.FILE, lineage.updated(folder, list(tables)))
    return paths


def read_table(tables: str | os.PathLike, stem: str) -> pd.DataFrame | None:
    """``tables/<stem>.csv`` of a run (or ``<stem>.csv.gz``, as a reference stores its large tables), its True/False
    columns as ``bool``, or None when the run did not write it. A True/False column with an empty cell is refused in
    one line (a damaged table: a selection such as :func:`ama.stats.rows.eight_bit` would mistake its rows)."""
    path = next((p for p in (Path(tables) / f"{stem}.csv", Path(tables) / f"{stem}.csv.gz") if p.is_file()), None)
    if path is None:
        return None
    lineage.inherit(path.parent, [stem])  # what this process writes next descends from it
    table = pd.read_csv(path)
    flags = [c for c in table.columns if table[c].dtype == object and table[c].isna().any()
             and table[c].notna().any() and set(table[c].dropna()) <= {True, False}]
    if flags:
        raise ValueError(f"{path}: column {flags[0]} is True/False with empty cells; the table is damaged: delete it "
                         "and run the notebook that writes it again")
    return table


def image_major(tables: dict[str, pd.DataFrame], names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Rows ordered by the image's position in ``names`` (stable: an image's rows keep their order), so that a run
    split across ranks and merged (:mod:`ama.runs.shards`) has the rows of a one-process run in the same order."""
    position = {n: i for i, n in enumerate(names)}
    out = {}
    for name, df in tables.items():
        if "image" in df.columns and len(df):
            df = df.iloc[df.image.map(position).argsort(kind="stable")].reset_index(drop=True)
        out[name] = df
    return out


def to_uint8(image: torch.Tensor):
    """``(3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8 numpy array (rounded, like :func:`ama.attack.marginal.quantize`)."""
    return torch.round(image.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one ``(3, H, W)`` image losslessly as an 8-bit PNG (atomically); return the path."""
    from PIL import Image

    return atomic_write(path, write=lambda tmp: Image.fromarray(to_uint8(image)).save(tmp, format="PNG"))


COMPRESS_ABOVE = 16 * 1024  # a reference's table larger than this (bytes) is stored as <name>.csv.gz


def table_files(tables: Path) -> list[Path]:
    """The tables of a run's or a reference's ``tables/`` folder: ``<name>.csv`` or ``<name>.csv.gz``, by name."""
    return sorted([*Path(tables).glob("*.csv"), *Path(tables).glob("*.csv.gz")], key=table_name)


def table_name(path: Path) -> str:
    return Path(path).name.removesuffix(".gz").removesuffix(".csv")


def compress_tables(tables: Path, above: int | None = None) -> list[str]:
    """Replace each ``<name>.csv`` of ``tables`` larger than ``above`` bytes by ``<name>.csv.gz`` (the same bytes,
    gzip level 9, no timestamp: the same file every time; ``above`` defaults to :data:`COMPRESS_ABOVE`); the names
    compressed. pandas reads either."""
    import gzip

    above = COMPRESS_ABOVE if above is None else above
    done = []
    for path in sorted(Path(tables).glob("*.csv")):
        if path.stat().st_size > above:
            data = path.read_bytes()
            atomic_write(path.with_name(path.name + ".gz"), gzip.compress(data, compresslevel=9, mtime=0))
            path.unlink()
            done.append(table_name(path))
    return done


REFERENCE_MAX_SIDE = 2400  # px: a reference's figure is at most this long on its longer side ...
REFERENCE_MAX_PIXELS = 600_000  # ... and holds at most this many pixels (the tracked tree stays under 64 MiB)


def save_reference_png(source: str | os.PathLike, dest: str | os.PathLike, max_side: int | None = None,
                       max_pixels: int | None = None) -> Path:
    """A figure as a committed reference keeps it, in full colour: RGB (any transparency flattened on white), scaled
    down (Lanczos) to at most ``max_side`` px on its longer side and ``max_pixels`` pixels (defaults
    :data:`REFERENCE_MAX_SIDE`, :data:`REFERENCE_MAX_PIXELS`), saved losslessly with PNG's best compression
    (``optimize``), always as RGB (never a palette, whose banding a reader cannot tell from a lossless one);
    atomically; return ``dest``. ``source``: the run's PNG."""
    from PIL import Image

    max_side = REFERENCE_MAX_SIDE if max_side is None else max_side
    max_pixels = REFERENCE_MAX_PIXELS if max_pixels is None else max_pixels
    with Image.open(source) as im:
        im = im.convert("RGBA")
        flat = Image.new("RGB", im.size, (255, 255, 255))
        flat.paste(im, mask=im.getchannel("A"))
    scale = min(1.0, max_side / max(flat.size), (max_pixels / (flat.width * flat.height)) ** 0.5)
    if scale < 1:
        flat = flat.resize((max(1, int(flat.width * scale)), max(1, int(flat.height * scale))), Image.LANCZOS)
    return atomic_write(dest, write=lambda tmp: flat.save(tmp, format="PNG", optimize=True))


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table (a fenced text table when ``tabulate`` is missing); a table of text only (e.g.
    :func:`readable`) keeps each cell as written (``0.20`` stays ``0.20``)."""
    try:
        text_only = all(dt == object or pd.api.types.is_string_dtype(dt) for dt in df.dtypes)
        return df.to_markdown(index=False, disable_numparse=text_only)
    except ImportError:  # tabulate missing
        return "```\n" + df.to_string(index=False) + "\n```"


def p_text(p: float) -> str:
    """A p-value for people: ``"p < 0.001"`` below 0.001, else ``"p = 0.012"`` (two significant digits); ``""`` when
    missing. ``p``: the p-value."""
    if p is None or pd.isna(p):
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def number_text(x: float, percent: bool = False, digits: int = 2) -> str:
    """``x`` for people: a whole percentage with ``percent`` (``0.125`` -> ``"12%"``), else ``digits`` decimals; ``"–"``
    when missing (never ``nan``)."""
    if x is None or pd.isna(x):
        return "–"
    return f"{100 * x:.0f}%" if percent else f"{x:.{digits}f}"


def interval_text(value: float, low: float, high: float, percent: bool = False, digits: int = 2,
                  signed: bool = False) -> str:
    """``"12% (3% to 27%)"``: ``value`` with its 95% interval ``low`` to ``high``; ``"–"`` when the value is missing.
    ``percent``: as whole percentages (``signed``: as signed points, ``"+12 points (+3 to +27)"``); ``digits``:
    decimals otherwise."""
    if value is None or pd.isna(value):
        return "–"
    if percent and signed:
        return f"{100 * value:+.0f} points ({100 * low:+.0f} to {100 * high:+.0f})"
    f = (lambda x: f"{x:+.{digits}f}") if signed else (lambda x: number_text(x, percent, digits))
    return f"{f(value)}" + ("" if pd.isna(low) else f" ({f(low)} to {f(high)})")


def readable(df: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """``df`` as people read it: only ``columns`` (``{new name: column or function of a row}``), in that order, each
    cell text (a number via :func:`number_text`, a missing value as ``"–"``), and no column that is missing in every
    row. A function of a row (e.g. ``lambda r: interval_text(r.rate, r.low, r.high, percent=True)``) builds a cell from
    several columns; ``df``: any table."""
    out = pd.DataFrame(index=df.index)
    for name, source in columns.items():
        if callable(source):
            out[name] = [source(r) or "–" for r in df.itertuples()]
        elif source in df:
            col = df[source]
            out[name] = [number_text(v) if isinstance(v, float) else ("–" if v is None or
                         (not isinstance(v, str) and pd.isna(v)) else str(v)) for v in col]
    keep = [c for c in out if not (out[c].astype(str).isin(["–", ""])).all()]
    return out[keep].reset_index(drop=True)
