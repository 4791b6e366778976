"""The interactive entry points: the command line (``python -m ama``), ``make lab`` and the explorer of notebook 00."""
__all__ = ["cli", "lab", "explorer"]


def __getattr__(name):
    """A module of the package on first use (``ama.apps.cli`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
