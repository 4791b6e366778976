"""Plot helpers: saliency overlays and titles with class names. Images ``(3, H, W)`` in ``[0, 1]``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..attack.optimizers import ORIGINAL
from ..attack.result import NO_OPTIMIZER, RANDOM, AttackResult
from ..kernels.cam import compute_cam
from ..kernels.upsampling import upsample


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in ``[0, 1]`` -> ``(H, W, 3)`` float array for ``imshow``."""
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def overlay(ax, image: torch.Tensor, saliency: torch.Tensor | None = None, title: str | None = None,
            cmap: str = "jet", alpha: float = 0.5, colorbar: bool = False):
    """Show ``image`` ``(3, H, W)`` with ``saliency`` ``(H, W)`` in ``[0, 1]`` blended on top. ``title``: above the
    image; ``alpha``: the saliency's opacity; ``colorbar``: draw one."""
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
    """Log-scaled x axis for margin/frame widths: one labelled tick per width, no minor labels. ``widths``: the ticks;
    ``label``: the axis label."""
    ax.set_xscale("log")
    ax.set_xticks(list(widths), [str(w) for w in widths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel(label)


def show_map(ax, cam: torch.Tensor, title: str | None = None, cmap: str = "jet", grid: bool = True):
    """Show a low-resolution CAM ``(h, w)`` cell by cell, with the cell grid drawn. ``title``: above the map."""
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
    """``"espresso (87.1%)"`` for one image's logits ``(C,)``; ``index`` default: the predicted class. ``prefix``: put
    before the class name."""
    prob = torch.softmax(logits.detach().float(), dim=-1)
    i = int(prob.argmax()) if index is None else int(index)
    return f"{prefix}{model.class_name(i)} ({100 * prob[i].item():.1f}%)"


def cam_figure(model, images: torch.Tensor, names=None, mode: str = "bilinear", align_corners: bool = True):
    """A row per image: the image, its ``h x w`` CAM with the cell grid, the upsampled saliency overlay (with the
    colourbar of both maps: min-max normalised, ``[0, 1]``)."""
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
        overlay(axes[r, 2], images[r], sal[r], title=f"saliency ({mode} upsampling)", colorbar=True)
    fig.tight_layout()
    return fig


def cam_pipeline_figure(model, data, k: int = 3):
    """:func:`cam_figure` of the first ``k`` images of ``data`` (a run's :class:`~ama.inputs.images.LoadedImages`), titled."""
    fig = cam_figure(model, data.images[:k], data.names[:k])
    fig.suptitle(f"{model.name}: the CAM pipeline (bilinear upsampling, corners aligned)", y=1.01)
    return fig


# --- attack figures (results of ama.attack.marginal.marginal_attack) ------------------------------------
class _Namer:
    """What :func:`class_title` needs of a model, ``class_name(k)``, from a result's list of class names."""

    def __init__(self, names):
        self.names = names

    def class_name(self, k) -> str:
        return self.names[int(k)]


MODE_WORDS = {"flip": "attack: change the prediction", "keep": "attack: keep the prediction, move the CAM",
              "random": "random frame (not optimised)"}  # an attack's mode in plain words, as a figure says it


def mode_words(mode: str) -> str:
    """The attack ``mode`` (``flip``, ``keep``, ``random``) in plain words (:data:`MODE_WORDS`)."""
    return MODE_WORDS.get(mode, f"mode {mode}")


def _optimizer_note(params) -> str:
    """`` (apgd)`` for an attack run with another optimiser than the reference's, else empty."""
    return "" if params.optimizer in (ORIGINAL, NO_OPTIMIZER) else f" ({params.optimizer})"


def attack_figure(result: AttackResult, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """The reference's 2 x 2 figure for image ``index``: clean image, clean saliency, adversarial image,
    adversarial saliency (the CAM of the clean class ``c``, as the attack optimises it), each titled with the
    predicted class and its confidence. ``quantized``: show the 8-bit adversarial image (what the PNG holds)."""
    i = int(index)
    ev = result.evaluated(quantized)
    adv, logits, cam_adv = ev.images[i], ev.logits[i], ev.cam[i]
    size = result.clean.shape[-2:]

    def title(lg):
        p = torch.softmax(lg.float(), -1)
        k = int(p.argmax())
        return f"{result.class_names[k]} ({100 * p[k].item():.1f}%)"

    c_name = result.class_names[int(result.clean_class[i])]
    p = result.params
    e = f"e = {p.e}" if p.e is not None else "custom mask"
    fig, axes = plt.subplots(2, 2, figsize=(7, 7.4))
    overlay(axes[0, 0], result.clean[i], title=f"clean: {title(result.clean_logits[i])}")
    overlay(axes[0, 1], result.clean[i], upsample(result.clean_cam[i], size, mode),
            title=f"clean CAM of '{c_name}'")
    overlay(axes[1, 0], adv, title=f"adversarial ({'8-bit' if quantized else 'float'}): {title(logits)}")
    overlay(axes[1, 1], adv, upsample(cam_adv, size, mode),
            title=f"adversarial CAM of '{c_name}', cos {F.cosine_similarity(cam_adv.flatten(), result.clean_cam[i].flatten(), 0).item():.2f}")
    what = mode_words(RANDOM) if p.mode == RANDOM else \
        f"AMA, {e}, {mode_words(p.mode)}{', targeted CAM' if p.targeted else ''}, {p.n_iter} iterations" \
        f"{_optimizer_note(p)}, lambda {p.lamb:g}"
    fig.suptitle(f"{result.names[i]}: {what}", fontsize=10)
    fig.tight_layout()
    return fig


def examples_figure(results: dict, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """Image ``index`` attacked at several ``e``: ``results`` maps ``e`` -> :class:`AttackResult`. Top row: the clean
    and the adversarial images titled with class and confidence; bottom row: their saliency (CAM of the clean
    class) with the cosine to the clean CAM."""
    es = sorted(results)
    first = results[es[0]]
    i = int(index)
    size = first.clean.shape[-2:]
    fig, axes = plt.subplots(2, 1 + len(es), figsize=(2.6 * (1 + len(es)), 6.4), squeeze=False)
    names = first.class_names
    namer = _Namer(names)
    overlay(axes[0, 0], first.clean[i], title=f"clean\n{class_title(namer, first.clean_logits[i])}")
    overlay(axes[1, 0], first.clean[i], upsample(first.clean_cam[i], size, mode), title="clean CAM")
    for col, e in enumerate(es, 1):
        r = results[e]
        ev = r.evaluated(quantized)
        adv, lg, cam_adv = ev.images[i], ev.logits[i], ev.cam[i]
        cos = F.cosine_similarity(cam_adv.flatten(), r.clean_cam[i].flatten(), 0).item()
        overlay(axes[0, col], adv, title=f"e = {e}\n{class_title(namer, lg)}")
        im = overlay(axes[1, col], adv, upsample(cam_adv, size, mode), title=f"CAM, cos {cos:.2f} to clean")
    p = first.params
    fig.suptitle(f"{first.names[i]}: AMA ({mode_words(p.mode)}, {p.n_iter} iterations{_optimizer_note(p)}, lambda {p.lamb:g}"
                 f"{', 8-bit' if quantized else ''}); CAM of the clean class '{names[int(first.clean_class[i])]}'",
                 fontsize=10)
    fig.tight_layout()
    fig.colorbar(im, ax=axes[1].tolist(), shrink=0.8, label="CAM (min-max normalised)")
    return fig


def target_figure(result: AttackResult, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """A targeted attack on image ``index``: clean saliency, the target map, the adversarial saliency."""
    i = int(index)
    size = result.clean.shape[-2:]
    ev = result.evaluated(quantized)
    adv, cam_adv, lg = ev.images[i], ev.cam[i], ev.logits[i]
    T = result.target_map[i]
    cos_t = F.cosine_similarity(cam_adv.flatten(), T.flatten(), 0).item()
    cos_0 = F.cosine_similarity(result.clean_cam[i].flatten(), T.flatten(), 0).item()
    name = lambda lgt: f"{result.class_names[int(lgt.argmax())]} ({100 * torch.softmax(lgt, -1).max().item():.1f}%)"  # noqa: E731
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.4))
    overlay(axes[0], result.clean[i], upsample(result.clean_cam[i], size, mode),
            title=f"clean: {name(result.clean_logits[i])}\ncos to target {cos_0:.2f}")
    show_map(axes[1], result.clean_cam[i], title=f"clean CAM ({T.shape[0]} x {T.shape[1]} cells)")
    show_map(axes[2], T, title="target map")
    overlay(axes[3], adv, upsample(cam_adv, size, mode), title=f"adversarial: {name(lg)}\ncos to target {cos_t:.2f}")
    p = result.params
    fig.suptitle(f"{result.names[i]}: targeted AMA, e = {p.e}, {mode_words(p.mode)}, {p.n_iter} iterations", fontsize=10)
    fig.tight_layout()
    return fig


ZOOM_PX = 24  # the zoom on the frame: the top-left ZOOM_PX x ZOOM_PX pixels (a 1-pixel frame is invisible at full scale)


def attack_rows_figure(result: AttackResult, indices, quantized: bool = True, mode: str = "bilinear",
                       zoom: int = ZOOM_PX):
    """Several images of one attack, a row each: the clean image and its CAM (of the clean class ``c``), the 8-bit
    adversarial image (the zoomed corner outlined), a zoom on its top-left corner (the frame's pixels, nearest
    neighbour), the adversarial CAM of ``c`` (cosine to the clean CAM) and the CAM of the class the attacked image is
    now given (the explanation a user would see); one colourbar for the CAMs. ``indices`` index the result's batch.
    ``zoom``: side of the zoomed corner, in pixels."""
    from matplotlib.patches import Rectangle

    ev = result.evaluated(quantized)
    size = result.clean.shape[-2:]
    p = result.params
    rows = list(indices)
    fig, axes = plt.subplots(len(rows), 6, figsize=(16, 2.9 * len(rows)), squeeze=False, layout="constrained")
    namer = _Namer(result.class_names)
    name = namer.class_name
    im = None
    for ax_row, i in zip(axes, rows):
        c, k = int(result.clean_class[i]), int(ev.classes[i])
        cos = F.cosine_similarity(ev.cam[i].flatten(), result.clean_cam[i].flatten(), 0).item()
        overlay(ax_row[0], result.clean[i], title=f"{result.names[i]}\nclean: {class_title(namer, result.clean_logits[i])}")
        im = overlay(ax_row[1], result.clean[i], upsample(result.clean_cam[i], size, mode),
                     title=f"clean CAM of '{name(c)}'")
        overlay(ax_row[2], ev.images[i], title=("FOOLED" if k != c else "not fooled")
                + f": {class_title(namer, ev.logits[i])}")
        ax_row[2].add_patch(Rectangle((-0.5, -0.5), zoom, zoom, fill=False, ec="yellow", lw=1.2))
        ax_row[3].imshow(to_numpy_image(ev.images[i][:, :zoom, :zoom]), interpolation="nearest")
        if p.e is not None:
            ax_row[3].add_patch(Rectangle((p.e - 0.5, p.e - 0.5), zoom, zoom, fill=False, ec="red", lw=1.5, ls="--"))
        ax_row[3].set_title(f"zoom: top-left {zoom} x {zoom} px\n(red: inside the {p.e}-px frame)", fontsize=9)
        ax_row[3].set_axis_off()
        overlay(ax_row[4], ev.images[i], upsample(ev.cam[i], size, mode),
                title=f"CAM of '{name(c)}'\ncos {cos:.2f} to the clean CAM")
        overlay(ax_row[5], ev.images[i], upsample(ev.cam_pred[i], size, mode),
                title=f"CAM of the new class\n'{name(k)}'" if k != c
                else f"not fooled: the class is kept,\nso this is the map on the left again")
    fig.colorbar(im, ax=axes[:, [1, 4, 5]].ravel().tolist(), shrink=0.5, label="CAM (min-max normalised)")
    what = mode_words(RANDOM) if p.mode == RANDOM else f"AMA, e = {p.e}, {mode_words(p.mode)}, {p.n_iter} passes" \
        f"{_optimizer_note(p)}"
    fig.suptitle(f"{p.model}: {what}, {'8-bit' if quantized else 'float'} images", fontsize=11)
    return fig


def irf_legend(fig, levels) -> None:
    """The legend of an ERF-vs-IRF figure below its maps, on grey (its markers are white): the IRF's contours at
    ``levels`` of its peak and its support, the cell's cross and the ERF's centroid dot. ``fig``: the figure."""
    from matplotlib.lines import Line2D

    at = ", ".join(f"{v:g}" for v in levels)
    handles = [Line2D([], [], color="white", lw=1.3, label=f"IRF: the upsampling's tent-shaped weight of the cell, at "
                                                           f"{at} of its peak"),
               Line2D([], [], color="white", lw=0.8, ls=":", label="IRF support: where that weight is above 0"),
               Line2D([], [], color="white", marker="+", ms=12, mew=2.5, ls="none",
                      label="the cell's position in the upsampled map (the IRF's centre)"),
               Line2D([], [], color="cyan", marker="o", mec="k", ms=8, ls="none",
                      label="the ERF's centroid (its centre of mass); offset: its distance to the cross")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, facecolor="0.3", labelcolor="white",
               framealpha=1)


def run_palette(runs) -> dict:
    """A distinct colour for each of ``runs`` (the figures' series names): the random frame grey, the others tab10
    colours in order."""
    import seaborn as sns

    colours = iter(sns.color_palette("tab10", 10)[i] for i in (0, 1, 2, 3, 4, 6, 8, 9, 5, 7))
    return {r: (0.45, 0.45, 0.45) if r == "random frame" else next(colours) for r in runs}
