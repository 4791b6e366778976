"""Plot helpers: saliency overlays and titles with class names. Images ``(3, H, W)`` in ``[0, 1]``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in ``[0, 1]`` -> ``(H, W, 3)`` float array for ``imshow``."""
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def overlay(ax, image: torch.Tensor, saliency: torch.Tensor | None = None, title: str | None = None,
            cmap: str = "jet", alpha: float = 0.5, colorbar: bool = False):
    """Show ``image`` ``(3, H, W)`` with ``saliency`` ``(H, W)`` in ``[0, 1]`` blended on top."""
    ax.imshow(to_numpy_image(image))
    im = None
    if saliency is not None:
        im = ax.imshow(saliency.detach().float().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
        if colorbar:
            ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return im


def log_width_axis(ax, widths, label: str = "frame width e (pixels)") -> None:
    """Log-scaled x axis for margin/frame widths: one labelled tick per width, no minor labels."""
    ax.set_xscale("log")
    ax.set_xticks(list(widths), [str(w) for w in widths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel(label)


def show_map(ax, cam: torch.Tensor, title: str | None = None, cmap: str = "jet", grid: bool = True):
    """Show a low-resolution CAM ``(h, w)`` cell by cell, with the cell grid drawn."""
    m = cam.detach().float().cpu().numpy()
    ax.imshow(m, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if grid:
        h, w = m.shape
        ax.set_xticks([])  # no major ticks: matplotlib drops minor ticks that coincide with major ones
        ax.set_yticks([])
        ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    else:
        ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def class_title(model, logits: torch.Tensor, index: int | None = None, prefix: str = "") -> str:
    """``"espresso (87.1%)"`` for one image's logits ``(C,)``; ``index`` default: the predicted class."""
    prob = torch.softmax(logits.detach().float(), dim=-1)
    i = int(prob.argmax()) if index is None else int(index)
    return f"{prefix}{model.class_name(i)} ({100 * prob[i].item():.1f}%)"


def cam_figure(model, images: torch.Tensor, names=None, mode: str = "bilinear", align_corners: bool = True):
    """A row per image: the image, its ``h x w`` CAM with the cell grid, the upsampled saliency overlay."""
    from .cam import compute_cam, upsample

    with torch.no_grad():
        out = compute_cam(model, images.to(model.device))
    sal = upsample(out.cam, images.shape[-2:], mode, align_corners).cpu()
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(8, 2.7 * n), squeeze=False)
    h, w = out.cam.shape[-2:]
    for r in range(n):
        label = f"{names[r]}: " if names is not None else ""
        overlay(axes[r, 0], images[r], title=f"{label}{class_title(model, out.logits[r])}")
        show_map(axes[r, 1], out.cam[r], title=f"CAM, {h} x {w} cells")
        overlay(axes[r, 2], images[r], sal[r], title=f"saliency ({mode} upsampling)")
    fig.tight_layout()
    return fig
