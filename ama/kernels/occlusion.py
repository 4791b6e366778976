"""Occlusion experiments (``SCIENCE.md`` section 3): without gradients, which pixels move a CAM cell?

The paper does not publish its occlusion protocol; this is the kit's reconstruction:

* **keep-IRF**: for cell ``(i, j)`` fill every pixel *outside* its IRF support; if the IRF were what the cell
  sees, its raw CAM ``R(i, j)`` would not change.
* **occlude-IRF**: fill only the cell's IRF support; the change of ``R(i, j)`` and of the other cells.
* **margin**: fill the ``e``-pixel border; the CAM's change (cosine, Spearman, per-cell ``|delta|``) and,
  separately, the change of interior cells whose IRF never touches the margin.
* **sliding patch** (Zeiler & Fergus): a square patch at each position; how many cells move.
* **occlusion ERF** (:func:`occlusion_erf`, ``SCIENCE.md`` section 8): a gradient-free ERF of every cell, the
  ``|change|`` of its raw CAM when each patch of a grid is filled with the image's mean colour, spread over the
  patch's pixels and normalised to sum 1; the same maps as :func:`ama.effective_receptive_field` gives, so claim 1's
  statistics read either.

Changes of ``R`` are reported relative to the clean raw map's range ``max R - min R`` of that image
(``rel_change``), which stays finite where ``R(i, j)`` itself is near zero. The class is the clean
prediction throughout. Fills (pixel space ``[0, 1]``): ``mean`` (the model's normalisation mean, i.e. zero
after normalisation), ``black``, ``noise`` (uniform, from ``seed``: the same noise image for every image, so
images are compared under the same occluder), ``blur`` (Gaussian blur of the image).
Every experiment batches many occluded copies per forward pass (``batch_size``).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
import torchvision.transforms.functional as TF

from ..criteria import CELL_MOVED
from ..defaults import E, SEED
from ..geometry import cell_kinds, frame_mask, patch_masks, patch_positions
from .cam import compute_cam, normalize_maps
from .cam_model import IMAGENET_MEAN, CAMModel
from .metrics import spearman
from .receptive_field import implicit_receptive_field, irf_support, normalize_mass

__all__ = ["FILLS", "BLUR_SIGMA", "BATCH_SIZE", "SLIDING_PATCH", "OCCLUSION_ERF_PATCH", "fill_images",
           "irf_experiment", "keep_irf", "occlude_irf", "margin_experiment", "sliding_patch", "occlusion_map",
           "occlusion_erf"]

FILLS = ("mean", "black", "noise", "blur")
BLUR_SIGMA = 8.0
BATCH_SIZE = 32        # occluded copies per forward pass
SLIDING_PATCH = 32     # px: the sliding patch's side (one cell of a 7 x 7 CAM at 224 px) and its default stride
OCCLUSION_ERF_PATCH = 16  # px: the occlusion ERF's patch side and stride (a 14 x 14 grid at 224 px)


def fill_images(x: torch.Tensor, fill: str, model: CAMModel | None = None, seed: int = SEED,
                blur_sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """What occluded pixels become: ``(B, 3, H, W)`` in ``[0, 1]`` for images ``x`` ``(B, 3, H, W)``. ``blur_sigma``:
    the Gaussian blur's sigma of the ``blur`` fill, in pixels."""
    if fill == "mean":
        mean = model.mean if model is not None else torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        return mean.to(x).expand_as(x).clone()
    if fill == "black":
        return torch.zeros_like(x)
    if fill == "noise":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(x.shape, generator=g).to(x)
    if fill == "blur":
        k = int(2 * round(3 * blur_sigma) + 1)
        return TF.gaussian_blur(x, [k, k], [blur_sigma, blur_sigma]).clamp(0, 1)
    raise ValueError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")


