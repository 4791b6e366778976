"""Class activation maps (Zhou et al. 2016) and the upsampling that turns them into saliency.

Raw CAM of class ``c``: ``R_c(i, j) = sum_k W[c, k] A_k(i, j)``, so that
``mean_ij R_c + b[c] == logit_c``. CAM: ``M_c = ReLU(R_c)``, min-max normalised per image.
Saliency: ``S = upsample(M)`` to the input size. Everything here is differentiable.

Receptive-field-aware upsampling (``SCIENCE.md`` section 6): ``mode="gaussian"`` paints each cell with a 2-D
Gaussian (peak 1) centred on the cell's receptive-field centre, ``S = sum_ij M(i, j) G_ij``, with a width
fitted to the measured ERFs (:func:`fit_erf_gaussian`); ``mode="erf"`` is the exact projection
``S(p) = sum_ij M(i, j) ERF_ij(p)`` with the image's own ERF maps.
"""
from __future__ import annotations

import sys
import types
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .models import CAMModel

UPSAMPLE_MODES = ("bilinear", "nearest", "bicubic", "area")
RF_UPSAMPLE_MODES = ("gaussian", "erf")  # receptive-field-aware modes (need sigma / the ERF maps)
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
    """``R`` ``(B, h, w)`` from features ``(B, K, h, w)`` and classes ``(B,)``."""
    return torch.einsum("bkhw,bk->bhw", features, model.weight[target])


