"""The kernel: CAM and the model it needs, upsampling, receptive fields, map metrics and occlusion, on a model and a
batch of images, with no run machinery."""
__all__ = ["cam_model", "cam", "upsampling", "receptive_field", "metrics", "occlusion"]


def __getattr__(name):
    """A module of the package on first use (``ama.kernels.cam_model`` after ``import ama``, as ``ama.cam``)."""
    if name in __all__:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
