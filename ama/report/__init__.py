"""What a run reports: every verdict in its family, ``REPORT.md``, and the generated blocks of the README and
``docs/``."""
__all__ = ["verdicts", "findings", "readability", "markdown", "evidence"]


def __getattr__(name):
    """A module of the package on first use (``ama.report.verdicts`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
