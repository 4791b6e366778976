"""Receptive fields of CAM cells (``SCIENCE.md`` section 2).

* **IRF** (implicit): where the upsampling paints cell ``(i, j)``: ``dS/dM(i, j)``, exactly the
  upsampling of a one-hot ``h x w`` map; ``(h*w, H, W)``.
* **ERF** (effective, Luo et al. 2016): ``sum_channels |dR_c(i, j)/dx|``, normalised to sum 1 per cell;
  ``(B, h*w, H, W)``: one forward pass per batch of images, then one backward pass per cell.
* **Theoretical RF**: the architecture's receptive field size in pixels, from kernels, strides, dilations.
* :func:`misalignment`: one tidy row per cell comparing the two.

Cells are numbered row-major: cell ``k`` is ``(k // w, k % w)``.
"""
from __future__ import annotations

import numbers

import pandas as pd
import torch
import torch.nn as nn

from ..geometry import cell_centres, cell_kinds, centre_cell, corners_aligned, frame_mask, frame_sides, grid_side, pair
from .cam import compute_cam
from .cam_model import CAMModel
from .upsampling import label, upsample

__all__ = ["SUPPORT_EPS", "implicit_receptive_field", "irf_support", "effective_receptive_field", "normalize_mass",
           "theoretical_receptive_field", "erf_centroid", "erf_extent", "irf_width", "erf_spread",
           "gaussian_mass_outside", "gaussian_centroid", "recentred_mass_outside", "erf_ranks", "misalignment", "misalignment_table",
           "MISALIGNMENT_MEASURES", "misalignment_summary", "margin_mass_ratio_long", "margin_mass_ratio_summary"]

SUPPORT_EPS = 1e-6


# --- implicit receptive field ---------------------------------------------------------------
def implicit_receptive_field(grid=(7, 7), size=(224, 224), mode: str = "bilinear",
                             align_corners: bool | None = True) -> torch.Tensor:
    """IRF of every cell: ``(h*w, H, W)``, the upsampling of each one-hot ``h x w`` map (exact)."""
    h, w = pair(grid)
    one_hot = torch.eye(h * w, dtype=torch.float64).view(h * w, h, w)
    return upsample(one_hot, pair(size), mode, align_corners).float()


def irf_support(irf: torch.Tensor, eps: float = SUPPORT_EPS) -> torch.Tensor:
    """Boolean support of IRF maps (same shape): the pixels a cell's value reaches. ``eps``: a pixel counts when its IRF
    weight exceeds it."""
    return irf.abs() > eps


