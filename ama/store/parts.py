"""Results that several processes fill safely: part files per rank, plans, locks, keys and the merges.

One mechanism serves both kinds of sharded work: a rank writes only its own part file of each table
(:class:`RankPart`, atomically) and a plan that says what it was asked to do and whether it finished; a merge
reads every rank's parts, refuses an item or row two ranks hold and reports what a plan asked for but no part
holds (:func:`owners`, :func:`merge`). :mod:`ama.runs.shards` uses it for the notebooks' experiments; the command line's
folder run (``python -m ama attack --images``) for its table, laid out in ``OUT`` as::

    OUT/attack_metrics.csv                 the run's table (written by :func:`merge`, sorted by key)
    OUT/parts/attack_metrics.rank<r>.csv   rows written by rank r, appended atomically batch by batch
    OUT/parts/plan.rank<r>.json            what rank r was asked to do (keys, settings) and what it skipped
    OUT/.lock.rank<r>                      held (``fcntl.flock``) by the process that writes rank r's part

A row is identified by :data:`KEY_COLUMNS`: the image's path relative to the folder *with* its suffix (``file``;
``chelsea.jpg`` and ``chelsea.png`` are two images), the setting and the quantisation. The table is derived
from the parts only, so merging twice gives the same table, and a merge refuses duplicate rows (two runs wrote
one result) and, when asked to be strict, rows that a plan expects but no part holds.
"""
from __future__ import annotations

import csv as _csv
import errno
import fcntl
import json
import os
import time
from pathlib import Path

import pandas as pd

from ..artifacts import TABLES
from ..paths import atomic_write, exclusive
from .tables import FLOAT_FORMAT, write_csv

TABLE_STEM = TABLES.attack_metrics
TABLE_NAME = f"{TABLE_STEM}.csv"
PARTS_DIR = "parts"
# Columns that say which setting a row belongs to.
SETTING_COLUMNS = ("model", "e", "mode", "optimizer", "restarts", "n_iter", "lamb", "seed", "target")
KEY_COLUMNS = ("file", *SETTING_COLUMNS, "quantized")
NUMERIC_COLUMNS = ("e", "n_iter", "lamb", "seed")


class RunStoreError(ValueError):
    """A run folder that cannot be used as it is; the message is one line naming the file."""