def _check(model, x, fills, batch_size):
    for f in fills:
        if f not in FILLS:
            raise ValueError(f"unknown fill {f!r}; use one of {', '.join(FILLS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return x.to(model.device).detach()


@torch.no_grad()
def _occluded_raw_maps(model: CAMModel, image: torch.Tensor, filler: torch.Tensor, masks: torch.Tensor,
                       target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Raw CAMs ``(N, h, w)`` of ``image`` ``(3, H, W)`` with ``filler`` where each of ``masks`` ``(N, H, W)`` is
    True; the occluded copies are built one batch at a time, so memory stays bounded by ``batch_size``."""
    out = []
    for s in range(0, len(masks), batch_size):
        copies = torch.where(masks[s:s + batch_size, None], filler, image)
        out.append(compute_cam(model, copies, target[s:s + batch_size], relu=False, normalize=False).raw)
    return torch.cat(out)


def _raw_range(raw: torch.Tensor) -> torch.Tensor:
    """``(B,)`` range ``max R - min R`` of each clean raw map ``(B, h, w)``: the unit of every relative change."""
    flat = raw.flatten(1)
    return (flat.amax(1) - flat.amin(1)).clamp_min(1e-12)


def _names(names, B):
    return list(names) if names is not None else [str(i) for i in range(B)]


def _grid_and_irf(model, x, mode, align_corners):
    H, W = x.shape[-2:]
    grid = model.feature_size((H, W))
    support = irf_support(implicit_receptive_field(grid, (H, W), mode, align_corners)).to(x.device)
    return grid, support


def irf_experiment(model: CAMModel, x: torch.Tensor, names: Sequence[str] | None = None,
                   fills: Sequence[str] = FILLS, cells: Sequence[int] | None = None, keep: bool = True,
                   batch_size: int = BATCH_SIZE, seed: int = SEED, mode: str = "bilinear",
                   align_corners: bool | None = True) -> pd.DataFrame:
    """Keep-IRF (``keep=True``: fill outside the IRF) or occlude-IRF (``keep=False``: fill inside it).

    One row per image x fill x cell: ``delta`` (``R_occ(i, j) - R(i, j)``), ``rel_change`` (``delta`` / the
    clean raw map's range), ``others_mean_abs_rel_change`` (mean ``|delta|`` / range over the other cells),
    ``occluded_share`` (share of pixels filled). ``cells``: default all ``h*w``.
    """
    x = _check(model, x, fills, batch_size)
    B = x.shape[0]
    names = _names(names, B)
    with torch.no_grad():
        clean = compute_cam(model, x)
    (h, w), support = _grid_and_irf(model, x, mode, align_corners)
    cells = list(range(h * w)) if cells is None else [int(c) for c in cells]
    kinds = cell_kinds((h, w))
    rng = _raw_range(clean.raw)
    rows = []
    occluded_mask = torch.stack([~support[c] if keep else support[c] for c in cells])  # (n, H, W) bool
    for b in range(B):
        for fill in fills:
            filler = fill_images(x[b:b + 1], fill, model, seed)[0]
            target = clean.target[b].expand(len(cells))
            raw = _occluded_raw_maps(model, x[b], filler, occluded_mask, target, batch_size).flatten(1)  # (n, h*w)
            delta_all = raw - clean.raw[b].flatten()
            for k, c in enumerate(cells):
                others = torch.cat([delta_all[k, :c], delta_all[k, c + 1:]])
                rows.append(dict(
                    image=names[b], model=model.name, experiment="keep_irf" if keep else "occlude_irf", fill=fill,
                    cell=c, i=c // w, j=c % w, cell_kind=kinds[c], clean_raw=clean.raw[b].flatten()[c].item(),
                    delta=delta_all[k, c].item(), rel_change=(delta_all[k, c] / rng[b]).item(),
                    others_mean_abs_rel_change=(others.abs().mean() / rng[b]).item(),
                    occluded_share=occluded_mask[k].float().mean().item()))
    return pd.DataFrame(rows)


def keep_irf(model, x, names=None, fills=FILLS, cells=None, batch_size=BATCH_SIZE, seed=SEED, **kw) -> pd.DataFrame:
    """Fill everything outside each cell's IRF; see :func:`irf_experiment`."""
    return irf_experiment(model, x, names, fills, cells, True, batch_size, seed, **kw)


def occlude_irf(model, x, names=None, fills=FILLS, cells=None, batch_size=BATCH_SIZE, seed=SEED, **kw) -> pd.DataFrame:
    """Fill each cell's IRF only; see :func:`irf_experiment`."""
    return irf_experiment(model, x, names, fills, cells, False, batch_size, seed, **kw)


def margin_experiment(model: CAMModel, x: torch.Tensor, names: Sequence[str] | None = None,
                      e: Sequence[int] | int = E, fills: Sequence[str] = FILLS, batch_size: int = BATCH_SIZE,
                      seed: int = SEED, mode: str = "bilinear",
                      align_corners: bool | None = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill the ``e``-pixel border. Returns two tables:

    * per image x e x fill: ``cam_cosine``, ``cam_spearman`` (clean vs occluded normalised CAM),
      ``mean_abs_delta`` (mean over cells of ``|delta M|``, normalised CAMs, ``[0, 1]``), ``prediction_changed``,
      and over the interior cells whose IRF does not touch the margin: ``n_interior_cells``,
      ``interior_mean_abs_rel_change``, ``interior_max_abs_rel_change`` (raw-CAM change / range);
    * per image x e x fill x cell: ``abs_delta`` (normalised CAM), ``abs_rel_change`` (raw), ``irf_touches_margin``.
    """
    x = _check(model, x, fills, batch_size)
    B, _, H, W = x.shape
    names = _names(names, B)
    with torch.no_grad():
        clean = compute_cam(model, x)
    (h, w), support = _grid_and_irf(model, x, mode, align_corners)
    rng = _raw_range(clean.raw)
    widths = [e] if isinstance(e, int) else list(e)
    settings = [(w, f) for w in widths for f in fills]
    masks = {w: frame_mask((H, W), w, x.device) for w in widths}
    rows, cell_rows = [], []
    for b in range(B):
        fillers = {f: fill_images(x[b:b + 1], f, model, seed)[0] for f in fills}
        images = torch.stack([torch.where(masks[e], fillers[f], x[b]) for e, f in settings])
        target = clean.target[b].expand(len(settings))
        with torch.no_grad():
            outs = [compute_cam(model, images[s:s + batch_size], target[s:s + batch_size])
                    for s in range(0, len(images), batch_size)]
        cams = torch.cat([o.cam for o in outs])
        raws = torch.cat([o.raw for o in outs])
        preds = torch.cat([o.logits.argmax(1) for o in outs])
        cos = torch.nn.functional.cosine_similarity(cams.flatten(1), clean.cam[b].flatten()[None], dim=1)
        rho = spearman(cams, clean.cam[b].expand_as(cams))
        abs_delta = (cams - clean.cam[b]).abs().flatten(1)                # (S, h*w)
        abs_rel = ((raws - clean.raw[b]).abs() / rng[b]).flatten(1)
        for s, (e, fill) in enumerate(settings):
            touches = (support & masks[e]).flatten(1).any(1)               # (h*w,)
            interior = abs_rel[s][~touches]
            rows.append(dict(
                image=names[b], model=model.name, experiment="margin", fill=fill, e=int(e),
                cam_cosine=cos[s].item(), cam_spearman=rho[s].item(), mean_abs_delta=abs_delta[s].mean().item(),
                prediction_changed=bool(preds[s] != clean.target[b]), n_interior_cells=int((~touches).sum()),
                interior_mean_abs_rel_change=interior.mean().item() if len(interior) else float("nan"),
                interior_max_abs_rel_change=interior.max().item() if len(interior) else float("nan")))
            for c in range(h * w):
                cell_rows.append(dict(image=names[b], model=model.name, fill=fill, e=int(e), cell=c, i=c // w,
                                      j=c % w, abs_delta=abs_delta[s, c].item(), abs_rel_change=abs_rel[s, c].item(),
                                      irf_touches_margin=bool(touches[c])))
    return pd.DataFrame(rows), pd.DataFrame(cell_rows)


def sliding_patch(model: CAMModel, x: torch.Tensor, names: Sequence[str] | None = None, patch: int = SLIDING_PATCH,
                  stride: int = SLIDING_PATCH, fill: str = "mean", batch_size: int = BATCH_SIZE, seed: int = SEED,
                  threshold: float = CELL_MOVED) -> pd.DataFrame:
    """Occlude a ``patch x patch`` square at every ``stride``; one row per image x position: ``top``, ``left``,
    ``n_cells_moved`` (cells whose raw CAM changes by more than ``threshold`` x the range), ``max_abs_rel_change``,
    ``cam_cosine``."""
    x = _check(model, x, [fill], batch_size)
    B, _, H, W = x.shape
    positions = patch_positions((H, W), patch, stride)
    names = _names(names, B)
    with torch.no_grad():
        clean = compute_cam(model, x)
    rng = _raw_range(clean.raw)
    masks = patch_masks((H, W), patch, stride, device=x.device)
    rows = []
    for b in range(B):
        filler = fill_images(x[b:b + 1], fill, model, seed)[0]
        raw = _occluded_raw_maps(model, x[b], filler, masks, clean.target[b].expand(len(positions)), batch_size)
        rel = ((raw - clean.raw[b]).abs() / rng[b]).flatten(1)
        cams = normalize_maps(torch.relu(raw))
        cos = torch.nn.functional.cosine_similarity(cams.flatten(1), clean.cam[b].flatten()[None], dim=1)
        for k, (t, l) in enumerate(positions):
            rows.append(dict(image=names[b], model=model.name, experiment="sliding_patch", fill=fill, patch=patch,
                             top=t, left=l, n_cells_moved=int((rel[k] > threshold).sum()),
                             max_abs_rel_change=rel[k].max().item(), cam_cosine=cos[k].item()))
    return pd.DataFrame(rows)


@torch.no_grad()
def occlusion_map(model: CAMModel, x: torch.Tensor, target, patch: int = SLIDING_PATCH, stride: int = SLIDING_PATCH,
                  fill: str = "mean", batch_size: int = BATCH_SIZE, seed: int = SEED) -> torch.Tensor:
    """A gradient-free explanation (Zeiler & Fergus): at each ``patch`` position (``stride`` apart) the drop of the
    ``target`` class's softmax probability when the patch is filled; ReLU'd and min-max normalised per image like a
    CAM; ``(B, rows, cols)`` in ``[0, 1]`` on the CPU. ``x`` ``(B, 3, H, W)`` in ``[0, 1]``, ``target`` ``(B,)``."""
    x = _check(model, x, [fill], batch_size)
    B, _, H, W = x.shape
    positions = patch_positions((H, W), patch, stride)
    rows = len({t for t, _ in positions})
    masks = patch_masks((H, W), patch, stride, device=x.device)
    target = torch.as_tensor(target).long().reshape(-1).to(x.device)
    if len(target) != B:
        raise ValueError(f"need one target class per image: {len(target)} classes for {B} images")
    drops = torch.empty(B, len(positions))
    for b in range(B):
        filler = fill_images(x[b:b + 1], fill, model, seed)[0]
        clean = torch.softmax(model(x[b:b + 1]), 1)[0, target[b]]
        for s in range(0, len(masks), batch_size):
            copies = torch.where(masks[s:s + batch_size, None], filler, x[b])
            drops[b, s:s + len(copies)] = (clean - torch.softmax(model(copies), 1)[:, target[b]]).cpu()
    return normalize_maps(torch.relu(drops.view(B, rows, -1)))


def _covering_patches(size, patch: int, device=None) -> torch.Tensor:
    """``(P, H, W)`` bool: ``patch x patch`` squares at stride ``patch`` covering every pixel (the last row and column
    of squares flush with the bottom and right edges)."""
    H, W = size
    patch_positions((H, W), patch, patch)  # checks the patch
    tops, lefts = ([*range(0, n - patch + 1, patch)] for n in (H, W))
    tops += [H - patch] if tops[-1] + patch < H else []
    lefts += [W - patch] if lefts[-1] + patch < W else []
    masks = torch.zeros(len(tops) * len(lefts), H, W, dtype=torch.bool, device=device)
    for k, (t, l) in enumerate((t, l) for t in tops for l in lefts):
        masks[k, t:t + patch, l:l + patch] = True
    return masks


@torch.no_grad()
def occlusion_erf(model: CAMModel, x: torch.Tensor, patch: int = OCCLUSION_ERF_PATCH, batch_size: int = BATCH_SIZE,
                  target=None) -> torch.Tensor:
    """Gradient-free ERF of every cell of the raw CAM: ``(B, h*w, H, W)``, each map summing to 1 (all zero where no
    patch moves the cell). For each ``patch x patch`` square of the grid (stride ``patch``;
    the last row and column flush with the edge where ``patch`` does not divide the side), the cell's ``|R_occluded -
    R|`` with the square filled by the image's own mean colour, spread evenly over the square's pixels: so a map's
    mass outside the IRF counts each patch by the share of its pixels outside (``SCIENCE.md`` section 8).
    ``x`` ``(B, 3, H, W)`` in ``[0, 1]``; ``target``: class per image (default the prediction, as in :func:`ama.kernels.cam`)."""
    x = _check(model, x, ["mean"], batch_size)
    B, _, H, W = x.shape
    masks = _covering_patches((H, W), patch, x.device)                    # (P, H, W)
    spread = masks.float() / masks.flatten(1).sum(1).clamp_min(1)[:, None, None]
    clean = compute_cam(model, x, target)
    h, w = clean.raw.shape[-2:]
    out = torch.empty(B, h * w, H, W, dtype=x.dtype, device=x.device)
    for b in range(B):
        filler = x[b].mean((1, 2), keepdim=True).expand_as(x[b])          # the image's mean colour
        raw = _occluded_raw_maps(model, x[b], filler, masks, clean.target[b].expand(len(masks)), batch_size)
        change = (raw - clean.raw[b]).abs().flatten(1)                    # (P, h*w)
        out[b] = torch.einsum("pn,phw->nhw", change, spread)
    return normalize_mass(out)
