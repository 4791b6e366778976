"""The adversarial marginal attack (AMA): change only an ``e``-pixel frame of the image.

Reference algorithm (``SCIENCE.md`` section 4), in ``[0, 1]`` pixel space:

* mask ``m``: the top and bottom ``e`` rows and the left and right ``e`` columns;
* ``z = where(m, n, x)``: pixels off the mask are the input's, bit for bit;
* start: ``n ~ U[0, 1]`` from a seeded ``torch.Generator`` (drawn on the CPU, so any device starts alike;
  one draw shared by the images of a batch, see :func:`start_noise`);
* loss, maximised, per image ``b``:
  ``L_b = CE(f(z_b), c_b) * [argmax f(z_b) == c_b] + lamb * (1 - cos(M_z_b, M_x_b))``,
  ``c`` the clean prediction and ``M_x`` the clean CAM of ``c`` (both computed once, fixed), ``M_z`` the CAM
  of ``c`` on ``z``, cosine over the flattened ``h x w`` normalised maps;
* update ``n <- clip(n + (1 / n_iter) * sign(dL/dn), 0, 1)``, ``n_iter`` times; then ``z`` is evaluated once more.

Batching. The reference script attacks one image at a time. Here the gradient is taken of
``sum_b L_b``, so image ``b``'s update is the batch-of-one reference update and does not depend on the
other images of the batch, up to float rounding: a batched convolution sums in another order than a
batch-of-one one, so logits, CAMs and gradients agree with a batch-of-one run to about the 6th significant
digit, not bit for bit, and a sign flip of a near-zero gradient component can then move a frame pixel
another way (a batch *mean* of CE over the still-fooled images would scale the CE term
of each image by ``1 / k``, ``k`` the number of images not yet fooled, and so couple the images; the
kit avoids that on purpose). ``sign()`` makes the overall scale irrelevant per image.

Variants: ``mode="keep"`` minimises CE over every image instead (keep the label, change the map);
``target_map`` replaces ``1 - cos(M_z, M_x)`` (pushed up) by ``1 - cos(M_z, T)`` (pulled down);
``mask`` replaces the frame by any boolean ``(H, W)`` or ``(B, H, W)`` mask.

Only input gradients are computed (``torch.autograd.grad`` with respect to ``n``); the model's
parameters are frozen. On the CPU the iterates are kept channels-last (``torch.channels_last``), which
oneDNN's convolutions run 1.1-1.2x faster than the default layout (``benchmarks/attack_speed.py``); this
changes float rounding only, but a sign flip early on sends a frame pixel down another path, so results
agree with a default-layout run in distribution, not bit for bit (``ama.attack.CPU_LAYOUT =
torch.contiguous_format`` restores the default layout). On CUDA the backward of bilinear upsampling and some convolutions is not
deterministic: runs agree in distribution, not bit for bit; on the CPU the same seed gives the same result.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .cam import compute_cam, raw_cam_from_features, normalize_maps
from .models import CAMModel, check_images
from .receptive_field import _pair, margin_mask

MODES = ("flip", "keep")
COS_EPS = 1e-8
CPU_LAYOUT = torch.channels_last  # memory layout of the iterates on the CPU (torch.contiguous_format: the default)


# --- masks ----------------------------------------------------------------------------------
def frame_mask(size, e: int = 1, device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the ``e``-pixel frame (top/bottom ``e`` rows, left/right ``e`` columns)."""
    H, W = _pair(size)
    _check_e(e, (H, W))  # the attack's own message for a bad e
    return margin_mask((H, W), e, device)


