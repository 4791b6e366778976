"""Statistics over a run's tables: exact and bootstrap intervals, paired tests, three-valued verdicts, power plans, and the rows of
the attack's tables a statistic reads."""
__all__ = ["rows", "intervals", "power"]


def __getattr__(name):
    """A module of the package on first use (``ama.stats.rows`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
