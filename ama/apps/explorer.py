"""The interactive explorer of ``notebooks/00_explore.ipynb``: one image, its CAM cell by cell, the attack live.

:class:`Explorer` holds a model and one image ``(1, 3, H, W)`` in ``[0, 1]``; its methods work headless
(tests, scripts) and, once :attr:`Explorer.widget` has been shown in JupyterLab, also update the widgets:

* :meth:`~Explorer.select_model` / :meth:`~Explorer.select_image`: a kit model, a staged sample photo (by name),
  an image file or an upload's bytes -> the clean CAM ``(h, w)`` in ``[0, 1]`` and the predicted class;
* :meth:`~Explorer.select_cell`: cell ``k`` (row-major, ``(k // w, k % w)``) -> its IRF and ERF ``(H, W)``
  side by side (``ama.kernels.receptive_field``);
* :meth:`~Explorer.run_attack`: the marginal attack with frame width ``e`` (``ama.marginal_attack``), with a
  progress bar, -> the clean and adversarial CAMs with their class names.

Figures are matplotlib ``Figure`` objects in :attr:`Explorer.figures` (``"cam"``, ``"receptive_field"``,
``"attack"``), drawn outside pyplot so that nothing is shown twice in a notebook.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ..attack.marginal import marginal_attack
from ..attack.result import AttackResult
from ..figures.plots import class_title, overlay
from ..inputs.images import ImageLoadError, list_images, load_image, stage_samples
from ..inputs.models import LITE_MODELS, load_model
from ..kernels import receptive_field as rf
from ..kernels.cam import compute_cam
from ..kernels.cam_model import CAMModel
from ..kernels.upsampling import upsample
from ..params import DEFAULT_MODEL, LAMB, SEED
from ..paths import SAMPLES_DIR, resolve

CMAP = "jet"
DEFAULT_IMAGE = "chelsea"  # a staged sample photo
DEFAULT_E = 2              # the attack's frame width (pixels) and steps: a quick look, not the paper's 100
DEFAULT_N_ITER = 10


def sample_names() -> list[str]:
    """Names of the staged sample photos (staged now if missing)."""
    if not (SAMPLES_DIR / "manifest.csv").is_file():
        stage_samples()
    return [r.name for r in list_images(SAMPLES_DIR)]


def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def cell_colours(cam: torch.Tensor, cmap: str = CMAP) -> list[str]:
    """Hex colour of each cell of a CAM ``(h, w)`` in ``[0, 1]``, row-major. ``cmap``: a matplotlib colour map."""
    values = cam.detach().float().clamp(0, 1).flatten().cpu().numpy()
    return [to_hex(c) for c in colormaps[cmap](values)]


def text_colour(background: str) -> str:
    """``black`` or ``white``, whichever reads better on the hex colour ``background`` (its WCAG relative luminance
    against 0.18, where the two contrasts are equal)."""
    rgb = np.array([int(background[k:k + 2], 16) / 255 for k in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return "black" if float(linear @ [0.2126, 0.7152, 0.0722]) > 0.18 else "white"


class Explorer:
    """Explore one image with one model: CAM, receptive fields of a cell, the marginal attack.

    ``model``: a kit model name (``lite0``, ``lite1``, ``lite2`` offline) or a :class:`CAMModel`;
    ``image``: a staged sample name or an image path; ``e``/``n_iter``/``lamb``/``seed``: the attack's
    (``ama.marginal_attack``); ``device``: where models load. ``None``: the defaults (:data:`DEFAULT_IMAGE`,
    :data:`DEFAULT_E`, :data:`DEFAULT_N_ITER`, the run defaults of :mod:`ama.params`).
    """

    def __init__(self, model: str | CAMModel | None = None, image: str | None = None, e: int | None = None,
                 n_iter: int | None = None, lamb: float = LAMB, seed: int = SEED, device: str = "cpu"):
        self.device = device
        self.e = DEFAULT_E if e is None else e
        self.n_iter = DEFAULT_N_ITER if n_iter is None else n_iter
        self.lamb, self.seed = lamb, seed
        self._models: dict[str, CAMModel | None] = {name: None for name in LITE_MODELS}
        self._ui = None
        self.figures: dict[str, Figure] = {}
        self.cell: int | None = None
        self.irf = self.erf = None
        self.result: AttackResult | None = None
        self.image_name = None
        self.x = None
        self.select_model(DEFAULT_MODEL if model is None else model, image=image or DEFAULT_IMAGE)

    # --- state ------------------------------------------------------------------------------
    def select_model(self, model: str | CAMModel, image=None) -> None:
        """Use ``model`` (a name, loaded once and kept, or a :class:`CAMModel`); reloads the current image at its
        input size, or ``image`` if given."""
        if isinstance(model, CAMModel):
            self._models[model.name] = model
            name = model.name
        else:
            name = str(model)
            if self._models.get(name) is None:
                self._models[name] = load_model(name, device=self.device)
        self.model_name, self.model = name, self._models[name]
        self._sync("model", name)
        source = image if image is not None else self._source
        self.select_image(source)

    def select_image(self, source, name: str | None = None) -> None:
        """Load ``source`` -- a staged sample's name, an image path, or an upload's ``bytes`` -- and compute its CAM.

        ``name``: the label shown (default: the sample name or the file's stem). Clears the cell and the attack.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            suffix = Path(name or "upload.png").suffix or ".png"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"upload{suffix}"
                path.write_bytes(bytes(source))
                x = load_image(path, self.model)
            label = Path(name).stem if name else "upload"
        else:
            samples = {r.name: r.path for r in list_images(SAMPLES_DIR)} if SAMPLES_DIR.is_dir() else {}
            path = samples.get(str(source)) or resolve(source)
            x = load_image(path, self.model)
            label = name or (str(source) if str(source) in samples else Path(path).stem)
        self._source, self.image_name = source, label
        self.x = x.to(self.model.device)
        with torch.no_grad():
            out = compute_cam(self.model, self.x)
        self.cam, self.logits, self.target = out.cam[0].cpu(), out.logits[0].cpu(), int(out.target[0])
        self.cell = self.irf = self.erf = self.result = None
        for key in ("receptive_field", "attack"):
            self.figures.pop(key, None)
        self.figures["cam"] = self._cam_figure()
        self._sync("image", source if isinstance(source, str) else None)
        self._refresh()

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the CAM."""
        return tuple(self.cam.shape)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return tuple(self.x.shape[-2:])

    @property
    def class_name(self) -> str:
        """The predicted class with its confidence, e.g. ``"tabby (61.2%)"``."""
        return class_title(self.model, self.logits)

    def select_cell(self, k: int) -> None:
        """IRF and ERF of cell ``k`` (row-major index in ``[0, h*w)``), each ``(H, W)``; the ERF sums to 1."""
        h, w = self.grid
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < h * w:
            raise ValueError(f"cell must be an integer in [0, {h * w - 1}] of the {h} x {w} CAM, got {k!r}")
        k = int(k)
        self.erf = rf.effective_receptive_field(self.model, self.x, cells=[k])[0, 0].cpu()
        irf = rf.implicit_receptive_field((h, w), self.size)
        self.irf, self.cell = irf[k], k
        row = rf.misalignment(self.erf[None], irf, cells=[k], grid=(h, w)).iloc[0]
        self.erf_mass_outside_irf = float(row.erf_mass_outside_irf)
        self.figures["receptive_field"] = self._rf_figure()
        self.figures["cam"] = self._cam_figure()  # the chosen cell outlined
        self._refresh()

    def run_attack(self, e: int | None = None, n_iter: int | None = None, progress=None) -> AttackResult:
        """The marginal attack on the image with frame width ``e`` and ``n_iter`` steps (defaults: the explorer's).

        ``progress``: called with ``(done, n_iter)`` as the steps run (the widget's bar when shown).
        """
        e = self.e if e is None else e
        n_iter = self.n_iter if n_iter is None else n_iter
        report = progress or self._progress
        steps = [0]

        def count(*_):  # one backbone pass per attack step (after the clean pass), and two at the end
            steps[0] += 1
            report(min(max(steps[0] - 1, 0), n_iter), n_iter)

        report(0, n_iter)
        hook = self.model.backbone.register_forward_hook(count)
        try:
            self.result = marginal_attack(self.model, self.x, e=e, n_iter=n_iter, lamb=self.lamb, seed=self.seed,
                                          names=[self.image_name])
        finally:
            hook.remove()
        report(n_iter, n_iter)
        self.e, self.n_iter = e, n_iter
        self.figures["attack"] = self._attack_figure()
        self._refresh()
        return self.result

    def summary(self) -> str:
        """A few lines: model, image and class, the selected cell's receptive fields, the attack's outcome."""
        h, w = self.grid
        lines = [f"model {self.model_name}, image {self.image_name} ({self.size[0]} x {self.size[1]}), "
                 f"CAM {h} x {w}: {self.class_name}"]
        if self.cell is not None:
            i, j = divmod(self.cell, w)
            lines.append(f"cell {self.cell} = ({i}, {j}): ERF mass outside the IRF support "
                         f"{100 * self.erf_mass_outside_irf:.1f}%")
        if self.result is not None:
            r = self.result
            cos = torch.nn.functional.cosine_similarity(r.adv_q_cam[0].flatten(), r.clean_cam[0].flatten(), 0)
            fooled = bool(r.adv_q_class[0] != r.clean_class[0])
            lines.append(f"attack e = {r.params.e}, {r.params.n_iter} steps: "
                         f"{class_title(self.model, r.clean_logits[0])} -> {class_title(self.model, r.adv_q_logits[0])}"
                         f" ({'fooled' if fooled else 'not fooled'}, 8-bit frame); CAM cosine {cos.item():.3f}")
        return "\n".join(lines)

    # --- figures ----------------------------------------------------------------------------
    def show(self, key: str = "attack"):
        """One of :attr:`figures` as a PNG for notebook output (whatever matplotlib backend is active)."""
        from IPython.display import Image

        if key not in self.figures:
            raise ValueError(f"no {key!r} figure yet; have {sorted(self.figures)} (select a cell / run the attack first)")
        return Image(data=figure_png(self.figures[key]))

    def _cell_box(self, ax, colour: str = "white") -> None:
        """The chosen cell's stride square (none chosen: nothing), outlined on ``ax`` (an image of the input's size) in
        ``colour``."""
        from matplotlib.patches import Rectangle

        if self.cell is None:
            return
        i, j = divmod(self.cell, self.grid[1])
        (H, W), (h, w) = self.size, self.grid
        ax.add_patch(Rectangle((j * W / w - 0.5, i * H / h - 0.5), W / w, H / h, fill=False, ec=colour, lw=2.5))

    def _cam_figure(self) -> Figure:
        fig = Figure(figsize=(4, 4.2))
        ax = fig.add_subplot()
        overlay(ax, self.x[0].cpu(), upsample(self.cam, self.size), title=f"{self.image_name}: CAM of {self.class_name}")
        self._cell_box(ax)
        return fig

    def _rf_figure(self) -> Figure:
        i, j = divmod(self.cell, self.grid[1])
        fig = Figure(figsize=(8, 4.4))
        ax_irf, ax_erf = fig.subplots(1, 2)
        image = self.x[0].cpu().permute(1, 2, 0).clamp(0, 1).numpy()
        irf = (self.irf / self.irf.max()).cpu().numpy()
        ax_irf.imshow(image)
        ax_irf.imshow(np.ma.masked_where(irf <= 0, irf), cmap="viridis", alpha=0.65, vmin=0, vmax=1)
        ax_irf.contour(irf, levels=[1e-6, 0.5], colors=["white", "white"], linewidths=[1.2, 2], linestyles=[":", "-"])
        ax_irf.set_title(f"IRF of cell ({i}, {j}): where upsampling paints it\n(dotted: its edge; line: half its peak)",
                         fontsize=9)
        erf = self.erf / self.erf.max() if self.erf.max() > 0 else self.erf
        overlay(ax_erf, self.x[0].cpu(), erf.sqrt(),
                title=f"ERF of cell ({i}, {j}) (sqrt scale): the pixels that move it\n"
                      f"{100 * self.erf_mass_outside_irf:.0f}% of it outside the IRF (dotted)")
        ax_erf.contour(irf, levels=[1e-6], colors="white", linewidths=1.2, linestyles=":")
        for ax in (ax_irf, ax_erf):
            self._cell_box(ax)
            ax.set_axis_off()
        fig.tight_layout()
        return fig

    def _attack_figure(self) -> Figure:
        r = self.result
        size = self.size
        fig = Figure(figsize=(12, 4.4))
        axes = fig.subplots(1, 3)
        c_name = self.model.class_name(int(r.clean_class[0]))
        overlay(axes[0], r.clean[0], upsample(r.clean_cam[0], size),
                title=f"clean: {class_title(self.model, r.clean_logits[0])}")
        overlay(axes[1], r.adv_q[0], upsample(r.adv_q_cam[0], size),
                title=f"adversarial (e = {r.params.e}): CAM of '{c_name}'")
        overlay(axes[2], r.adv_q[0], upsample(r.adv_q_cam_pred[0], size),
                title=f"adversarial: {class_title(self.model, r.adv_q_logits[0])}")
        fig.tight_layout()
        return fig

    # --- widgets ----------------------------------------------------------------------------
    @property
    def widget(self):
        """The explorer's ``ipywidgets`` box (built on first use); display it in a notebook."""
        if self._ui is None:
            self._ui = _ExplorerUI(self)
            self._refresh()
        return self._ui.box

    def _sync(self, what: str, value) -> None:
        if self._ui is not None:
            self._ui.sync(what, value)

    def _refresh(self) -> None:
        if self._ui is not None:
            self._ui.refresh()

    def _progress(self, done: int, total: int) -> None:
        if self._ui is not None:
            self._ui.progress.max, self._ui.progress.value = total, done


class _ExplorerUI:
    """The widgets of an :class:`Explorer`: controls call its methods, views show its state."""

    def __init__(self, ex: Explorer):
        import ipywidgets as W

        self.ex, self.W = ex, W
        self._quiet = False
        models = [m for m in ex._models if m]
        self.model = W.Dropdown(options=models, value=ex.model_name, description="model")
        images = sample_names()
        self.image = W.Dropdown(options=images, value=ex._source if ex._source in images else None,
                                description="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.e = W.IntSlider(value=ex.e, min=1, max=16, description="e (px)")
        self.n_iter = W.IntSlider(value=ex.n_iter, min=1, max=200, description="steps")
        self.attack = W.Button(description="run attack", button_style="danger")
        self.progress = W.IntProgress(value=0, min=0, max=ex.n_iter, description="attack")
        self.status = W.HTML()
        self.cells = W.GridBox()
        self.views = {key: W.Image(format="png") for key in ("cam", "receptive_field", "attack")}
        self.model.observe(lambda ch: self._call(ex.select_model, ch["new"]), names="value")
        self.image.observe(lambda ch: ch["new"] is not None and self._call(ex.select_image, ch["new"]), names="value")
        self.upload.observe(self._uploaded, names="value")
        self.attack.on_click(lambda _: self._call(ex.run_attack, self.e.value, self.n_iter.value))
        hint = W.HTML("Click a CAM cell for its receptive fields (IRF: where upsampling paints it; "
                      "ERF: the pixels that move it).")
        self.box = W.VBox([
            W.HBox([self.model, self.image, self.upload]),
            W.HBox([W.VBox([hint, self.cells]), self.views["cam"]]),
            self.views["receptive_field"],
            W.HBox([self.e, self.n_iter, self.attack, self.progress]),
            self.views["attack"], self.status])

    def _call(self, method, *args) -> None:
        if self._quiet:
            return
        self.status.value = "working ..."
        try:
            method(*args)
        except (ValueError, OSError, ImageLoadError) as err:  # ModelError and ImageLoadError are ValueErrors
            self.status.value = f"<b style='color:#b00'>{type(err).__name__}: {err}</b>"
            return
        self.status.value = self.ex.summary().replace("\n", "<br>")

    def _uploaded(self, change) -> None:
        files = change["new"]
        if files:
            f = files[0]
            self._call(self.ex.select_image, f["content"], f["name"])

    def sync(self, what: str, value) -> None:
        """Show a choice made from code in the matching control without calling back."""
        control = {"model": self.model, "image": self.image}[what]
        self._quiet = True
        try:
            if what == "image" and value not in control.options:
                value = None
            if what == "model" and value not in control.options:
                control.options = [*control.options, value]
            control.value = value
        finally:
            self._quiet = False

    def refresh(self) -> None:
        """Redraw the cell grid and the figures from the explorer's state."""
        ex, W = self.ex, self.W
        h, w = ex.grid
        if len(self.cells.children) != h * w:  # a new grid size: new buttons (else they are only recoloured)
            buttons = [W.Button(tooltip=f"cell {k} = ({k // w}, {k % w})",
                                layout=W.Layout(width="46px", height="30px", padding="0")) for k in range(h * w)]
            for k, b in enumerate(buttons):
                b.on_click(lambda _, k=k: self._call(ex.select_cell, k))
            self.cells.children = buttons
            self.cells.layout = W.Layout(grid_template_columns=f"repeat({w}, 48px)", grid_gap="2px")
        for k, (b, value, colour) in enumerate(zip(self.cells.children, ex.cam.flatten().tolist(), cell_colours(ex.cam))):
            b.description = f"{value:.2f}"
            b.style.button_color = colour
            b.style.text_color = text_colour(colour)  # readable on the cell's own colour, dark or light
            b.style.font_weight = "bold" if k == ex.cell else "normal"
            b.layout.border = "3px solid white" if k == ex.cell else "none"  # the chosen cell, as outlined on the maps
            b.layout.outline = "2px solid black" if k == ex.cell else "none"
        self.e.max = max(1, (min(ex.size) + 1) // 2 - 1)
        for key, view in self.views.items():
            fig = ex.figures.get(key)
            view.value = figure_png(fig) if fig is not None else b""
            view.layout.display = None if fig is not None else "none"
