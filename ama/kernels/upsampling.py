"""Upsampling: how a CAM ``(B, h, w)`` becomes a saliency map ``(B, H, W)``. Everything here is differentiable.

Interpolating modes (:data:`INTERPOLATIONS`): bilinear (corners aligned, as in the reference, or not), nearest,
bicubic, area. Receptive-field-aware modes (:data:`RF_MODES`, ``SCIENCE.md`` section 6): ``gaussian`` paints each
cell with a 2-D Gaussian (peak 1) centred on the cell's receptive-field centre, ``S = sum_ij M(i, j) G_ij``, with a
width fitted to the measured ERFs (:func:`fit_erf_gaussian`); ``erf`` is the exact projection
``S(p) = sum_ij M(i, j) ERF_ij(p)`` with the image's own ERF maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import cell_centres, corners_aligned, pair

__all__ = ["INTERPOLATIONS", "RF_MODES", "MODES", "label", "upsample", "fit_erf_gaussian"]

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
RF_MODES = ("gaussian", "erf")  # receptive-field-aware modes (need sigma / the ERF maps)
MODES = INTERPOLATIONS + RF_MODES


def label(mode: str, align_corners: bool | None = True) -> str:
    """The name tables give an upsampling: ``bilinear-corners``, ``bilinear``, ``bicubic-corners``, ``nearest``..."""
    return f"{mode}{'-corners' if corners_aligned(mode, align_corners) else ''}"


def _batched(maps: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must have shape (B, h, w) or (h, w), got {tuple(maps.shape)}")
    return (maps.unsqueeze(0), True) if maps.ndim == 2 else (maps, False)


def upsample(maps: torch.Tensor, size, mode: str = "bilinear", align_corners: bool | None = True, *,
             sigma=None, centres=None, erf: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample ``(B, h, w)`` (or ``(h, w)``) maps to ``size`` ``(H, W)``; differentiable.

    ``mode``: bilinear (``align_corners`` True as in the reference, or False), nearest, bicubic, area.
    ``align_corners`` matters for bilinear and bicubic only. Bicubic can overshoot ``[0, 1]``.

    ``mode="gaussian"``: ``S = sum_ij M(i, j) G_ij``, ``G_ij(y, x) = exp(-(y - cy_i)^2 / 2 sy^2 - (x - cx_j)^2 / 2 sx^2)``
    (peak 1, not renormalised). ``sigma``: pixels, a number or ``(sy, sx)`` (required; fit it with
    :func:`fit_erf_gaussian`); ``centres``: ``(ys (h,), xs (w,))`` pixel coordinates, default the receptive-field
    centres of a stride ``H / h`` grid, ``(i + 0.5) H / h - 0.5``. Separable, so it is one ``einsum`` (the same
    as a transposed convolution of ``M`` with a Gaussian kernel on a regular grid).

    ``mode="erf"``: ``S(p) = sum_ij M(i, j) ERF_ij(p)``; ``erf`` ``(B, h*w, H, W)`` (or ``(h*w, H, W)`` shared),
    e.g. :func:`ama.kernels.receptive_field.effective_receptive_field` of the same images.
    """
    if mode not in MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; use one of {', '.join(MODES)}")
    m, squeeze = _batched(maps)
    H, W = pair(size)
    if mode == "erf":
        out = _erf_projection(m, (H, W), erf)
    elif mode == "gaussian":
        out = _gaussian(m, (H, W), sigma, centres)
    else:
        kwargs = {"align_corners": corners_aligned(mode, align_corners)} if mode in ("bilinear", "bicubic") else {}
        out = F.interpolate(m.unsqueeze(1), size=(H, W), mode=mode, **kwargs).squeeze(1)
    return out.squeeze(0) if squeeze else out


