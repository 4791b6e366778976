"""ama: a reproducibility kit for Xia et al. 2021, *On the Receptive Field Misalignment in CAM-based
Visual Explanations* (Pattern Recognition Letters 152, 275-282).

Images live in ``[0, 1]`` pixel space; models normalise inside. Shapes: images ``(B, 3, H, W)``,
CAMs ``(B, h, w)``, saliency maps ``(B, H, W)``.
"""
__version__ = "0.1.0"

# Everything is imported on first use (``import ama`` alone does not import torch), so that the pipeline's own
# processes start in a fraction of a second; ``ama.cam`` is the module, callable as ama.cam(model, x)
# (see ama.cam._CallableModule).
_LAZY = {
    "compute_cam": "cam", "normalize_maps": "cam", "raw_cam": "cam",
    "CAMModel": "cam_model", "ModelError": "cam_model", "predict": "cam_model", "wrap_model": "cam_model",
    "ImageLoadError": "data", "load_image": "data", "load_images": "data", "sample_images": "data",
    "stage_samples": "data", "WeightsNotFoundError": "models", "load_model": "models", "upsample": "upsampling",
    "implicit_receptive_field": "receptive_field", "effective_receptive_field": "receptive_field",
    "theoretical_receptive_field": "receptive_field", "misalignment": "receptive_field",
    "marginal_attack": "attack", "AttackResult": "attack_result",
}


_SUBMODULES = ("attack", "attack_experiments", "attack_result", "cam", "cam_model", "claims", "data", "experiments",
               "explorer", "faithfulness", "geometry", "metrics", "models", "occlusion", "optimizers", "params",
               "plots", "receptive_field", "reference", "report", "results", "runs", "runstore", "shapes", "shards",
               "transfer", "upsampling")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ama' has no attribute {name!r}")


__all__ = ["cam", *_LAZY]


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