# --- output folder --------------------------------------------------------------------------
def check_writable(folder: Path) -> Path:
    """Create ``folder`` and write and remove a probe file in it, before any work; one-line error otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunStoreError(f"--out {folder}: is a file, not a folder; give a folder")
    probe = folder / f".ama-write-probe.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise RunStoreError(f"--out {folder}: cannot write here ({os_reason(err)})") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return folder


def os_reason(err: OSError) -> str:
    """A short reason for an OS error (``no space left on device``, ``permission denied``, ...). ``err``: the error."""
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    return (err.strerror or str(err)).lower()


# --- locks ----------------------------------------------------------------------------------
class RankLock:
    """An exclusive ``flock`` on ``OUT/.lock.rank<r>`` for one run's rank r (released when the process ends).

    The lock file records the holder (pid, run id, world size). Taking it fails at once with a one-line
    :class:`RunStoreError` naming the holder's pid when another process holds it, or when another launch with
    another world size holds any rank of the folder (its shards would overlap this one's)."""

    def __init__(self, out: Path, rank: int = 0, world: int = 1, run_id: str = ""):
        self.path = Path(out) / f".lock.rank{rank}"
        self.rank, self.world, self.run_id = rank, world, run_id
        self._fd: int | None = None

    def acquire(self) -> "RankLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.path)
            os.close(fd)
            raise RunStoreError(f"{self.path.parent}: another run (pid {holder.get('pid', '?')}) is writing this "
                                f"folder; wait for it to end or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(dict(pid=os.getpid(), run_id=self.run_id, world=self.world)).encode())
        self._fd = fd
        for other in sorted(self.path.parent.glob(".lock.rank*")):
            if other == self.path:
                continue
            if not _is_held(other):
                continue
            holder = _holder(other, wait_s=5.0)  # a rank that has just taken its lock writes its holder next
            if holder.get("world") != self.world or holder.get("run_id") != self.run_id:
                self.release()
                raise RunStoreError(f"{self.path.parent}: another run (pid {holder.get('pid', '?')}) is writing "
                                    f"this folder; wait for it to end or use another --out")
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _holder(path: Path, wait_s: float = 0.0) -> dict:
    """The holder a lock file records (``{}`` when it records none). ``path``: the lock file; ``wait_s``: how long to
    wait for a holder that has taken its lock but not yet written itself (the lock comes first, then the record)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _is_held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


# --- tables ---------------------------------------------------------------------------------
def read_table(path: Path) -> pd.DataFrame:
    """A run table or part file, checked row by row: a one-line :class:`RunStoreError` names the file and row
    of a truncated or hand-edited line (wrong number of fields, a non-number setting, a bad ``quantized``)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(_csv.reader(f))
    except (OSError, UnicodeDecodeError, _csv.Error) as err:
        raise RunStoreError(f"{path}: cannot be read as a CSV table ({err})") from None
    if not rows:
        raise RunStoreError(f"{path}: empty file (no header); delete it and rerun")
    header = rows[0]
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        raise RunStoreError(f"{path}: header lacks column(s) {', '.join(missing)}; not a table of this version")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RunStoreError(f"{path}: row {i} has {len(row)} fields, the header {len(header)} "
                                f"(truncated or edited); delete that row and rerun")
        rec = dict(zip(header, row))
        bad = [c for c in NUMERIC_COLUMNS if not _is_number(rec[c])]
        if bad or rec["quantized"] not in ("True", "False") or not rec["file"]:
            what = f"{bad[0]}={rec[bad[0]]!r}" if bad else f"file={rec['file']!r}, quantized={rec['quantized']!r}"
            raise RunStoreError(f"{path}: row {i} has a bad value ({what}); delete that row and rerun")
    df = pd.DataFrame(rows[1:], columns=header)
    for c in df.columns:
        if c in ("file", "image", "model", "mode", "target") or c.endswith("_name"):
            continue
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError):
            pass
    df["quantized"] = df["quantized"] == "True"
    return df


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def row_keys(df: pd.DataFrame) -> pd.Series:
    """One string per row identifying it (:data:`KEY_COLUMNS`), numbers written canonically."""
    parts = [df[c].map(_canon) for c in KEY_COLUMNS]
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def _canon(v) -> str:
    if isinstance(v, (bool,)) or str(v) in ("True", "False"):
        return str(v)
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return str(v)


def setting_key(file: str, setting: dict, quantized: bool) -> str:
    """The row key (as :func:`row_keys`) of one image ``file`` under ``setting``."""
    return "|".join(_canon(v) for v in (file, *(setting[c] for c in SETTING_COLUMNS), quantized))


class RankPart:
    """Rank r's part of one table, ``<folder>/<table>.rank<r>.csv``, and its plan ``<folder>/plan.rank<r>.json``
    (what the rank was asked to do; ``finished`` once it is done). Write them only while holding the rank's lock
    (:class:`RankLock`) or as the only writer of the folder (a torchrun rank of :mod:`ama.runs.shards`)."""

    def __init__(self, folder: Path, rank: int = 0, table: str = TABLE_STEM):
        self.dir = Path(folder)
        self.path = self.dir / f"{table}.rank{rank}.csv"
        self.plan_path = self.dir / f"plan.rank{rank}.json"

    def append(self, df: pd.DataFrame) -> None:
        """Append ``df``'s rows atomically (old content + new rows to a temporary file, fsync, rename)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        text = df.to_csv(index=False, header=not self.path.is_file(), float_format=FLOAT_FORMAT)
        if self.path.is_file():
            old = self.path.read_text()
            if old.split("\n", 1)[0] != ",".join(df.columns):
                raise RunStoreError(f"{self.path}: other columns than this version writes; use another --out")
            text = old + ("" if old.endswith("\n") or not old else "\n") + text
        atomic_write(self.path, text, sync=True)

    def write(self, df: pd.DataFrame) -> None:
        """Write ``df`` as the whole part (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, df.to_csv(index=False, float_format=FLOAT_FORMAT), sync=True)

    def write_plan(self, finished: bool = False, **info) -> None:
        """Record what this rank is asked to do (``info``, JSON) and whether it has ``finished``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.plan_path, json.dumps(dict(info, finished=finished), indent=1), sync=True)


def part_files(folder: Path, table: str = TABLE_STEM) -> dict[int, Path]:
    """``{rank: path}`` of the part files of ``table`` in ``folder``."""
    paths = Path(folder).glob(f"{table}.rank*.csv")
    return dict(sorted((int(p.name[len(table) + 5:-4]), p) for p in paths if p.name[len(table) + 5:-4].isdigit()))


def read_plans(folder: Path) -> dict[int, dict]:
    """``{rank: plan}`` of the plans in ``folder``; a one-line :class:`RunStoreError` names an unreadable one."""
    plans = {}
    for path in sorted(Path(folder).glob("plan.rank*.json")):
        try:
            plans[int(path.name[9:-5])] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunStoreError(f"{path}: unreadable plan ({err}); delete it and rerun") from None
    return plans


def owners(items_by_rank: dict[int, list[str]], what: str = "item", of: str = "") -> dict[str, int]:
    """``{item: rank}`` over the ranks' item lists; a :class:`RunStoreError` names an item that two ranks (or one
    rank twice) hold: ``"<what> '<item>'<of> was computed by ranks ..."``. ``items_by_rank``: ``{rank: items}``;
    ``what``, ``of``: words of the error message."""
    seen: dict[str, int] = {}
    for rank, items in sorted(items_by_rank.items()):
        for item in items:
            if item in seen:
                raise RunStoreError(f"{what} {item!r}{of} was computed by ranks {seen[item]} and {rank}; delete the "
                                    "parts and rerun")
            seen[item] = rank
    return seen


def read_parts(out: Path) -> pd.DataFrame:
    """All part files' rows of a folder run ``out``, with a ``_part`` column naming the file each row came from."""
    frames = []
    for p in part_files(Path(out) / PARTS_DIR).values():
        df = read_table(p)
        df["_part"] = p.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY_COLUMNS, "_part"])


