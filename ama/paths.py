"""Project folders, resolved from the project root (never from the current directory)."""
from __future__ import annotations

import os
from pathlib import Path


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