def normalize_maps(maps: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Min-max normalise each map of ``(B, h, w)`` to ``[0, 1]``; a constant map becomes all zeros, never NaN."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(maps)


def compute_cam(model: CAMModel, x: torch.Tensor, target=None, relu: bool = True,
                normalize: bool = True) -> CAMOutput:
    """CAM of ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` with its logits, from one forward pass."""
    features = model.features(x)
    logits = model.head(features)
    t = resolve_target(target, logits)
    raw = raw_cam_from_features(model, features, t)
    maps = F.relu(raw) if relu else raw
    if normalize:
        maps = normalize_maps(maps)
    return CAMOutput(maps, raw, logits, t, features)


def cam(model: CAMModel, x: torch.Tensor, target=None, relu: bool = True, normalize: bool = True) -> torch.Tensor:
    """CAM ``(B, h, w)``; normalised maps lie in ``[0, 1]``. ``target`` None -> predicted class."""
    return compute_cam(model, x, target, relu, normalize).cam


def raw_cam(model: CAMModel, x: torch.Tensor, target=None) -> torch.Tensor:
    """Raw CAM ``R`` ``(B, h, w)``: no ReLU, no normalisation; ``R.mean((1, 2)) + b == logit``."""
    return compute_cam(model, x, target, relu=False, normalize=False).raw


def upsample(maps: torch.Tensor, size, mode: str = "bilinear", align_corners: bool | None = True, *,
             sigma=None, centres=None, erf: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample ``(B, h, w)`` (or ``(h, w)``) maps to ``size`` ``(H, W)``; differentiable.

    ``mode``: bilinear (``align_corners`` True as in the reference, or False), nearest, bicubic, area.
    ``align_corners`` is ignored for nearest, area, gaussian and erf. Bicubic can overshoot ``[0, 1]``.

    ``mode="gaussian"``: ``S = sum_ij M(i, j) G_ij``, ``G_ij(y, x) = exp(-(y - cy_i)^2 / 2 sy^2 - (x - cx_j)^2 / 2 sx^2)``
    (peak 1, not renormalised). ``sigma``: pixels, a number or ``(sy, sx)`` (required; fit it with
    :func:`fit_erf_gaussian`); ``centres``: ``(ys (h,), xs (w,))`` pixel coordinates, default the receptive-field
    centres of a stride ``H / h`` grid, ``(i + 0.5) H / h - 0.5``. Separable, so it is one ``einsum`` (the same
    as a transposed convolution of ``M`` with a Gaussian kernel on a regular grid).

    ``mode="erf"``: ``S(p) = sum_ij M(i, j) ERF_ij(p)``; ``erf`` ``(B, h*w, H, W)`` (or ``(h*w, H, W)`` shared),
    e.g. :func:`ama.receptive_field.effective_receptive_field` of the same images.
    """
    if mode in RF_UPSAMPLE_MODES:
        return _rf_upsample(maps, size, mode, sigma, centres, erf)
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; use one of {', '.join(UPSAMPLE_MODES + RF_UPSAMPLE_MODES)}")
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must have shape (B, h, w) or (h, w), got {tuple(maps.shape)}")
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    squeeze = maps.ndim == 2
    m = maps.unsqueeze(0) if squeeze else maps
    kwargs = {"align_corners": bool(align_corners)} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(m.unsqueeze(1), size=size, mode=mode, **kwargs).squeeze(1)
    return out.squeeze(0) if squeeze else out


def _hw(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _rf_upsample(maps, size, mode, sigma, centres, erf):
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must have shape (B, h, w) or (h, w), got {tuple(maps.shape)}")
    squeeze = maps.ndim == 2
    m = maps.unsqueeze(0) if squeeze else maps
    B, h, w = m.shape
    H, W = _hw(size)
    if mode == "erf":
        if erf is None:
            raise ValueError("mode='erf' needs erf=(B, h*w, H, W) maps (ama.effective_receptive_field of the images)")
        e = erf.unsqueeze(0).expand(B, -1, -1, -1) if erf.ndim == 3 else erf
        if e.ndim != 4 or e.shape[0] != B or e.shape[1] != h * w or tuple(e.shape[-2:]) != (H, W):
            raise ValueError(f"erf must have shape ({B}, {h * w}, {H}, {W}) (or ({h * w}, {H}, {W})) for maps "
                             f"{tuple(m.shape)} and size {(H, W)}, got {tuple(erf.shape)}")
        out = torch.einsum("bc,bcyx->byx", m.flatten(1), e.to(m.dtype))
    else:
        if sigma is None:
            raise ValueError("mode='gaussian' needs sigma (pixels); fit it to measured ERFs with ama.cam.fit_erf_gaussian")
        sy, sx = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else (float(sigma[0]), float(sigma[1]))
        if not (sy > 0 and sx > 0):
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        if centres is None:  # each cell's centre without aligned corners: (i + 0.5) H / h - 0.5
            from .receptive_field import cell_centres

            c = cell_centres((h, w), (H, W), align_corners=False).double().view(h, w, 2)
            centres = (c[:, 0, 0], c[0, :, 1])
        cy, cx = (torch.as_tensor(c, dtype=torch.float64).reshape(-1) for c in centres)
        if len(cy) != h or len(cx) != w:
            raise ValueError(f"centres must be (ys ({h},), xs ({w},)) for a {h} x {w} map, got {len(cy)} and {len(cx)}")
        gy = torch.exp(-(torch.arange(H, dtype=torch.float64)[None] - cy[:, None]) ** 2 / (2 * sy ** 2))
        gx = torch.exp(-(torch.arange(W, dtype=torch.float64)[None] - cx[:, None]) ** 2 / (2 * sx ** 2))
        out = torch.einsum("bij,iy,jx->byx", m, gy.to(m), gx.to(m))
    return out.squeeze(0) if squeeze else out


def fit_erf_gaussian(erf: torch.Tensor, grid) -> dict:
    """Fit the ``gaussian`` upsampling to measured ERFs ``(B, h*w, H, W)`` (or ``(h*w, H, W)``), each summing to 1.

    Returns ``{"sigma": (sy, sx), "centres": (ys (h,), xs (w,))}``: ``sy**2`` is the mean (over images and cells)
    second central moment of the ERFs along ``y`` (likewise ``sx``); ``ys[i]`` the mean ERF centroid of row ``i``'s
    cells, ``xs[j]`` of column ``j``'s. All-zero ERF maps (dead cells) are left out.
    """
    h, w = _hw(grid)
    e = erf.detach().double()
    e = e.unsqueeze(0) if e.ndim == 3 else e
    if e.ndim != 4 or e.shape[1] != h * w:
        raise ValueError(f"erf must have shape (B, {h * w}, H, W) for a {h} x {w} grid, got {tuple(erf.shape)}")
    B, _, H, W = e.shape
    mass = e.sum((-2, -1))
    live = mass > 0
    p = e / mass.clamp_min(1e-300)[..., None, None]
    py, px = p.sum(-1), p.sum(-2)  # marginals (B, n, H), (B, n, W)
    ys, xs = torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64)
    my, mx = (py * ys).sum(-1), (px * xs).sum(-1)
    vy, vx = (py * (ys - my[..., None]) ** 2).sum(-1), (px * (xs - mx[..., None]) ** 2).sum(-1)
    if not live.any():
        raise ValueError("every ERF map is zero; nothing to fit")
    sigma = (float(vy[live].mean().sqrt()), float(vx[live].mean().sqrt()))
    w_ = live.double().view(B, h, w)
    row = (my.view(B, h, w) * w_).sum((0, 2)) / w_.sum((0, 2)).clamp_min(1)
    col = (mx.view(B, h, w) * w_).sum((0, 1)) / w_.sum((0, 1)).clamp_min(1)
    return {"sigma": sigma, "centres": (row.float(), col.float())}


class _CallableModule(types.ModuleType):
    """``ama.cam`` is this module (``ama.cam.upsample``, ``import ama.cam``) and calls :func:`cam` when called."""

    def __call__(self, model: CAMModel, x: torch.Tensor, target=None, relu: bool = True,
                 normalize: bool = True) -> torch.Tensor:
        return cam(model, x, target, relu, normalize)


sys.modules[__name__].__class__ = _CallableModule
