"""Figures: the drawing primitives and the notebooks' and the report's figures of the tables."""
__all__ = ["plots", "charts", "control_charts", "forest", "study_charts"]


def __getattr__(name):
    """A module of the package on first use (``ama.figures.plots`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