def _erf_projection(m, size, erf):
    B, h, w = m.shape
    H, W = size
    if erf is None:
        raise ValueError("mode='erf' needs erf=(B, h*w, H, W) maps (ama.effective_receptive_field of the images)")
    e = erf.unsqueeze(0).expand(B, -1, -1, -1) if erf.ndim == 3 else erf
    if e.ndim != 4 or e.shape[0] != B or e.shape[1] != h * w or tuple(e.shape[-2:]) != (H, W):
        raise ValueError(f"erf must have shape ({B}, {h * w}, {H}, {W}) (or ({h * w}, {H}, {W})) for maps "
                         f"{tuple(m.shape)} and size {(H, W)}, got {tuple(erf.shape)}")
    return torch.einsum("bc,bcyx->byx", m.flatten(1), e.to(m.dtype))


def _gaussian(m, size, sigma, centres):
    _, h, w = m.shape
    H, W = size
    if sigma is None:
        raise ValueError("mode='gaussian' needs sigma (pixels); fit it to measured ERFs with "
                         "ama.kernels.upsampling.fit_erf_gaussian")
    sy, sx = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else (float(sigma[0]), float(sigma[1]))
    if not (sy > 0 and sx > 0):
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if centres is None:  # each cell's centre without aligned corners: (i + 0.5) H / h - 0.5
        c = cell_centres((h, w), (H, W), align_corners=False).double().view(h, w, 2)
        centres = (c[:, 0, 0], c[0, :, 1])
    cy, cx = (torch.as_tensor(c, dtype=torch.float64).reshape(-1) for c in centres)
    if len(cy) != h or len(cx) != w:
        raise ValueError(f"centres must be (ys ({h},), xs ({w},)) for a {h} x {w} map, got {len(cy)} and {len(cx)}")
    gy = torch.exp(-(torch.arange(H, dtype=torch.float64)[None] - cy[:, None]) ** 2 / (2 * sy ** 2))
    gx = torch.exp(-(torch.arange(W, dtype=torch.float64)[None] - cx[:, None]) ** 2 / (2 * sx ** 2))
    return torch.einsum("bij,iy,jx->byx", m, gy.to(m), gx.to(m))


def fit_erf_gaussian(erf: torch.Tensor, grid) -> dict:
    """Fit the ``gaussian`` upsampling to measured ERFs ``(B, h*w, H, W)`` (or ``(h*w, H, W)``), each summing to 1.

    Returns ``{"sigma": (sy, sx), "centres": (ys (h,), xs (w,))}``: ``sy**2`` is the mean (over images and cells)
    second central moment of the ERFs along ``y`` (likewise ``sx``); ``ys[i]`` the mean ERF centroid of row ``i``'s
    cells, ``xs[j]`` of column ``j``'s. All-zero ERF maps (dead cells) are left out.
    """
    h, w = pair(grid)
    e = erf.detach().double()
    e = e.unsqueeze(0) if e.ndim == 3 else e
    if e.ndim != 4 or e.shape[1] != h * w:
        raise ValueError(f"erf must have shape (B, {h * w}, H, W) for a {h} x {w} grid, got {tuple(erf.shape)}")
    B, _, H, W = e.shape
    mass = e.sum((-2, -1))
    live = mass > 0
    if not live.any():
        raise ValueError("every ERF map is zero; nothing to fit")
    p = e / mass.clamp_min(1e-300)[..., None, None]
    py, px = p.sum(-1), p.sum(-2)  # marginals (B, n, H), (B, n, W)
    ys, xs = torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64)
    my, mx = (py * ys).sum(-1), (px * xs).sum(-1)
    vy, vx = (py * (ys - my[..., None]) ** 2).sum(-1), (px * (xs - mx[..., None]) ** 2).sum(-1)
    sigma = (float(vy[live].mean().sqrt()), float(vx[live].mean().sqrt()))
    weight = live.double().view(B, h, w)
    row = (my.view(B, h, w) * weight).sum((0, 2)) / weight.sum((0, 2)).clamp_min(1)
    col = (mx.view(B, h, w) * weight).sum((0, 1)) / weight.sum((0, 1)).clamp_min(1)
    return {"sigma": sigma, "centres": (row.float(), col.float())}
