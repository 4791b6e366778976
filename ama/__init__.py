"""ama: a reproducibility kit for Xia et al. 2021, *On the Receptive Field Misalignment in CAM-based
Visual Explanations* (Pattern Recognition Letters 152, 275-282).

Images live in ``[0, 1]`` pixel space; models normalise inside. Shapes: images ``(B, 3, H, W)``,
CAMs ``(B, h, w)``, saliency maps ``(B, H, W)``.
"""
__version__ = "0.1.0"

# Everything is imported on first use (``import ama`` alone does not import torch), so that the pipeline's own
# processes start in a fraction of a second; ``ama.cam`` is ``ama.kernels.cam``, callable as ama.cam(model, x)
# (see ama.kernels.cam._CallableModule).
_LAZY = {
    "compute_cam": "kernels.cam", "normalize_maps": "kernels.cam", "raw_cam": "kernels.cam",
    "CAMModel": "kernels.cam_model", "ModelError": "kernels.cam_model", "predict": "kernels.cam_model",
    "wrap_model": "kernels.cam_model", "ImageLoadError": "inputs.images", "load_image": "inputs.images",
    "load_images": "inputs.images", "sample_images": "inputs.images", "stage_samples": "inputs.images",
    "WeightsNotFoundError": "inputs.models", "load_model": "inputs.models", "upsample": "kernels.upsampling",
    "implicit_receptive_field": "kernels.receptive_field", "effective_receptive_field": "kernels.receptive_field",
    "theoretical_receptive_field": "kernels.receptive_field", "misalignment": "kernels.receptive_field",
    "marginal_attack": "attack.marginal", "AttackResult": "attack.result",
}


# ``ama.<name>``: the module or subpackage it loads on first use (``ama.cam``: ``ama.kernels.cam``)
_SUBMODULES = {
    "apps": "apps", "attack": "attack", "attack_experiments": "studies.attack_experiments",
    "attack_result": "attack.result", "cam": "kernels.cam", "cam_model": "kernels.cam_model",
    "claims": "studies.claims", "data": "inputs.images", "experiments": "studies.experiments",
    "explorer": "apps.explorer", "faithfulness": "studies.faithfulness", "figures": "figures", "geometry": "geometry",
    "inputs": "inputs", "kernels": "kernels", "metrics": "kernels.metrics", "models": "inputs.models",
    "occlusion": "kernels.occlusion", "optimizers": "attack.optimizers", "params": "params", "plots": "figures.plots",
    "receptive_field": "kernels.receptive_field", "reference": "runs.check", "report": "report",
    "results": "store.tables", "runs": "runs", "runstore": "store.parts", "shapes": "inputs.targets",
    "shards": "runs.shards", "stats": "stats", "store": "store", "studies": "studies", "transfer": "studies.transfer",
    "upsampling": "kernels.upsampling",
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    raise AttributeError(f"module 'ama' has no attribute {name!r}")


__all__ = ["cam", *_LAZY]


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