# --- effective receptive field --------------------------------------------------------------
def effective_receptive_field(model: CAMModel, x: torch.Tensor, target=None, batch_size: int | None = None,
                              cells=None) -> torch.Tensor:
    """ERF of every cell of the raw CAM ``R_c``: ``(B, n_cells, H, W)``, each map summing to 1.

    One forward pass per ``batch_size`` images (default all ``B``), then one backward pass per cell through the
    retained graph, ``d R[:, cell] / d x`` for every image at once: the model is in eval mode, so images do not
    interact and each image's input gradient is its own. A cell whose gradient is zero everywhere (dead ReLUs)
    gets an all-zero map, never NaN. ``cells``: indices (default all ``h*w``). ``target``: class per image
    (default the prediction on ``x``), as in :func:`ama.kernels.cam`.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("ama.effective_receptive_field needs autograd (input gradients): call it outside "
                           "torch.inference_mode() (torch.no_grad() around it is fine)")
    x = x.to(model.device).detach()
    B, _, H, W = x.shape
    with torch.no_grad():
        clean = compute_cam(model, x, target)
    c = clean.target
    h, w = clean.raw.shape[-2:]
    cells = torch.arange(h * w) if cells is None else torch.as_tensor(cells).long().reshape(-1)
    if (cells < 0).any() or (cells >= h * w).any():
        raise ValueError(f"cells must be indices in [0, {h * w - 1}] of the {h} x {w} CAM")
    batch_size = int(batch_size or B)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = torch.empty(B, len(cells), H, W, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        for start in range(0, B, batch_size):
            part = x[start:start + batch_size].clone().requires_grad_(True)
            raw = compute_cam(model, part, c[start:start + batch_size], relu=False, normalize=False).raw.flatten(1)
            for k, cell in enumerate(cells.tolist()):
                (grad,) = torch.autograd.grad(raw[:, cell].sum(), part, retain_graph=k < len(cells) - 1)
                out[start:start + len(part), k] = grad.abs().sum(1)
    return normalize_mass(out)


def normalize_mass(maps: torch.Tensor) -> torch.Tensor:
    """Scale each ``(H, W)`` map of ``(..., H, W)`` to sum 1; an all-zero map stays zero."""
    total = maps.sum(dim=(-2, -1), keepdim=True)
    return torch.where(total > 0, maps / total.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


# --- theoretical receptive field ------------------------------------------------------------
_BRANCH_NAMES = ("downsample", "shortcut", "skip")


def theoretical_receptive_field(model: CAMModel | nn.Module) -> int:
    """Theoretical receptive field (pixels, one side) of a feature-map cell, from the kernels, strides and
    dilations of the convolutions and poolings along the main path, in registration order.

    Shortcut branches (modules named ``downsample``/``shortcut``/``skip``) run beside the main path and
    are skipped; an architecture whose modules are not registered in execution order is not supported.
    """
    net = model.backbone if isinstance(model, CAMModel) else model
    rf, jump = 1, 1
    for name, m in net.named_modules():
        if any(part in _BRANCH_NAMES for part in name.split(".")):
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = pair(m.kernel_size)[0]
            s = pair(m.stride)[0]
            d = pair(getattr(m, "dilation", 1))[0]
            rf += (k - 1) * d * jump
            jump *= s
    return rf


# --- ERF centroid and extent, IRF width ----------------------------------------------------------
def erf_centroid(erf: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(..., 2)`` as pixel coordinates ``(y, x)`` of ERF maps ``(..., H, W)``; NaN for an all-zero map."""
    erf = erf.float()
    H, W = erf.shape[-2:]
    ys = torch.arange(H, device=erf.device, dtype=torch.float32)
    xs = torch.arange(W, device=erf.device, dtype=torch.float32)
    mass = erf.sum((-2, -1))
    safe = torch.where(mass > 0, mass, torch.full_like(mass, float("nan")))
    return torch.stack([(erf.sum(-1) * ys).sum(-1) / safe, (erf.sum(-2) * xs).sum(-1) / safe], dim=-1)


def erf_extent(erf: torch.Tensor, share: float = 0.9, center=None) -> torch.Tensor:
    """Side in pixels of the smallest square centred on ``center`` (default the image centre) that holds ``share``
    of each ERF map's mass; ``erf`` ``(..., H, W)`` summing to 1 -> ``(...)`` even pixel counts (the whole image's
    side rounded up to even when even the image holds less, e.g. for an all-zero map)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    H, W = erf.shape[-2:]
    cy, cx = (H // 2, W // 2) if center is None else (int(center[0]), int(center[1]))
    radii = torch.arange(1, max(H, W) // 2 + 1, device=erf.device)
    mass = torch.stack([erf[..., max(0, cy - r):cy + r, max(0, cx - r):cx + r].sum((-2, -1)) for r in radii.tolist()], -1)
    reached = mass >= share - 1e-6
    first = torch.where(reached.any(-1), reached.float().argmax(-1), torch.full_like(reached[..., 0], len(radii) - 1,
                                                                                       dtype=torch.long))
    return (2 * radii[first]).float()


def irf_width(grid=(7, 7), size=(224, 224), cell: int | None = None, mode: str = "bilinear",
              align_corners: bool | None = True) -> int:
    """Width in pixels of one cell's IRF support (default the centre cell), along the image's columns. ``cell``: the
    cell's index, row-major."""
    h, w = pair(grid)
    cell = centre_cell((h, w)) if cell is None else int(cell)
    return int(irf_support(implicit_receptive_field((h, w), size, mode, align_corners))[cell].any(0).sum())


def erf_spread(erf: torch.Tensor) -> torch.Tensor:
    """Standard deviation ``(..., 2)`` in pixels along ``(y, x)`` of ERF maps ``(..., H, W)`` summing to 1, about
    their own centroid (:func:`erf_centroid`); NaN for an all-zero map."""
    erf = erf.float()
    H, W = erf.shape[-2:]
    centroid = erf_centroid(erf)
    ys = torch.arange(H, device=erf.device, dtype=torch.float32)
    xs = torch.arange(W, device=erf.device, dtype=torch.float32)
    var_y = (erf.sum(-1) * (ys - centroid[..., :1]) ** 2).sum(-1)
    var_x = (erf.sum(-2) * (xs - centroid[..., 1:]) ** 2).sum(-1)
    return torch.stack([var_y, var_x], -1).sqrt()


