"""Running the kit: a notebook's orchestration, the experiments on N processes, a run against its reference, and the
``make reproduce`` runner."""
__all__ = ["shards", "folder", "check", "pipeline"]


def __getattr__(name):
    """A module of the package on first use (``ama.runs.shards`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
