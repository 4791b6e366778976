"""The marginal attack, the rest of the kernel: its optimisers, what it returns and the attack itself, which counts its
own calls and imports no run machinery."""
__all__ = ["optimizers", "result", "marginal"]


def __getattr__(name):
    """A module of the package on first use (``ama.attack.optimizers`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