def recentred_mass_outside(erf: torch.Tensor, support: torch.Tensor, centroid: torch.Tensor,
                           centres: torch.Tensor) -> torch.Tensor:
    """Claim 1's re-centred null: the mass outside each cell's IRF ``support`` ``(n, H, W)`` of the measured ERF ``(B,
    n, H, W)`` shifted by whole pixels so that its ``centroid`` ``(B, n, 2)`` lands on the cell's centre ``centres``
    ``(n, 2)`` (what falls off the image is dropped, the rest renormalised): the ERF's own shape and noise without its
    offset, where the Gaussian null is a noiseless shape. ``(B, n)``; NaN for an all-zero map."""
    B, n, H, W = erf.shape
    shift = (centres[None] - centroid).round()
    out = torch.full((B, n), float("nan"), device=erf.device)
    for b in range(B):
        for k in range(n):
            if not torch.isfinite(shift[b, k]).all():
                continue
            dy, dx = int(shift[b, k, 0]), int(shift[b, k, 1])
            moved = torch.zeros_like(erf[b, k])
            moved[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
                erf[b, k, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
            total = moved.sum()
            if total > 0:
                out[b, k] = (moved * (~support[k])).sum() / total
    return out


def gaussian_mass_outside(support: torch.Tensor, centres: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Claim 1's width-only baseline: the mass outside each cell's IRF ``support`` ``(n, H, W)`` of an axis-aligned
    Gaussian centred on the cell's centre ``centres`` ``(n, 2)`` with standard deviations ``spread`` ``(..., n, 2)``
    (the ERF's own, :func:`erf_spread`), restricted to the image and normalised; ``(..., n)`` in ``[0, 1]``."""
    H, W = support.shape[-2:]
    ys = torch.arange(H, device=support.device, dtype=torch.float32)
    xs = torch.arange(W, device=support.device, dtype=torch.float32)
    sd = spread.clamp_min(1e-3)
    gy = torch.exp(-0.5 * ((ys - centres[:, :1]) / sd[..., :1]) ** 2)     # (..., n, H)
    gx = torch.exp(-0.5 * ((xs - centres[:, 1:]) / sd[..., 1:]) ** 2)     # (..., n, W)
    inside = torch.einsum("...kh,khw,...kw->...k", gy, support.float(), gx)
    return 1 - inside / (gy.sum(-1) * gx.sum(-1))


def gaussian_centroid(size, centres: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """The centroid ``(..., n, 2)`` (row, column) of the Gaussians of :func:`gaussian_mass_outside` (centred on
    ``centres`` ``(n, 2)`` with standard deviations ``spread`` ``(..., n, 2)``) cut to the image ``size`` ``(H, W)``
    and renormalised: at the centre well inside the image, pulled inwards near its edge."""
    H, W = size
    ys = torch.arange(H, device=centres.device, dtype=torch.float32)
    xs = torch.arange(W, device=centres.device, dtype=torch.float32)
    sd = spread.clamp_min(1e-3)
    gy = torch.exp(-0.5 * ((ys - centres[:, :1]) / sd[..., :1]) ** 2)     # (..., n, H)
    gx = torch.exp(-0.5 * ((xs - centres[:, 1:]) / sd[..., 1:]) ** 2)     # (..., n, W)
    return torch.stack([(gy * ys).sum(-1) / gy.sum(-1), (gx * xs).sum(-1) / gx.sum(-1)], -1)


# --- misalignment ---------------------------------------------------------------------------
def erf_ranks(erf: torch.Tensor) -> torch.Tensor:
    """``(B, n, H*W)``: each pixel's rank in its ERF map ``(B, n, H, W)``, 0 for the largest (the top-q IoU's
    ordering; computed once, it serves every IRF the same maps are compared with)."""
    flat = erf.float().flatten(2)
    order = flat.argsort(dim=2, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(2, order, torch.arange(flat.shape[-1], device=erf.device).expand_as(order))
    return ranks


def misalignment(erf: torch.Tensor, irf: torch.Tensor, e=1, align_corners: bool | None = True,
                 cells=None, grid=None, ranks: torch.Tensor | None = None) -> pd.DataFrame:
    """One tidy row per (image, cell) comparing ERF ``(B, n, H, W)`` or ``(n, H, W)`` with IRF ``(h*w, H, W)``.

    Columns: ``image`` (batch index), ``cell``, ``i``, ``j``, ``cell_kind``, ``erf_mass_outside_irf`` (ERF mass
    off the IRF support, ``[0, 1]``), ``centroid_distance_px`` (ERF centroid to the cell's centre in the
    upsampled map), ``margin_mass_ratio`` (ERF mass in the ``e``-pixel border / the border's share of the
    image; > 1: the border moves the cell more than its area suggests), ``side_mass_ratio_<side>`` (the same for
    each side of that border, :func:`ama.geometry.frame_sides`: its ERF mass / its share of the image), ``top_q_iou`` (IoU of the ``q`` pixels of
    largest ERF with the IRF support, ``q`` the support's area), ``irf_support_px``; the baselines of the first measure: ``uniform_mass_outside_irf`` (a flat ERF,
    ``1 - irf_support_px / (H W)``) and ``centred_gaussian_mass_outside_irf`` (a Gaussian of the ERF's own spread
    centred on the cell, :func:`gaussian_mass_outside`: what the width alone gives, without the offset; claim 1's
    aligned null), ``recentred_mass_outside_irf`` (the measured ERF shifted onto the cell's centre,
    :func:`recentred_mass_outside`: its own shape and noise without the offset), ``offset_x_px`` / ``offset_y_px`` (the
    ERF centroid minus the cell's centre; positive: right / down) and ``null_centroid_distance_px`` (that Gaussian's centroid to the cell's centre, non-zero where the
    image cuts it: :func:`gaussian_centroid`); for several
    ``e`` (a sequence)
    ``margin_mass_ratio`` is the first one's and ``margin_mass_ratio_e<e>`` columns follow for each.
    ``cells``: which IRF cells the ERF maps are of (default all, in order); ``grid``: ``(h, w)`` (default square);
    ``ranks``: :func:`erf_ranks` of ``erf`` when already computed.
    """
    widths = [e] if isinstance(e, numbers.Integral) else list(e)
    erf = erf.unsqueeze(0) if erf.ndim == 3 else erf
    B, n, H, W = erf.shape
    hw = irf.shape[0]
    cells = torch.arange(hw) if cells is None else torch.as_tensor(cells).long().reshape(-1)
    if len(cells) != n:
        raise ValueError(f"erf has {n} maps per image but {len(cells)} cells were named")
    if irf.shape[-2:] != (H, W):
        raise ValueError(f"erf maps are {H} x {W} but irf maps are {tuple(irf.shape[-2:])}")
    if grid is None:
        side = grid_side(hw)
        grid = (side, side)
    h, w = pair(grid)
    if h * w != hw:
        raise ValueError(f"grid {h} x {w} does not match the {hw} irf maps")
    support = irf_support(irf[cells]).to(erf.device)                      # (n, H, W)
    kinds = cell_kinds(grid)
    centres = cell_centres(grid, (H, W), align_corners)[cells].to(erf.device)  # (n, 2)
    borders = {w_: frame_mask((H, W), w_, erf.device) for w_ in widths}

    erf = erf.float()
    mass = erf.sum((-2, -1))                                               # (B, n), 1 or 0
    outside = (erf * (~support)).sum((-2, -1))
    centroid = erf_centroid(erf)                                           # (B, n, 2)
    dist = (centroid - centres).norm(dim=-1)
    spread = erf_spread(erf)
    gaussian = gaussian_mass_outside(support, centres, spread)             # (B, n)
    recentred = recentred_mass_outside(erf, support, centroid, centres)    # (B, n)
    offset = centroid - centres                                            # (B, n, 2): (y, x), + is down / right
    null_dist = (gaussian_centroid((H, W), centres, spread) - centres).norm(dim=-1)
    uniform = 1 - support.flatten(1).float().mean(1)                       # (n,)
    margin_ratio = {w_: (erf * m).sum((-2, -1)) / m.float().mean() for w_, m in borders.items()}
    side_ratio = {side: (erf * m).sum((-2, -1)) / m.float().mean()
                  for side, m in frame_sides((H, W), widths[0], erf.device).items()}
    q = support.flatten(1).sum(1)                                          # (n,)
    ranks = erf_ranks(erf) if ranks is None else ranks
    top = ranks < q[None, :, None]
    sup = support.flatten(1)[None]
    inter = (top & sup).sum(2).float()
    union = (top | sup).sum(2).float()
    iou = inter / union.clamp_min(1)

    rows = []
    for b in range(B):
        for k, cell in enumerate(cells.tolist()):
            empty = mass[b, k] == 0
            rows.append(dict(
                image=b, cell=cell, i=cell // w, j=cell % w, cell_kind=kinds[cell],
                erf_mass_outside_irf=float("nan") if empty else outside[b, k].item(),
                uniform_mass_outside_irf=uniform[k].item(),
                centred_gaussian_mass_outside_irf=float("nan") if empty else gaussian[b, k].item(),
                recentred_mass_outside_irf=float("nan") if empty else recentred[b, k].item(),
                offset_x_px=float("nan") if empty else offset[b, k, 1].item(),
                offset_y_px=float("nan") if empty else offset[b, k, 0].item(),
                centroid_distance_px=float("nan") if empty else dist[b, k].item(),
                null_centroid_distance_px=float("nan") if empty else null_dist[b, k].item(),
                margin_mass_ratio=float("nan") if empty else margin_ratio[widths[0]][b, k].item(),
                top_q_iou=float("nan") if empty else iou[b, k].item(),
                irf_support_px=int(q[k]),
                **{f"side_mass_ratio_{side}": float("nan") if empty else r[b, k].item() for side, r in side_ratio.items()},
            ))
    table = pd.DataFrame(rows)
    if not isinstance(e, numbers.Integral):
        empty = (mass == 0).flatten().cpu()
        for w_ in widths:
            table[f"margin_mass_ratio_e{w_}"] = margin_ratio[w_].flatten().cpu().masked_fill(empty, float("nan")).tolist()
    return table


def misalignment_table(model: CAMModel, x: torch.Tensor, names=None, e=(1,), mode: str = "bilinear",
                       align_corners: bool | None = True, batch_size: int | None = None,
                       erf: torch.Tensor | None = None, ranks: torch.Tensor | None = None) -> pd.DataFrame:
    """ERF of every cell of every image of ``x`` vs the IRF: :func:`misalignment` rows with ``image`` names,
    ``model``, ``upsampling``, and one ``margin_mass_ratio_e<e>`` column per frame width ``e``. ``erf`` (and its
    :func:`erf_ranks`): maps already computed by :func:`effective_receptive_field` for ``x`` (to compare upsamplings
    without recomputing). ``ranks``: :func:`erf_ranks` of ``erf``."""
    if erf is None:
        erf = effective_receptive_field(model, x, batch_size=batch_size)
    H, W = x.shape[-2:]
    h, w = model.feature_size((H, W))
    irf = implicit_receptive_field((h, w), (H, W), mode, align_corners)
    widths = [e] if isinstance(e, numbers.Integral) else list(e)
    table = misalignment(erf, irf, e=widths, align_corners=corners_aligned(mode, align_corners), grid=(h, w),
                         ranks=ranks)
    names = list(names) if names is not None else [str(i) for i in range(x.shape[0])]
    table["image"] = [names[b] for b in table.image]
    table.insert(1, "model", model.name)
    table.insert(2, "upsampling", label(mode, align_corners))
    return table


MISALIGNMENT_MEASURES = ("erf_mass_outside_irf", "centroid_distance_px", "margin_mass_ratio", "top_q_iou")


def misalignment_summary(table: pd.DataFrame, measures=MISALIGNMENT_MEASURES) -> pd.DataFrame:
    """Mean and standard deviation of each measure per ``model`` and ``cell_kind``, plus ``cell_kind == "all"``;
    columns ``<measure>_mean``, ``<measure>_std``. ``table``: rows of :func:`misalignment_table`. ``measures``: the
    columns summarised."""
    measures = [m for m in measures if m in table.columns]
    by_kind = table.groupby(["model", "cell_kind"])[measures].agg(["mean", "std"])
    overall = table.assign(cell_kind="all").groupby(["model", "cell_kind"])[measures].agg(["mean", "std"])
    out = pd.concat([by_kind, overall]).sort_index()
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out.reset_index()


def margin_mass_ratio_long(table: pd.DataFrame) -> pd.DataFrame:
    """The ``margin_mass_ratio_e<e>`` columns of :func:`misalignment_table` rows as one long table: ``model, image,
    cell_kind, e, ratio`` (one row per image x cell x e)."""
    cols = [c for c in table.columns if c.startswith("margin_mass_ratio_e")]
    long = table.melt(id_vars=["model", "image", "cell_kind"], value_vars=cols, var_name="e", value_name="ratio")
    long["e"] = long.e.str.removeprefix("margin_mass_ratio_e").astype(int)
    return long


def margin_mass_ratio_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the margin mass ratio per ``model``, ``cell_kind`` and ``e``."""
    long = margin_mass_ratio_long(table)
    return long.groupby(["model", "cell_kind", "e"]).ratio.agg(["mean", "std"]).reset_index()
