"""Target maps for the targeted attack: ``(h, w)`` float tensors in ``[0, 1]`` at any size (usually the CAM's).

Positions are relative: ``center=(row, col)`` with ``(0, 0)`` the top-left and ``(1, 1)`` the bottom-right
cell centre; ``radius`` and ``half_side`` are shares of the smaller side. A shape is drawn on a finer grid and
area-averaged onto the ``(h, w)`` cells, so that even a 7 x 7 target has soft, centred edges.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.cam import cam as cam_of
from ..paths import resolve
from .images import load_image

SUPERSAMPLE = 8
SPECS = ("disc", "square", "ring", "text:<glyphs>", "flip", "flipud", "invert", "<image file>")


def _size(size) -> tuple[int, int]:
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _grid(size):
    """Fine-grid coordinates ``(Y, X)`` in cell-centre units (0 .. 1 from first to last cell centre) and the size."""
    h, w = _size(size)
    s = SUPERSAMPLE
    ys = (torch.arange(h * s, dtype=torch.float32) + 0.5) / s - 0.5
    xs = (torch.arange(w * s, dtype=torch.float32) + 0.5) / s - 0.5
    ys, xs = ys / max(h - 1, 1), xs / max(w - 1, 1)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return Y, X, (h, w)


def _down(fine: torch.Tensor, size) -> torch.Tensor:
    out = F.avg_pool2d(fine[None, None].float(), SUPERSAMPLE)[0, 0]
    return out / out.max() if out.max() > 0 else out


def _check_center(center):
    r, c = center
    if not (0 <= r <= 1 and 0 <= c <= 1):
        raise ValueError(f"center must be (row, col) with both in [0, 1], got {center!r}")


def disc(size, center=(0.5, 0.5), radius: float = 0.25) -> torch.Tensor:
    """A filled disc of ``radius`` (share of the side) at ``center``."""
    _check_center(center)
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    Y, X, hw = _grid(size)
    return _down(((Y - center[0]) ** 2 + (X - center[1]) ** 2) <= radius ** 2, hw)


def square(size, center=(0.5, 0.5), half_side: float = 0.25) -> torch.Tensor:
    """A filled axis-aligned square of half side ``half_side`` at ``center``."""
    _check_center(center)
    if half_side <= 0:
        raise ValueError(f"half_side must be positive, got {half_side}")
    Y, X, hw = _grid(size)
    return _down(((Y - center[0]).abs() <= half_side) & ((X - center[1]).abs() <= half_side), hw)


def ring(size, center=(0.5, 0.5), radius: float = 0.4, width: float = 0.2) -> torch.Tensor:
    """A ring of outer ``radius`` and ``width`` at ``center``."""
    _check_center(center)
    if not 0 < width <= radius:
        raise ValueError(f"ring needs 0 < width <= radius, got width {width}, radius {radius}")
    Y, X, hw = _grid(size)
    d = ((Y - center[0]) ** 2 + (X - center[1]) ** 2).sqrt()
    return _down((d <= radius) & (d >= radius - width), hw)


def glyph(size, text: str = "X") -> torch.Tensor:
    """``text`` rendered with PIL's default font, centred and scaled to fill the map."""
    from PIL import Image, ImageDraw, ImageFont

    if not text or not text.strip():
        raise ValueError("text must hold at least one visible character")
    h, w = _size(size)
    H, W = h * SUPERSAMPLE, w * SUPERSAMPLE
    try:
        font = ImageFont.load_default(size=H)
    except TypeError:  # Pillow < 10.1: bitmap font only
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    scale = min(W / canvas.width, H / canvas.height)
    canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))), Image.LANCZOS)
    fine = Image.new("L", (W, H), 0)
    fine.paste(canvas, ((W - canvas.width) // 2, (H - canvas.height) // 2))
    t = torch.from_numpy(np.array(fine, dtype=np.float32)) / 255
    return _down(t, (h, w))


def _maps(cam: torch.Tensor) -> torch.Tensor:
    cam = torch.as_tensor(cam).detach().float()
    if cam.ndim not in (2, 3):
        raise ValueError(f"cam must have shape (h, w) or (B, h, w), got {tuple(cam.shape)}")
    return cam


def flipped(cam: torch.Tensor, axis: str = "horizontal") -> torch.Tensor:
    """The CAM mirrored left-right (``horizontal``) or top-bottom (``vertical``); ``(h, w)`` or ``(B, h, w)``. ``axis``:
    ``horizontal`` or ``vertical``."""
    dims = {"horizontal": (-1,), "vertical": (-2,), "both": (-2, -1)}
    if axis not in dims:
        raise ValueError(f"unknown axis {axis!r}; use horizontal, vertical or both")
    return _maps(cam).flip(dims[axis])


def inverted(cam: torch.Tensor) -> torch.Tensor:
    """``1 - cam`` (the CAM's most salient cells become the least)."""
    return 1 - _maps(cam).clamp(0, 1)


def image_cam(model, image) -> torch.Tensor:
    """Another image's CAM ``(h, w)`` (its predicted class): ``image`` a path or a ``(3, H, W)``/``(1, 3, H, W)`` tensor."""
    x = load_image(image, model) if not isinstance(image, torch.Tensor) else image
    x = x.unsqueeze(0) if x.ndim == 3 else x
    with torch.no_grad():
        return cam_of(model, x.to(model.device))[0].cpu()


def make_target(spec: str, size, clean_cam: torch.Tensor | None = None, model=None) -> torch.Tensor:
    """A target from a short spec: ``disc``, ``square``, ``ring``, ``text:X``, ``flip`` / ``flipud`` / ``invert``
    (of ``clean_cam``, ``(B, h, w)`` -> ``(B, h, w)``), or an image file (its CAM under ``model``). ``spec``: one of the
    forms above."""
    from pathlib import Path

    named = {"disc": disc, "square": square, "ring": ring}
    if spec in named:
        return named[spec](size)
    if spec.startswith("text:"):
        return glyph(size, spec[5:])
    if spec in ("flip", "flipud", "invert"):
        if clean_cam is None:
            raise ValueError(f"target {spec!r} needs the clean CAM")
        return {"flip": lambda c: flipped(c), "flipud": lambda c: flipped(c, "vertical"), "invert": inverted}[spec](clean_cam)
    path = resolve(spec)
    if Path(path).is_file():
        if model is None:
            raise ValueError("an image target needs the model")
        return image_cam(model, path)
    raise ValueError(f"unknown target {spec!r}; use one of {', '.join(SPECS)}")
