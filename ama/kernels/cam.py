"""Class activation maps (Zhou et al. 2016) of a global-average-pool + linear CNN.

Raw CAM of class ``c``: ``R_c(i, j) = sum_k W[c, k] A_k(i, j)``, so that
``mean_ij R_c + b[c] == logit_c``. CAM: ``M_c = ReLU(R_c)``, min-max normalised per image.
Saliency: ``S = upsample(M)`` to the input size (:mod:`ama.kernels.upsampling`). Everything here is differentiable.
"""
from __future__ import annotations

import sys
import types
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .cam_model import CAMModel

__all__ = ["NORMALIZE_EPS", "CAMOutput", "resolve_target", "raw_cam_from_features", "normalize_maps", "compute_cam",
           "cam", "raw_cam"]

NORMALIZE_EPS = 1e-8


class CAMOutput(NamedTuple):
    """Everything one forward pass gives: maps ``(B, h, w)``, ``logits`` ``(B, C)``, ``target`` ``(B,)``."""

    cam: torch.Tensor       # ReLU'd and normalised as asked, (B, h, w)
    raw: torch.Tensor       # R_c, (B, h, w)
    logits: torch.Tensor    # (B, C)
    target: torch.Tensor    # class explained per image, (B,) long
    features: torch.Tensor  # A, (B, K, h, w)


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """Classes ``(B,)``: ``None`` -> predicted; an int -> that class for every image; a sequence/tensor -> per image."""
    B, C = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, (str, bytes)):
        raise ValueError(f"target must be a class index (int) or one per image, not the name {target!r}; "
                         "find the index with model.class_names.index(name)")
    try:
        t = torch.as_tensor(target, device=logits.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"target must be None, a class index or one index per image, got {target!r}") from None
    if t.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, not booleans (got {target!r})")
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"target must hold integer class indices, got {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"target has {t.numel()} classes for a batch of {B} images")
    if (t < 0).any() or (t >= C).any():
        raise ValueError(f"target classes must lie in [0, {C - 1}], got {t.tolist()}")
    return t.clone()


def raw_cam_from_features(model: CAMModel, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``R`` ``(B, h, w)`` from the backbone's ``features`` ``(B, K, h, w)`` and classes ``target`` ``(B,)``."""
    return torch.einsum("bkhw,bk->bhw", features, model.weight[target])


def normalize_maps(maps: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Min-max normalise each map of ``(B, h, w)`` to ``[0, 1]``; a constant map becomes all zeros, never NaN. ``eps``:
    a range below it counts as constant."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(maps)


def compute_cam(model: CAMModel, x: torch.Tensor, target=None, relu: bool = True,
                normalize: bool = True) -> CAMOutput:
    """CAM of ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` with its logits, from one forward pass. ``relu``: clip negative cells
    to 0 first; ``normalize``: min-max normalise to ``[0, 1]``."""
    features = model.features(x)
    logits = model.head(features)
    t = resolve_target(target, logits)
    raw = raw_cam_from_features(model, features, t)
    maps = F.relu(raw) if relu else raw
    if normalize:
        maps = normalize_maps(maps)
    return CAMOutput(maps, raw, logits, t, features)


def cam(model: CAMModel, x: torch.Tensor, target=None, relu: bool = True, normalize: bool = True) -> torch.Tensor:
    """CAM ``(B, h, w)``; normalised maps lie in ``[0, 1]``. ``target`` None -> predicted class. ``relu``: clip negative
    cells to 0 first; ``normalize``: min-max normalise to ``[0, 1]``."""
    return compute_cam(model, x, target, relu, normalize).cam


def raw_cam(model: CAMModel, x: torch.Tensor, target=None) -> torch.Tensor:
    """Raw CAM ``R`` ``(B, h, w)``: no ReLU, no normalisation; ``R.mean((1, 2)) + b == logit``."""
    return compute_cam(model, x, target, relu=False, normalize=False).raw


class _CallableModule(types.ModuleType):
    """``ama.kernels.cam`` is this module (``ama.kernels.cam.compute_cam``, ``import ama.kernels.cam``) and calls :func:`cam` when called."""

    def __call__(self, model: CAMModel, x: torch.Tensor, target=None, relu: bool = True,
                 normalize: bool = True) -> torch.Tensor:
        return cam(model, x, target, relu, normalize)


sys.modules[__name__].__class__ = _CallableModule