def done_keys(out: Path) -> set[str]:
    """Keys of the rows that any part file of ``out`` holds."""
    df = read_parts(out)
    return set(row_keys(df)) if len(df) else set()


def expected(out: Path) -> tuple[set[str], dict[str, str]]:
    """Row keys the plans of ``out`` ask for (minus skipped files), and ``{file: reason}`` of skipped files."""
    keys, skipped = set(), {}
    for plan in read_plans(Path(out) / PARTS_DIR).values():
        skipped.update(plan.get("skipped", {}))
        for setting in plan["settings"]:
            for f in plan["files"]:
                for q in (False, True):
                    keys.add(setting_key(f, setting, q))
    return {k for k in keys if k.split("|", 1)[0] not in skipped}, skipped


def merge(out: Path, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Write ``OUT/attack_metrics.csv`` from the part files; return the table and the expected keys still missing.

    Refuses (one line) rows that two parts, or one part twice, hold. ``strict``: also refuse missing rows. ``out``: the
    folder of the part files (``OUT``)."""
    out = Path(out)
    with exclusive(out / ".lock.merge"):  # merges take turns; writers of parts are not held up
        df = read_parts(out)
        if not len(df):
            raise RunStoreError(f"{out / PARTS_DIR}: no part files with rows; nothing to merge")
        keys = row_keys(df)
        dup = keys.duplicated(keep=False)
        if dup.any():
            first = df[dup].iloc[0]
            where = sorted(set(df[dup & (keys == keys[dup].iloc[0])]._part))
            raise RunStoreError(f"{out}: {int(keys.duplicated().sum())} duplicate rows, e.g. {first.file} e={first.e} "
                                f"quantized={first.quantized} in {' and '.join(where)}; delete one copy and merge again")
        want, _ = expected(out)
        missing = sorted(want - set(keys))
        if strict and missing:
            raise RunStoreError(f"{out}: {len(missing)} expected row(s) missing, e.g. {missing[0]!r}; "
                                f"rerun the same command to finish them")
        table = df.drop(columns="_part").sort_values([*SETTING_COLUMNS, "file", "quantized"], kind="stable")
        write_csv(table, out / TABLE_NAME)
        return table.reset_index(drop=True), missing