def side_mask(size, e: int = 1, side: str = "top", device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of one ``e``-pixel side: ``top``, ``bottom``, ``left`` or ``right``."""
    H, W = _pair(size)
    _check_e(e, (H, W))
    m = torch.zeros(H, W, dtype=torch.bool, device=device)
    sl = {"top": (slice(0, e), slice(None)), "bottom": (slice(H - e, H), slice(None)),
          "left": (slice(None), slice(0, e)), "right": (slice(None), slice(W - e, W))}
    if side not in sl:
        raise ValueError(f"unknown side {side!r}; use top, bottom, left or right")
    m[sl[side]] = True
    return m


def corner_mask(size, k: int = 8, device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the four ``k x k`` corner squares."""
    H, W = _pair(size)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or 2 * k > min(H, W):
        raise ValueError(f"corner size k must be a positive integer of at most half the smaller side, got {k!r}")
    m = torch.zeros(H, W, dtype=torch.bool, device=device)
    for rs in (slice(0, k), slice(H - k, H)):
        for cs in (slice(0, k), slice(W - k, W)):
            m[rs, cs] = True
    return m


def _is_int(v) -> bool:
    """A Python or numpy integer (``numbers.Integral``), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_e(e, size) -> None:
    limit = (min(size) + 1) // 2  # e < min(H, W) / 2
    if not _is_int(e) or e < 1 or 2 * e >= min(size):
        raise ValueError(f"e must be a positive integer below half the smaller image side ({min(size)} px), "
                         f"i.e. 1..{limit - 1}, got {e!r}")


SEED_MAX = 2 ** 63 - 1


def _check_seed(seed) -> int:
    if not _is_int(seed) or not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}; reduce it (e.g. seed % 2**63)")
    return int(seed)


def _check_autograd(what: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} needs autograd (input gradients): call it outside torch.inference_mode() "
                           "(torch.no_grad() around it is fine)")


# --- result ---------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """What one :func:`marginal_attack` call gives. Images ``(B, 3, H, W)`` in ``[0, 1]``, CAMs ``(B, h, w)`` in
    ``[0, 1]`` (the CAM of the clean class ``clean_class`` unless said otherwise), classes ``(B,)``.

    ``adv``: the adversarial images as optimised (float); ``adv_q``: the same after 8-bit quantisation of the
    mask's pixels (what a saved PNG holds; off-mask pixels stay the input's). Everything is on the CPU.
    ``history`` (if asked): ``(n_iter + 1, B)`` tensors ``loss``, ``cam_cosine`` (vs the clean CAM),
    ``target_cosine`` (targeted runs), ``ce`` and ``clean_class_held``; row ``t`` is the iterate before update
    ``t``, the last row the final ``z``.
    """

    clean: torch.Tensor
    adv: torch.Tensor
    adv_q: torch.Tensor
    mask: torch.Tensor                  # (B, H, W) bool
    clean_logits: torch.Tensor
    adv_logits: torch.Tensor
    adv_q_logits: torch.Tensor
    clean_cam: torch.Tensor             # CAM of the clean class on x
    adv_cam: torch.Tensor               # CAM of the clean class on adv (what the attack optimises)
    adv_q_cam: torch.Tensor
    adv_cam_pred: torch.Tensor          # CAM of adv's own predicted class (what an explainer would show)
    adv_q_cam_pred: torch.Tensor
    target_map: torch.Tensor | None     # (B, h, w) or None
    class_names: list[str]
    names: list[str]
    params: dict
    history: dict | None = None
    _tables: dict = field(default_factory=dict, repr=False)

    # --- classes ---------------------------------------------------------------------------
    @property
    def clean_class(self) -> torch.Tensor:
        return self.clean_logits.argmax(1)

    @property
    def adv_class(self) -> torch.Tensor:
        return self.adv_logits.argmax(1)

    @property
    def adv_q_class(self) -> torch.Tensor:
        return self.adv_q_logits.argmax(1)

    def _conf(self, logits):
        return torch.softmax(logits, 1).max(1).values

    @property
    def clean_conf(self) -> torch.Tensor:
        return self._conf(self.clean_logits)

    @property
    def adv_conf(self) -> torch.Tensor:
        return self._conf(self.adv_logits)

    @property
    def adv_q_conf(self) -> torch.Tensor:
        return self._conf(self.adv_q_logits)

    def _names(self, classes):
        return [self.class_names[int(i)] for i in classes]

    @property
    def clean_names(self) -> list[str]:
        return self._names(self.clean_class)

    @property
    def adv_names(self) -> list[str]:
        return self._names(self.adv_class)

    @property
    def adv_q_names(self) -> list[str]:
        return self._names(self.adv_q_class)

    @property
    def fooled(self) -> torch.Tensor:
        """``(B,)`` bool: the prediction of ``adv`` differs from the clean one."""
        return self.adv_class != self.clean_class

    @property
    def success(self) -> torch.Tensor:
        """``(B,)`` bool: ``flip`` -> prediction changed; ``keep`` -> prediction kept (as optimised).
        The random-frame baseline (``mode="random"``) counts like ``flip``."""
        return ~self.fooled if self.params.get("mode") == "keep" else self.fooled

    def __len__(self) -> int:
        return self.adv.shape[0]

    # --- tables ----------------------------------------------------------------------------
    @property
    def metrics(self):
        """Tidy ``pandas.DataFrame``: one row per image x ``quantized`` (False: as optimised, True: 8-bit)."""
        if "metrics" not in self._tables:
            from .metrics import attack_metrics

            self._tables["metrics"] = attack_metrics(self)
        return self._tables["metrics"]


# --- validation -----------------------------------------------------------------------------
def _validate(model, x, e, n_iter, lamb, mode, target_map, mask):
    if not isinstance(model, CAMModel):
        raise TypeError(f"model must be an ama.CAMModel (see ama.load_model / ama.wrap_model), got {type(model).__name__}")
    check_images(x)
    B, _, H, W = x.shape
    if not _is_int(n_iter) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    if isinstance(lamb, bool) or not isinstance(lamb, numbers.Real) or not math.isfinite(lamb) or not lamb >= 0:
        raise ValueError(f"lamb must be a non-negative finite number, got {lamb!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mask is None:
        _check_e(e, (H, W))
        m = frame_mask((H, W), e, device=x.device).expand(B, H, W)
    else:
        m = torch.as_tensor(mask, device=x.device)
        if m.dtype != torch.bool:
            raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
        if m.shape not in ((H, W), (B, H, W)):
            raise ValueError(f"mask must have shape (H, W) = {(H, W)} or (B, H, W) = {(B, H, W)}, got {tuple(m.shape)}")
        if not m.flatten(-2).any(-1).all():
            raise ValueError("mask selects no pixel (of at least one image); nothing to attack")
        m = m.expand(B, H, W)
    return m


def _validate_target(target_map, B, hw, device):
    if target_map is None:
        return None
    t = torch.as_tensor(target_map, device=device)
    if not t.is_floating_point():
        t = t.float()
    if t.shape == hw:
        t = t.expand(B, *hw)
    elif t.shape != (B, *hw):
        raise ValueError(f"target_map must have shape (h, w) = {tuple(hw)} or (B, h, w) = {(B, *hw)} (the CAM's), "
                         f"got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or not (t.flatten(1).abs().amax(1) > 0).all():
        raise ValueError("target_map must be finite and not all zero")
    return t.float()


@contextlib.contextmanager
def _unchecked(model):
    """Skip the model's per-call input range check inside the loop (``z`` is in ``[0, 1]`` by construction)."""
    old = model.check_inputs
    model.check_inputs = False
    try:
        yield
    finally:
        model.check_inputs = old


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=COS_EPS)


