"""ama: a reproducibility kit for Xia et al. 2021, *On the Receptive Field Misalignment in CAM-based
Visual Explanations* (Pattern Recognition Letters 152, 275-282).

Images live in ``[0, 1]`` pixel space; models normalise inside. Shapes: images ``(B, 3, H, W)``,
CAMs ``(B, h, w)``, saliency maps ``(B, H, W)``.
"""
from .cam import cam, compute_cam, normalize_maps, raw_cam, saliency, upsample
from .data import ImageLoadError, load_image, load_images, sample_images, stage_samples
from .models import CAMModel, ModelError, WeightsNotFoundError, load_model, predict, wrap_model

__version__ = "0.1.0"
__all__ = [
    "CAMModel", "ImageLoadError", "ModelError", "WeightsNotFoundError", "cam", "compute_cam", "load_image",
    "load_images", "load_model", "normalize_maps", "predict", "raw_cam", "saliency", "sample_images",
    "stage_samples", "upsample", "wrap_model",
]
