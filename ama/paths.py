"""Project folders, resolved from the project root (never from the current directory)."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator


def project_root() -> Path:
    """The kit's root: ``$AMA_ROOT`` if set, else the folder holding ``pyproject.toml`` above this package."""
    if os.environ.get("AMA_ROOT"):
        return Path(os.environ["AMA_ROOT"]).expanduser().resolve()
    here = Path(__file__).resolve().parent
    for folder in (here.parent, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "ama").is_dir():
            return folder
    return Path.cwd()


ROOT = project_root()
DATA_DIR = ROOT / "data"
SAMPLES_DIR = DATA_DIR / "samples"
RESULTS_DIR = ROOT / "results"
CLI_RESULTS_DIR = RESULTS_DIR / "cli"  # the command line's default --out (git-ignored, beside make's runs)
REFERENCE_DIR = RESULTS_DIR / "reference"  # the committed references (make reference writes them)
CACHE_ENV = "AMA_CACHE"  # the shared cache's folder (default results/.cache, git-ignored; tests: a tmp one)


def cache_dir() -> Path:
    """The folder of results shared by the runs of this checkout: ``$AMA_CACHE``, else ``results/.cache``."""
    return Path(os.environ.get(CACHE_ENV) or RESULTS_DIR / ".cache")


def resolve(path: str | os.PathLike) -> Path:
    """A user path: absolute as given; a relative one from the current folder if it exists there, else from the
    project root (so notebooks, whose working folder is ``notebooks/``, see ``data/...`` as the Makefile does)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return ROOT / p


def shown(path: str | os.PathLike) -> str:
    """A path as the kit prints it: relative to the project root when inside it, else as it is."""
    path = Path(path)
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def atomic_write(path: str | os.PathLike, data: str | bytes | None = None, *, write: Callable[[Path], object] | None = None,
                 sync: bool = False) -> Path:
    """Write ``data`` (text or bytes), or let ``write(tmp)`` write the file, under a temporary name beside ``path``,
    then rename it onto ``path``: a reader, or a run killed midway, never sees a half-written file. ``sync``: flush it
    to disk before the rename (files that other processes poll). Returns ``path``. The kit's only such write. ``write``:
    a function that writes the temporary file it is given. The temporary name carries the process id, so two
    processes writing one file never rename each other's half: the last complete write wins."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if write is not None:
        write(tmp)
    else:
        with open(tmp, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(data, bytes) else "utf-8") as f:
            f.write(data)
    if sync:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    tmp.replace(path)
    return path


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created, with its folder, if missing) for the ``with`` block;
    other processes that ask for it wait their turn. Released on leaving the block or when the process ends."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock_file
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_reference(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in ``results/reference/``: a committed reference, which the notebooks only read."""
    path = resolve(path)
    return path == REFERENCE_DIR or REFERENCE_DIR in path.parents
