"""Grid and pixel geometry: frame widths, pixel masks, CAM cells. Imports nothing else from ``ama``.

Pixel masks are boolean ``(H, W)`` tensors (True = the pixels a mask selects). CAM cells are numbered
row-major: cell ``k`` of an ``h x w`` grid is ``(k // w, k % w)``.

The frame-width rule lives here (:func:`check_frame_width`); :mod:`ama.params` reads it before the kit's
environment exists (``python3 ama/params.py`` from the Makefile), so this module needs only the standard
library to import; torch is imported by the first function that builds a tensor.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["CELL_KINDS", "pair", "is_int", "check_frame_width", "corners_aligned", "frame_mask", "frame_pixels",
           "side_mask", "FRAME_SIDES", "frame_sides", "corner_mask", "depth_map", "ring_mask", "strip_mask",
           "centred_square_mask", "random_pixels_mask", "LOCATION_DEPTHS", "location_masks", "patch_positions",
           "patch_masks", "cell_stride", "cell_centres", "cell_kinds", "centre_cell", "representative_cells",
           "lattice_cells", "grid_side"]


class _Torch:
    """torch, imported on first use: :mod:`ama.params` (and so every pipeline process, and ``python3 ama/params.py``
    before ``.venv`` exists) reads the frame-width rule without importing torch (seconds)."""

    def __getattr__(self, name):
        import torch as module

        globals()["torch"] = module
        return getattr(module, name)


torch = _Torch()

CELL_KINDS = ("corner", "edge", "interior", "centre")  # the order tables and figures show cell kinds in


def pair(v) -> tuple[int, int]:
    """``(a, b)`` from an int ``a`` (square) or a pair. ``v``: an int or a pair of ints."""
    return (int(v), int(v)) if isinstance(v, numbers.Integral) else (int(v[0]), int(v[1]))


def is_int(v) -> bool:
    """A Python or numpy integer (``numbers.Integral``), not a bool. ``v``: any value."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_frame_width(e, size=None) -> int:
    """``e`` as an ``int``: a positive integer (numpy integers too, not bool) and, when the image ``size``
    ``(H, W)`` (or an int) is given, below half its smaller side. One message for every use of ``e``."""
    side = None if size is None else (int(size) if isinstance(size, numbers.Integral) else min(pair(size)))
    ok = is_int(e) and e >= 1 and (side is None or 2 * int(e) < side)
    if not ok:
        limit = f" below half the smaller image side ({side} px), i.e. 1..{(side - 1) // 2}" if side else ""
        raise ValueError(f"e (the frame width in pixels) must be a positive integer{limit}, got {e!r}")
    return int(e)


def corners_aligned(mode: str, align_corners: bool | None) -> bool:
    """Whether an upsampling ``mode`` places the cells with aligned corners: only ``bilinear`` and ``bicubic`` take
    the option; every other mode (nearest, area, gaussian, erf) centres cell ``i`` at ``(i + 0.5) H / h - 0.5``."""
    return bool(align_corners) and mode in ("bilinear", "bicubic")


# --- pixel masks -------------------------------------------------------------------------------------
def frame_mask(size=(224, 224), e: int = 1, device=None) -> "torch.Tensor":
    """The ``e``-pixel frame: top and bottom ``e`` rows, left and right ``e`` columns; ``(H, W)`` bool."""
    H, W = pair(size)
    e = check_frame_width(e, (H, W))
    m = torch.ones(H, W, dtype=torch.bool, device=device)
    m[e:H - e, e:W - e] = False
    return m


def frame_pixels(size, e: int) -> int:
    """Number of pixels of the ``e``-pixel frame of an ``H x W`` image: ``2 e (H + W) - 4 e^2``."""
    H, W = pair(size)
    e = check_frame_width(e, (H, W))
    return 2 * e * (H + W) - 4 * e * e


def side_mask(size, e: int = 1, side: str = "top", device=None) -> "torch.Tensor":
    """One ``e``-pixel side of the image: ``top``, ``bottom``, ``left`` or ``right``; ``(H, W)`` bool. ``side``: which
    side."""
    H, W = pair(size)
    e = check_frame_width(e, (H, W))
    rows_cols = {"top": (slice(0, e), slice(None)), "bottom": (slice(H - e, H), slice(None)),
                 "left": (slice(None), slice(0, e)), "right": (slice(None), slice(W - e, W))}
    if side not in rows_cols:
        raise ValueError(f"unknown side {side!r}; use top, bottom, left or right")
    m = torch.zeros(H, W, dtype=torch.bool, device=device)
    m[rows_cols[side]] = True
    return m


FRAME_SIDES = ("left", "right", "top", "bottom")  # the frame's sides; a corner belongs to the first listed that holds it


