"""What a run feeds the kernel: devices, models by name and their padding variants, images and their labels, the paper's
protocol on labelled images, and the targeted attack's target maps."""
__all__ = ["devices", "padding", "models", "images", "protocol", "targets"]


def __getattr__(name):
    """A module of the package on first use (``ama.inputs.devices`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
