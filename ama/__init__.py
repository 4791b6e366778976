"""ama: a reproducibility kit for Xia et al. 2021, *On the Receptive Field Misalignment in CAM-based
Visual Explanations* (Pattern Recognition Letters 152, 275-282).

Images live in ``[0, 1]`` pixel space; models normalise inside. Shapes: images ``(B, 3, H, W)``,
CAMs ``(B, h, w)``, saliency maps ``(B, H, W)``.
"""
from . import cam  # the module, callable as ama.cam(model, x): see ama.cam._CallableModule
from .cam import compute_cam, normalize_maps, raw_cam
from .cam_model import CAMModel, ModelError, predict, wrap_model
from .data import ImageLoadError, load_image, load_images, sample_images, stage_samples
from .models import WeightsNotFoundError, load_model
from .upsampling import upsample

__version__ = "0.1.0"

# Names from the modules of the later kernels, imported on first use.
_LAZY = {
    "implicit_receptive_field": "receptive_field", "effective_receptive_field": "receptive_field",
    "theoretical_receptive_field": "receptive_field", "misalignment": "receptive_field",
    "marginal_attack": "attack", "AttackResult": "attack_result",
}


_SUBMODULES = ("attack", "attack_experiments", "attack_result", "claims", "experiments", "explorer", "faithfulness",
               "geometry", "metrics", "occlusion", "optimizers", "params", "plots", "receptive_field", "reference",
               "report", "results", "runs", "runstore", "shapes", "shards", "transfer", "upsampling")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ama' has no attribute {name!r}")

__all__ = [
    "CAMModel", "ImageLoadError", "ModelError", "WeightsNotFoundError", "cam", "compute_cam", "load_image",
    "load_images", "load_model", "normalize_maps", "predict", "raw_cam", "sample_images",
    "stage_samples", "upsample", "wrap_model", *_LAZY,
]