def frame_sides(size, e: int = 1, device=None) -> dict:
    """The ``e``-pixel frame split into its sides, ``{side: (H, W) bool}`` in :data:`FRAME_SIDES` order: ``left`` and
    ``right`` are full columns, ``top`` and ``bottom`` the rows between them (each corner counted once, on the side
    listed first), so the four masks partition :func:`frame_mask`."""
    H, W = pair(size)
    e = check_frame_width(e, (H, W))
    masks = {side: side_mask((H, W), e, side, device) for side in FRAME_SIDES}
    for side in ("top", "bottom"):
        masks[side][:, :e] = False
        masks[side][:, W - e:] = False
    return masks


def corner_mask(size, k: int = 8, device=None) -> "torch.Tensor":
    """The four ``k x k`` corner squares; ``(H, W)`` bool."""
    H, W = pair(size)
    if not is_int(k) or k < 1 or 2 * k > min(H, W):
        raise ValueError(f"corner size k must be a positive integer of at most half the smaller side, got {k!r}")
    m = torch.zeros(H, W, dtype=torch.bool, device=device)
    for rows in (slice(0, k), slice(H - k, H)):
        for cols in (slice(0, k), slice(W - k, W)):
            m[rows, cols] = True
    return m


def _first_pixels(key: "torch.Tensor", n: int, device=None) -> "torch.Tensor":
    """The ``n`` pixels of smallest ``key`` ``(H, W)`` (ties broken in row-major order); ``(H, W)`` bool."""
    H, W = key.shape
    if not is_int(n) or not 1 <= n <= H * W:
        raise ValueError(f"a mask needs between 1 and {H * W} pixels, got {n!r}")
    order = torch.sort(key.flatten(), stable=True).indices[:n]
    m = torch.zeros(H * W, dtype=torch.bool)
    m[order] = True
    return m.view(H, W).to(device)


def depth_map(size) -> "torch.Tensor":
    """``(H, W)`` long: each pixel's distance in pixels to the nearest image border (0 on the 1-pixel frame)."""
    H, W = pair(size)
    ys, xs = torch.arange(H).view(H, 1), torch.arange(W).view(1, W)
    return torch.minimum(torch.minimum(ys, H - 1 - ys), torch.minimum(xs, W - 1 - xs))


def ring_mask(size, n: int, depth: int, device=None) -> "torch.Tensor":
    """``n`` pixels forming a ring ``depth`` px inside the border: the pixels of depth ``depth``, then ``depth + 1``,
    ... (the last ring partly, row-major) until ``n``; ``(H, W)`` bool. ``depth=0`` with ``n`` the frame's pixel
    count is the frame itself."""
    d = depth_map(size)
    if not is_int(depth) or depth < 0 or depth >= int(d.max()):
        raise ValueError(f"depth must be an integer in 0..{int(d.max()) - 1} px, got {depth!r}")
    if int((d >= depth).sum()) < n:
        raise ValueError(f"a ring of {n} pixels does not fit {depth} px inside a {tuple(d.shape)} image")
    key = torch.where(d >= depth, d, torch.full_like(d, 10 ** 9))
    return _first_pixels(key, n, device)


def strip_mask(size, n: int, device=None) -> "torch.Tensor":
    """``n`` pixels along one side only: the top rows, row-major from the top-left; ``(H, W)`` bool."""
    H, W = pair(size)
    return _first_pixels(torch.arange(H * W).view(H, W), n, device)


def centred_square_mask(size, n: int, device=None) -> "torch.Tensor":
    """``n`` pixels nearest the image centre in the max-norm (a centred square, its outer ring partly); ``(H, W)``."""
    H, W = pair(size)
    ys, xs = torch.arange(H).view(H, 1) - (H - 1) / 2, torch.arange(W).view(1, W) - (W - 1) / 2
    return _first_pixels(torch.maximum(ys.abs(), xs.abs()), n, device)


def random_pixels_mask(size, n: int, seed: int = 0, device=None) -> "torch.Tensor":
    """``n`` distinct pixels at seeded uniformly random positions; ``(H, W)`` bool."""
    H, W = pair(size)
    g = torch.Generator().manual_seed(int(seed))
    return _first_pixels(torch.randperm(H * W, generator=g).view(H, W), n, device)


LOCATION_DEPTHS = (8, 32, 64)  # px: the interior rings of the location control


