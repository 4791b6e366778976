"""Where a run's tables live: writing and reading tables and figures, their lineage, and the ranks, part files and locks
of a run on several processes."""
__all__ = ["lineage", "tables", "distributed", "parts"]


def __getattr__(name):
    """A module of the package on first use (``ama.store.lineage`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