def start_noise(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The start ``n``: one ``U[0, 1]`` draw of shape ``(3, H, W)`` from ``torch.Generator().manual_seed(seed)``
    on the CPU, shared by every image of the batch (as a batch-of-one run with that seed would start), so that an
    image starts alike whatever its batch or its position in it. Its result still depends on the batch in float
    rounding only (batched convolutions sum in another order): logits and CAMs agree with a batch-of-one run
    to about the 6th significant digit, and a rare sign flip of a near-zero gradient can then send a frame
    pixel another way. ``seed``: an integer in ``[0, 2**63 - 1]``. ``(B, 3, H, W)`` on ``x``'s device."""
    gen = torch.Generator().manual_seed(_check_seed(seed))
    n = torch.rand(x.shape[1:], generator=gen, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return n.unsqueeze(0).expand_as(x).clone()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to the nearest of the 256 8-bit levels (what a PNG holds)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def _evaluate(model, z, c):
    """Logits, CAM of ``c`` and CAM of the own prediction for images ``z``, from one forward pass."""
    out = compute_cam(model, z, target=c)
    pred = out.logits.argmax(1)
    cam_pred = normalize_maps(F.relu(raw_cam_from_features(model, out.features, pred)))
    return out.logits, out.cam, cam_pred


# --- the attack -----------------------------------------------------------------------------
def marginal_attack(model: CAMModel, x: torch.Tensor, e: int = 1, n_iter: int = 100, lamb: float = 100.0,
                    mode: str = "flip", target_map=None, mask=None, seed: int = 0, return_history: bool = False,
                    names: Sequence[str] | None = None) -> AttackResult:
    """Attack the images ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` by changing only the mask's pixels (default: the
    ``e``-pixel frame). Defaults are the reference's (``n_iter=100``, ``lamb=100``, ``mode="flip"``).

    ``target_map``: ``(h, w)`` or ``(B, h, w)`` at CAM resolution (see :mod:`ama.shapes`) to pull the CAM
    towards; ``mask``: boolean ``(H, W)`` or ``(B, H, W)``; ``names``: one label per image for the tables.
    Runs on ``x``'s device moved to the model's device; returns an :class:`AttackResult` on the CPU.
    """
    _check_autograd("ama.marginal_attack")
    lamb = float(lamb) if isinstance(lamb, numbers.Real) and not isinstance(lamb, bool) else lamb
    n_iter = int(n_iter) if _is_int(n_iter) else n_iter
    device = model.device if isinstance(model, CAMModel) else None
    if isinstance(x, torch.Tensor) and device is not None:
        x = x.to(device)
    m = _validate(model, x, e, n_iter, lamb, mode, target_map, mask)
    B, _, H, W = x.shape
    if names is not None and len(names) != B:
        raise ValueError(f"names has {len(names)} entries for a batch of {B} images")
    layout = CPU_LAYOUT if x.device.type == "cpu" else torch.contiguous_format
    x = x.detach().contiguous(memory_format=layout)
    m4 = m.unsqueeze(1)  # (B, 1, H, W), broadcast over channels

    with torch.no_grad():
        clean = compute_cam(model, x)  # the clean class c and its CAM M_x: computed once
    c, M_x = clean.target, clean.cam
    T = _validate_target(target_map, B, tuple(M_x.shape[-2:]), x.device)

    n = start_noise(x, seed).contiguous(memory_format=layout)
    step = 1.0 / n_iter
    hist = {k: [] for k in ("loss", "cam_cosine", "target_cosine", "ce", "clean_class_held")} if return_history else None

    def loss_terms(z):
        out = compute_cam(model, z, target=c)
        ce = F.cross_entropy(out.logits, c, reduction="none")
        held = out.logits.argmax(1) == c
        cos_clean = _cos(out.cam, M_x)
        if mode == "flip":
            ce_term = ce * held  # only images still predicted as c push their CE up
        else:
            ce_term = -ce        # keep: pull every image's CE down
        if T is None:
            cos_t = None
            cam_term = lamb * (1 - cos_clean)      # push away from the clean CAM
        else:
            cos_t = _cos(out.cam, T)
            cam_term = -lamb * (1 - cos_t)         # pull towards the target
        return ce_term + cam_term, ce, held, cos_clean, cos_t

    def record(per_image, ce, held, cos_clean, cos_t):
        hist["loss"].append(per_image.detach().cpu())
        hist["ce"].append(ce.detach().cpu())
        hist["clean_class_held"].append(held.detach().cpu())
        hist["cam_cosine"].append(cos_clean.detach().cpu())
        if cos_t is not None:
            hist["target_cosine"].append(cos_t.detach().cpu())

    with _unchecked(model), torch.enable_grad():
        for _ in range(n_iter):
            n.requires_grad_(True)
            z = torch.where(m4, n, x).contiguous(memory_format=layout)  # where() follows the mask's layout
            per_image, *terms = loss_terms(z)
            (grad,) = torch.autograd.grad(per_image.sum(), n)
            if hist is not None:
                record(per_image, *terms)
            with torch.no_grad():
                n = (n.detach() + step * grad.sign()).clamp_(0, 1).contiguous(memory_format=layout)

    with torch.no_grad(), _unchecked(model):
        z = torch.where(m4, n, x)
        if hist is not None:
            record(*loss_terms(z))
        z_q = torch.where(m4, quantize(n), x)
        adv_logits, adv_cam, adv_cam_pred = _evaluate(model, z, c)
        q_logits, q_cam, q_cam_pred = _evaluate(model, z_q, c)

    history = None
    if hist is not None:
        history = {k: torch.stack(v) for k, v in hist.items() if v}
    cpu = lambda t: None if t is None else t.detach().cpu().contiguous()  # noqa: E731  (default layout out)
    params = dict(model=model.name, e=int(e) if mask is None else None, n_iter=n_iter, lamb=float(lamb), mode=mode,
                  seed=int(seed), targeted=T is not None, mask="frame" if mask is None else "custom")
    return AttackResult(
        clean=cpu(x), adv=cpu(z), adv_q=cpu(z_q), mask=cpu(m).clone(), clean_logits=cpu(clean.logits),
        adv_logits=cpu(adv_logits), adv_q_logits=cpu(q_logits), clean_cam=cpu(M_x), adv_cam=cpu(adv_cam),
        adv_q_cam=cpu(q_cam), adv_cam_pred=cpu(adv_cam_pred), adv_q_cam_pred=cpu(q_cam_pred), target_map=cpu(T),
        class_names=list(model.class_names), names=list(names) if names is not None else [str(i) for i in range(B)],
        params=params, history=history)


def random_frame(model: CAMModel, x: torch.Tensor, e: int = 1, mask=None, seed: int = 0,
                 names: Sequence[str] | None = None) -> AttackResult:
    """The baseline: the same frame (or mask) filled with uniform noise, not optimised.

    The noise is the attack's own starting point for the same ``seed``; ``params["mode"]`` is ``"random"``
    and ``n_iter`` 0. Evaluated as-is and 8-bit quantised, like the attack.
    """
    device = model.device if isinstance(model, CAMModel) else None
    if isinstance(x, torch.Tensor) and device is not None:
        x = x.to(device)
    m = _validate(model, x, e, 1, 0.0, "flip", None, mask)
    B = x.shape[0]
    if names is not None and len(names) != B:
        raise ValueError(f"names has {len(names)} entries for a batch of {B} images")
    n = start_noise(x, seed)
    m4 = m.unsqueeze(1)
    with torch.no_grad():
        clean = compute_cam(model, x)
        c = clean.target
        z = torch.where(m4, n, x)
        z_q = torch.where(m4, quantize(n), x)
        adv_logits, adv_cam, adv_cam_pred = _evaluate(model, z, c)
        q_logits, q_cam, q_cam_pred = _evaluate(model, z_q, c)
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    params = dict(model=model.name, e=int(e) if mask is None else None, n_iter=0, lamb=0.0, mode="random",
                  seed=int(seed), targeted=False, mask="frame" if mask is None else "custom")
    return AttackResult(
        clean=cpu(x), adv=cpu(z), adv_q=cpu(z_q), mask=cpu(m).clone(), clean_logits=cpu(clean.logits),
        adv_logits=cpu(adv_logits), adv_q_logits=cpu(q_logits), clean_cam=cpu(clean.cam), adv_cam=cpu(adv_cam),
        adv_q_cam=cpu(q_cam), adv_cam_pred=cpu(adv_cam_pred), adv_q_cam_pred=cpu(q_cam_pred), target_map=None,
        class_names=list(model.class_names), names=list(names) if names is not None else [str(i) for i in range(B)],
        params=params)


# --- saving ---------------------------------------------------------------------------------
def to_uint8(image: torch.Tensor):
    """``(3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8 numpy array (rounded, like :func:`quantize`)."""
    return torch.round(image.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path) -> None:
    """Write one ``(3, H, W)`` image losslessly as an 8-bit PNG (atomically)."""
    from pathlib import Path

    from PIL import Image

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    tmp.replace(path)


# --- figure ---------------------------------------------------------------------------------
def attack_figure(result: AttackResult, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """The reference's 2 x 2 figure for image ``index``: clean image, clean saliency, adversarial image,
    adversarial saliency (the CAM of the clean class ``c``, as the attack optimises it), each titled with the
    predicted class and its confidence. ``quantized``: show the 8-bit adversarial image (what the PNG holds)."""
    import matplotlib.pyplot as plt

    from .cam import upsample
    from .plots import overlay

    i = int(index)
    adv = (result.adv_q if quantized else result.adv)[i]
    logits = (result.adv_q_logits if quantized else result.adv_logits)[i]
    cam_adv = (result.adv_q_cam if quantized else result.adv_cam)[i]
    size = result.clean.shape[-2:]

    def title(lg):
        p = torch.softmax(lg.float(), -1)
        k = int(p.argmax())
        return f"{result.class_names[k]} ({100 * p[k].item():.1f}%)"

    c_name = result.class_names[int(result.clean_class[i])]
    p = result.params
    e = f"e = {p['e']}" if p.get("e") is not None else "custom mask"
    fig, axes = plt.subplots(2, 2, figsize=(7, 7.4))
    overlay(axes[0, 0], result.clean[i], title=f"clean: {title(result.clean_logits[i])}")
    overlay(axes[0, 1], result.clean[i], upsample(result.clean_cam[i], size, mode),
            title=f"clean CAM of '{c_name}'")
    overlay(axes[1, 0], adv, title=f"adversarial ({'8-bit' if quantized else 'float'}): {title(logits)}")
    overlay(axes[1, 1], adv, upsample(cam_adv, size, mode),
            title=f"adversarial CAM of '{c_name}', cos {torch.nn.functional.cosine_similarity(cam_adv.flatten(), result.clean_cam[i].flatten(), 0).item():.2f}")
    what = "random frame (not optimised)" if p.get("mode") == "random" else \
        f"AMA, {e}, mode {p.get('mode')}{', targeted CAM' if p.get('targeted') else ''}, {p.get('n_iter')} iterations, " \
        f"lambda {p.get('lamb'):g}"
    fig.suptitle(f"{result.names[i]}: {what}", fontsize=10)
    fig.tight_layout()
    return fig


# --- the notebook's experiment grid ----------------------------------------------------------
def run_settings(model: CAMModel, x: torch.Tensor, names: Sequence[str], e_values=(1, 2, 4, 8), n_iters=(50, 100),
                 modes=("flip", "keep"), lamb: float = 100.0, seed: int = 0, mode_n_iters: dict | None = None,
                 mode_e_values: dict | None = None, history: bool = True, progress: bool = True):
    """Attack the batch ``x`` for every ``e`` x ``n_iter`` x ``mode`` and add the random-frame baseline per ``e``.

    ``mode_n_iters`` / ``mode_e_values``: per mode, the ``n_iter`` / ``e`` values to run (default: all).
    Returns ``(results, table)``: ``results[(setting, e, n_iter, mode)]`` -> :class:`AttackResult`
    (``setting`` ``"attack"`` or ``"random_frame"``, the baseline with ``n_iter`` 0 and mode ``"random"``) and all
    metric rows with a ``setting`` column. Histories are kept for every attack when ``history``.
    """
    import pandas as pd
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    mode_n_iters, mode_e_values = mode_n_iters or {}, mode_e_values or {}
    jobs = [(e, it, mode) for e in e_values for mode in modes for it in mode_n_iters.get(mode, n_iters)
            if e in mode_e_values.get(mode, e_values)]
    results, frames = {}, []
    for e in e_values:
        r = random_frame(model, x, e=e, seed=seed, names=names)
        results[("random_frame", e, 0, "random")] = r
        frames.append(r.metrics.assign(setting="random_frame"))
    bar = tqdm(jobs, desc=f"AMA {model.name}", mininterval=30, disable=not progress)
    for e, it, mode in bar:
        r = marginal_attack(model, x, e=e, n_iter=it, lamb=lamb, mode=mode, seed=seed, return_history=history,
                            names=names)
        results[("attack", e, it, mode)] = r
        frames.append(r.metrics.assign(setting="attack"))
    table = pd.concat(frames, ignore_index=True)
    cols = list(table.columns)
    cols.insert(cols.index("quantized"), cols.pop(cols.index("setting")))
    return results, table[cols]


def examples_figure(results: dict, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """Image ``index`` attacked at several ``e``: ``results`` maps ``e`` -> :class:`AttackResult`. Top row: the clean
    and the adversarial images titled with class and confidence; bottom row: their saliency (CAM of the clean
    class) with the cosine to the clean CAM."""
    import matplotlib.pyplot as plt

    from .cam import upsample
    from .plots import class_title, overlay

    es = sorted(results)
    first = results[es[0]]
    i = int(index)
    size = first.clean.shape[-2:]
    fig, axes = plt.subplots(2, 1 + len(es), figsize=(2.6 * (1 + len(es)), 6.4), squeeze=False)
    names = first.class_names

    class _M:  # class_title needs model.class_name
        class_name = staticmethod(lambda k: names[int(k)])

    overlay(axes[0, 0], first.clean[i], title=f"clean\n{class_title(_M, first.clean_logits[i])}")
    overlay(axes[1, 0], first.clean[i], upsample(first.clean_cam[i], size, mode), title="clean CAM")
    for col, e in enumerate(es, 1):
        r = results[e]
        adv = (r.adv_q if quantized else r.adv)[i]
        lg = (r.adv_q_logits if quantized else r.adv_logits)[i]
        cam_adv = (r.adv_q_cam if quantized else r.adv_cam)[i]
        cos = F.cosine_similarity(cam_adv.flatten(), r.clean_cam[i].flatten(), 0).item()
        overlay(axes[0, col], adv, title=f"e = {e}\n{class_title(_M, lg)}")
        overlay(axes[1, col], adv, upsample(cam_adv, size, mode), title=f"CAM, cos {cos:.2f} to clean")
    p = first.params
    fig.suptitle(f"{first.names[i]}: AMA ({p['mode']}, {p['n_iter']} iterations, lambda {p['lamb']:g}"
                 f"{', 8-bit' if quantized else ''}); CAM of the clean class '{names[int(first.clean_class[i])]}'",
                 fontsize=10)
    fig.tight_layout()
    return fig


def target_figure(result: AttackResult, index: int = 0, quantized: bool = True, mode: str = "bilinear"):
    """A targeted attack on image ``index``: clean saliency, the target map, the adversarial saliency."""
    import matplotlib.pyplot as plt

    from .cam import upsample
    from .plots import overlay, show_map

    i = int(index)
    size = result.clean.shape[-2:]
    adv = (result.adv_q if quantized else result.adv)[i]
    cam_adv = (result.adv_q_cam if quantized else result.adv_cam)[i]
    lg = (result.adv_q_logits if quantized else result.adv_logits)[i]
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
    fig.suptitle(f"{result.names[i]}: targeted AMA, e = {p['e']}, mode {p['mode']}, {p['n_iter']} iterations", fontsize=10)
    fig.tight_layout()
    return fig