def location_masks(size=(224, 224), e: int = 1, seed: int = 0, depths=LOCATION_DEPTHS, device=None) -> dict:
    """The attack's location control: ``{name: (H, W) bool}`` masks of exactly the ``e``-pixel frame's pixel count
    (:func:`frame_pixels`): ``frame``, ``ring<d>`` (:func:`ring_mask` at each depth ``d`` whose interior holds that
    many pixels), ``random``
    (:func:`random_pixels_mask`), ``strip`` (one side, :func:`strip_mask`), ``square`` (:func:`centred_square_mask`).
    ``depths``: the rings' distances from the border, in pixels."""
    n = frame_pixels(size, e)
    masks = {"frame": frame_mask(size, e, device)}
    inside = depth_map(size)
    masks.update({f"ring{d}": ring_mask(size, n, d, device) for d in depths if int((inside >= d).sum()) >= n})
    masks.update(random=random_pixels_mask(size, n, seed, device), strip=strip_mask(size, n, device),
                 square=centred_square_mask(size, n, device))
    return masks


def patch_positions(size, patch: int, stride: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every ``patch x patch`` square at ``stride`` that fits in an ``H x W`` image, row-major."""
    H, W = pair(size)
    if not (is_int(patch) and is_int(stride)) or patch < 1 or stride < 1 or patch > min(H, W):
        raise ValueError(f"patch must be in 1..{min(H, W)} and stride positive, got patch {patch}, stride {stride}")
    return [(t, l) for t in range(0, H - patch + 1, stride) for l in range(0, W - patch + 1, stride)]


def patch_masks(size, patch: int, stride: int, device=None) -> "torch.Tensor":
    """``(n_positions, H, W)`` bool: one square per :func:`patch_positions` entry."""
    H, W = pair(size)
    positions = patch_positions((H, W), patch, stride)
    masks = torch.zeros(len(positions), H, W, dtype=torch.bool, device=device)
    for k, (t, l) in enumerate(positions):
        masks[k, t:t + patch, l:l + patch] = True
    return masks


# --- CAM cells ---------------------------------------------------------------------------------------
def cell_stride(size, grid) -> float:
    """Pixels of the input per CAM cell along the rows (``H / h``): 32 for a 7 x 7 CAM of a 224 px image."""
    return pair(size)[0] / pair(grid)[0]


def cell_centres(grid=(7, 7), size=(224, 224), align_corners: bool | None = True) -> "torch.Tensor":
    """``(h*w, 2)`` pixel coordinates ``(y, x)`` where each cell sits in the upsampled map.

    Corners aligned: ``i (H - 1) / (h - 1)``; otherwise (and for nearest/area, see :func:`corners_aligned`):
    ``(i + 0.5) H / h - 0.5``.
    """
    h, w = pair(grid)
    H, W = pair(size)

    def axis(n, N):
        i = torch.arange(n, dtype=torch.float64)
        if align_corners and n > 1:
            return i * (N - 1) / (n - 1)
        return (i + 0.5) * N / n - 0.5

    ys, xs = torch.meshgrid(axis(h, H), axis(w, W), indexing="ij")
    return torch.stack([ys.flatten(), xs.flatten()], dim=1).float()


def cell_kinds(grid=(7, 7)) -> list[str]:
    """Kind of each cell, row-major: ``corner``, ``edge``, ``centre`` (the middle cell(s)) or ``interior``."""
    h, w = pair(grid)
    mid_i, mid_j = {(h - 1) // 2, h // 2}, {(w - 1) // 2, w // 2}
    kinds = []
    for i in range(h):
        for j in range(w):
            on_i, on_j = i in (0, h - 1), j in (0, w - 1)
            kinds.append("corner" if on_i and on_j else "edge" if on_i or on_j
                         else "centre" if i in mid_i and j in mid_j else "interior")
    return kinds


def centre_cell(grid=(7, 7)) -> int:
    """Index of the centre cell ``(h // 2, w // 2)``."""
    h, w = pair(grid)
    return (h // 2) * w + w // 2


def representative_cells(grid=(7, 7)) -> dict[str, int]:
    """One cell index per kind: the centre cell, the middle of the top edge, the top-left corner."""
    h, w = pair(grid)
    return {"centre": centre_cell((h, w)), "edge": w // 2, "corner": 0}


def lattice_cells(grid=(7, 7)) -> list[int]:
    """The corners, the edge midpoints and the centre: the 3 x 3 lattice of rows and columns ``0, h // 2, h - 1``."""
    h, w = pair(grid)
    return sorted({i * w + j for i in (0, h // 2, h - 1) for j in (0, w // 2, w - 1)})


def grid_side(n_cells: int) -> int:
    """``s`` of an ``s x s`` grid of ``n_cells`` cells; ValueError when ``n_cells`` is not a square."""
    side = math.isqrt(n_cells)
    if side * side != n_cells:
        raise ValueError(f"{n_cells} cells do not make a square grid; give grid=(h, w)")
    return side
