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

Optimisers (``optimizer=``; budget: ``n_iter`` forward+backward passes per image, restarts included):
``"sign"`` is the reference above (the default, unchanged bit for bit); ``"apgd"`` an APGD-style schedule and
``"adam"`` Adam on ``n = sigmoid(w)`` (``SCIENCE.md`` section 6). ``select="best"`` (their default) returns per image
the best iterate judged on its 8-bit version: each pass then sees the 8-bit frame (straight-through gradient), so
judging costs no extra pass; "best" ranks success first (flip: label changed; keep: label held), then the objective.
``restarts=k`` splits the budget over ``k + 1`` runs from successive draws of the seeded generator.
``cam_loss="raw"`` compares ReLU'd raw CAMs, ``label_loss="margin"`` uses the logit margin (:class:`_Objective`).
Adam has no ``sign()``: an image's result then depends on its batch by float rounding only.

Variants: ``mode="keep"`` minimises CE over every image instead (keep the label, change the map);
``target_map`` replaces ``1 - cos(M_z, M_x)`` (pushed up) by ``1 - cos(M_z, T)`` (pulled down);
``mask`` replaces the frame by any boolean ``(H, W)`` or ``(B, H, W)`` mask.

Only input gradients are computed (``torch.autograd.grad`` with respect to ``n``); the model's
parameters are frozen. On the CPU the iterates are kept channels-last (``torch.channels_last``), which
oneDNN's convolutions run 1.1-1.2x faster than the default layout (``benchmarks/attack_speed.py``); this
changes float rounding only, but a sign flip early on sends a frame pixel down another path, so results
agree with a default-layout run in distribution, not bit for bit (``ama.attack.CPU_LAYOUT =
torch.contiguous_format`` restores the default layout). The optimiser's passes run on a copy of the model with
BatchNorm folded into its convolutions (``fold_bn``, 1.3x faster on the CPU for lite0), with the same caveat; the clean and
adversarial outputs that the result reports come from the model itself. On CUDA the backward of bilinear upsampling and some convolutions is not
deterministic: runs agree in distribution, not bit for bit; on the CPU the same seed gives the same result.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .cam import compute_cam, raw_cam_from_features, normalize_maps
from .models import CAMModel, check_images, fold_batchnorm
from .receptive_field import _pair, margin_mask

MODES = ("flip", "keep")
COS_EPS = 1e-8
# Optimisers (``SCIENCE.md`` section 6) and their defaults; ``select``: which iterate is returned.
CAM_LOSSES = ("normalized", "raw")
LABEL_LOSSES = ("ce", "margin")
SELECTS = ("last", "best")
OPTIMIZER_DEFAULTS = {
    "sign": dict(restarts=0, cam_loss="normalized", label_loss="ce", select="last"),  # the reference, bit for bit
    "apgd": dict(restarts=0, cam_loss="normalized", label_loss="margin", select="best"),  # margin: tuned on lite0
    "adam": dict(restarts=0, cam_loss="normalized", label_loss="margin", select="best"),  # margin, lr 0.5: tuned on lite0
}
APGD_ETA0 = 2.0        # first step, x the range [0, 1]
APGD_MOMENTUM = 0.75
APGD_RHO = 0.75        # share of rising steps below which the step halves
ADAM_LR = 0.5          # first learning rate on the sigmoid's logits
ADAM_EPS = 1e-3        # the start is clamped to [eps, 1 - eps] before its logit is taken
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
class Evaluation:
    """One evaluated image set: ``images`` ``(B, 3, H, W)`` in ``[0, 1]``, their ``logits`` ``(B, C)``, ``cam`` the CAM
    of the clean class ``(B, h, w)`` in ``[0, 1]`` (what the attack optimises) and ``cam_pred`` the CAM of the set's
    own predicted class (what an explainer would show)."""

    images: torch.Tensor
    logits: torch.Tensor
    cam: torch.Tensor
    cam_pred: torch.Tensor
    class_names: list[str] = field(repr=False, default_factory=list)

    @property
    def classes(self) -> torch.Tensor:
        """``(B,)`` predicted classes."""
        return self.logits.argmax(1)

    @property
    def conf(self) -> torch.Tensor:
        """``(B,)`` softmax probability of the predicted class."""
        return torch.softmax(self.logits.float(), 1).max(1).values

    @property
    def names(self) -> list[str]:
        """Names of the predicted classes."""
        return [self.class_names[int(i)] for i in self.classes]


EVALUATED = ("clean", "adv", "adv_q")     # the image sets an AttackResult describes
_FIELDS = {"logits": "logits", "cam": "cam", "cam_pred": "cam_pred", "class": "classes", "conf": "conf",
           "names": "names"}


@dataclass
class AttackResult:
    """What one :func:`marginal_attack` (or :func:`random_frame`) call gives, on the CPU.

    ``evaluations`` holds one :class:`Evaluation` per image set of :data:`EVALUATED`: ``"clean"`` the inputs,
    ``"adv"`` the adversarial images as optimised (float), ``"adv_q"`` the same after 8-bit quantisation of the
    mask's pixels (what a saved PNG holds; off-mask pixels stay the input's). Shorthands: ``r.<set>`` are the
    set's images and ``r.<set>_<field>`` its fields, field one of ``logits, cam, cam_pred, class, conf, names``
    (``r.adv_q``, ``r.adv_q_logits``, ``r.clean_cam``, ``r.adv_class``, ...).

    ``mask`` ``(B, H, W)`` bool; ``target_map`` ``(B, h, w)`` or None. ``history`` (if asked): ``(n_iter + 1, B)``
    tensors ``loss`` (the objective maximised), ``cam_cosine`` (vs the clean CAM, as the objective measures it),
    ``target_cosine`` (targeted runs), ``ce`` and ``clean_class_held``; row ``t`` is the iterate of model pass
    ``t``, the last row the returned image (for ``select="best"`` its 8-bit version, as judged).
    """

    evaluations: dict
    mask: torch.Tensor
    target_map: torch.Tensor | None
    class_names: list[str]
    names: list[str]
    params: dict
    history: dict | None = None
    _tables: dict = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str):
        evaluations = self.__dict__.get("evaluations")
        if evaluations is not None and not name.startswith("_"):
            if name in evaluations:
                return evaluations[name].images
            for key in sorted(evaluations, key=len, reverse=True):  # adv_q before adv
                rest = name[len(key) + 1:] if name.startswith(key + "_") else None
                if rest in _FIELDS:
                    return getattr(evaluations[key], _FIELDS[rest])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def evaluated(self, quantized: bool = True) -> Evaluation:
        """The adversarial set: 8-bit (``quantized``, what a PNG holds) or as optimised."""
        return self.evaluations["adv_q" if quantized else "adv"]

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


def optimizer_settings(optimizer: str = "sign", restarts=None, cam_loss=None, label_loss=None, select=None) -> dict:
    """The settings of one optimiser: its :data:`OPTIMIZER_DEFAULTS` with the given values in their place, validated."""
    if optimizer not in OPTIMIZER_DEFAULTS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_DEFAULTS)}")
    given = dict(restarts=restarts, cam_loss=cam_loss, label_loss=label_loss, select=select)
    s = {**OPTIMIZER_DEFAULTS[optimizer], **{k: v for k, v in given.items() if v is not None}}
    r = s["restarts"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"restarts must be a non-negative integer, got {r!r}")
    for key, allowed in (("cam_loss", CAM_LOSSES), ("label_loss", LABEL_LOSSES), ("select", SELECTS)):
        if s[key] not in allowed:
            raise ValueError(f"unknown {key} {s[key]!r}; use one of {', '.join(allowed)}")
    if r > 0 and s["select"] == "last":
        raise ValueError("restarts need select='best' (the best iterate over all runs is returned)")
    return {"optimizer": optimizer, **s}


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


def start_noise(x: torch.Tensor, seed: int = 0, run: int = 0) -> torch.Tensor:
    """The start ``n``: one ``U[0, 1]`` draw of shape ``(3, H, W)`` from ``torch.Generator().manual_seed(seed)``
    on the CPU, shared by every image of the batch (as a batch-of-one run with that seed would start), so that an
    image's result does not depend on its batch or its position in it, except in float rounding (batched
    convolutions sum in another order): logits and CAMs agree with a batch-of-one run to about the 6th significant
    digit, and a rare sign flip of a near-zero gradient can then send a frame pixel another way. ``run`` ``k``: the
    ``k + 1``-th draw of that generator (the start of restart ``k``). ``seed``: an integer in ``[0, 2**63 - 1]``.
    ``(B, 3, H, W)`` on ``x``'s device."""
    gen = torch.Generator().manual_seed(_check_seed(seed))
    for _ in range(int(run) + 1):
        n = torch.rand(x.shape[1:], generator=gen, dtype=torch.float32)
    n = n.to(device=x.device, dtype=x.dtype)
    return n.unsqueeze(0).expand_as(x).clone()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to the nearest of the 256 8-bit levels (what a PNG holds)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def _evaluate(model, z, c) -> tuple:
    """``(CAMOutput, CAM of the own prediction)`` for images ``z``, from one forward pass."""
    out = compute_cam(model, z, target=c)
    pred = out.logits.argmax(1)
    cam_pred = normalize_maps(F.relu(raw_cam_from_features(model, out.features, pred)))
    return out, cam_pred


# --- the objective --------------------------------------------------------------------------
class _Objective:
    """The attack's objective per image (maximised) from one forward pass's :class:`~ama.cam.CAMOutput`.

    ``flip``: ``label + lamb * (1 - cos(M_z, M_x))`` with ``label = CE(f(z), c) * [argmax f(z) == c]`` (``ce``) or
    ``(max_{k != c} f_k(z) - f_c(z)) * [argmax f(z) == c]`` (``margin``, continuous at the decision boundary);
    ``keep``: ``label = -CE`` or ``-relu(max_{k != c} f_k - f_c)``; targeted: the CAM term ``-lamb * (1 - cos(M_z, T))``.
    ``cam_loss``: ``normalized`` compares min-max normalised CAMs (the reference), ``raw`` the ReLU'd raw CAMs
    (same cosine up to the min shift; its gradient reaches every positive cell, not only the two extremes).
    ``success``: flip -> the label changed; keep -> the label held.
    """

    def __init__(self, clean, mode, lamb, target, cam_loss, label_loss):
        self.c, self.mode, self.lamb, self.T = clean.target, mode, lamb, target
        self.cam_loss, self.label_loss = cam_loss, label_loss
        self.M_x = clean.cam if cam_loss == "normalized" else F.relu(clean.raw)

    def __call__(self, out):
        c = self.c
        ce = F.cross_entropy(out.logits, c, reduction="none")
        held = out.logits.argmax(1) == c
        if self.label_loss == "ce":
            label = ce * held if self.mode == "flip" else -ce  # flip: only images still predicted as c push CE up
        else:
            z_c = out.logits.gather(1, c[:, None]).squeeze(1)
            other = out.logits.scatter(1, c[:, None], float("-inf")).amax(1)
            label = (other - z_c) * held if self.mode == "flip" else -F.relu(other - z_c)
        cam = out.cam if self.cam_loss == "normalized" else F.relu(out.raw)
        cos_clean = _cos(cam, self.M_x)
        if self.T is None:
            cos_t = None
            cam_term = self.lamb * (1 - cos_clean)     # push away from the clean CAM
        else:
            cos_t = _cos(cam, self.T)
            cam_term = -self.lamb * (1 - cos_t)        # pull towards the target
        success = ~held if self.mode == "flip" else held
        return label + cam_term, dict(ce=ce, held=held, cos_clean=cos_clean, cos_t=cos_t, success=success)


def _better(success, loss, best_success, best_loss) -> torch.Tensor:
    """``(B,)`` bool: ``(success, loss)`` beats the best so far (success first, then the objective)."""
    return (success & ~best_success) | ((success == best_success) & (loss > best_loss))


# --- optimisers: each turns (point, gradient, objective) into the next point -----------------
class _Sign:
    """The reference: ``n <- clip(n + step * sign(g), 0, 1)`` with ``step = 1 / n_steps``."""

    def __init__(self, n, n_steps):
        self.n, self.step_size = n, 1.0 / n_steps

    def point(self):
        return self.n

    def step(self, grad, loss):
        self.n = (self.n.detach() + self.step_size * grad.sign()).clamp_(0, 1)


def apgd_checkpoints(n_steps: int) -> list[int]:
    """Iterations at which APGD checks progress: ``round(p_j n_steps)`` for ``p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` below 1 (``SCIENCE.md`` section 6)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({round(q * n_steps) for q in p[1:] if 0 < round(q * n_steps) < n_steps})


class _APGD:
    """APGD-style schedule (Croce and Hein 2020) in ``[0, 1]``: signed step ``eta`` (first ``APGD_ETA0`` x the range),
    momentum ``APGD_MOMENTUM``; at each checkpoint an image's step halves when its objective rose in fewer than
    ``APGD_RHO`` of the steps since the last checkpoint or its best did not improve, and it restarts from its best
    point (with that point's gradient, stored: no extra pass)."""

    def __init__(self, n, n_steps):
        B = n.shape[0]
        self.n, self.prev = n, n
        self.eta = torch.full((B, 1, 1, 1), APGD_ETA0, device=n.device, dtype=n.dtype)
        self.checkpoints = set(apgd_checkpoints(n_steps))
        self.t = 0
        self.last_loss = None
        self.rises = torch.zeros(B, device=n.device)
        self.since = 0
        self.best_n, self.best_grad, self.best_loss = n, None, None
        self.improved = torch.zeros(B, dtype=torch.bool, device=n.device)
        self.eta_at_checkpoint = self.eta.clone()

    def point(self):
        return self.n

    def step(self, grad, loss):
        n, grad, loss = self.n.detach(), grad.detach(), loss.detach()
        if self.best_loss is None:
            self.best_n, self.best_grad, self.best_loss = n, grad, loss
        else:
            self.rises += (loss > self.last_loss).float()
            self.since += 1
            up = loss > self.best_loss
            self.improved |= up
            u4 = up.view(-1, 1, 1, 1)
            self.best_n = torch.where(u4, n, self.best_n)
            self.best_grad = torch.where(u4, grad, self.best_grad)
            self.best_loss = torch.where(up, loss, self.best_loss)
        self.last_loss = loss
        if self.t in self.checkpoints:
            halve = (self.rises < APGD_RHO * max(self.since, 1)) | ~self.improved
            h4 = halve.view(-1, 1, 1, 1)
            self.eta = torch.where(h4, self.eta / 2, self.eta)
            n = torch.where(h4, self.best_n, n)
            self.prev = torch.where(h4, self.best_n, self.prev)
            grad = torch.where(h4, self.best_grad, grad)
            self.rises.zero_()
            self.since = 0
            self.improved.zero_()
        z = (n + self.eta * grad.sign()).clamp(0, 1)
        if self.t == 0:
            new = z
        else:
            new = (n + APGD_MOMENTUM * (z - n) + (1 - APGD_MOMENTUM) * (n - self.prev.detach())).clamp(0, 1)
        self.prev, self.n = n, new
        self.t += 1


class _Adam:
    """Adversarial framing's optimiser: ``n = sigmoid(w)``, Adam on ``w`` (ascent) with the learning rate decaying from
    ``ADAM_LR`` to 0 on a cosine over the run."""

    def __init__(self, n, n_steps):
        self.w = torch.logit(n.clamp(ADAM_EPS, 1 - ADAM_EPS)).detach().requires_grad_(True)
        self.opt = torch.optim.Adam([self.w], lr=ADAM_LR, maximize=True)
        self.n_steps, self.t = n_steps, 0

    def point(self):
        return torch.sigmoid(self.w)

    def step(self, grad_w, loss):
        self.w.grad = grad_w
        self.opt.step()
        self.t += 1
        for g in self.opt.param_groups:
            g["lr"] = ADAM_LR * 0.5 * (1 + math.cos(math.pi * self.t / self.n_steps))

    def leaf(self):
        return self.w


_OPTIMIZERS = {"sign": _Sign, "apgd": _APGD, "adam": _Adam}


def _run_lengths(n_iter: int, runs: int) -> list[int]:
    """Split the budget ``n_iter`` over ``runs`` runs (the first ones get the remainder); every run >= 1 pass."""
    if runs > n_iter:
        raise ValueError(f"restarts={runs - 1} leave fewer than one pass per run of the budget n_iter={n_iter}")
    return [n_iter // runs + (k < n_iter % runs) for k in range(runs)]


# --- the attack -----------------------------------------------------------------------------
FOLD_TOLERANCE = 1e-3  # folded logits within this x max |logit| of the model's, or the model itself is used


def _pass_network(model: CAMModel, x: torch.Tensor, logits: torch.Tensor) -> CAMModel:
    """The network the optimiser's passes run on: ``model`` with BatchNorm folded when there is any and the copy's
    logits on the clean images ``x`` agree with ``logits`` (else ``model``, with a warning)."""
    folded, n = fold_batchnorm(model)
    if n == 0:
        return model
    with torch.no_grad(), _unchecked(folded):
        diff = (folded(x) - logits).abs().max()
    if not diff <= FOLD_TOLERANCE * logits.abs().max().clamp_min(1.0):
        warnings.warn(f"{model.name}: folding BatchNorm changed the logits by {float(diff):.3g}, so its "
                      "conv/BatchNorm pairing is not the forward order; the attack runs on the unfolded model")
        return model
    return folded


def marginal_attack(model: CAMModel, x: torch.Tensor, e: int = 1, n_iter: int = 100, lamb: float = 100.0,
                    mode: str = "flip", target_map=None, mask=None, seed: int = 0, return_history: bool = False,
                    names: Sequence[str] | None = None, optimizer: str = "sign", restarts: int | None = None,
                    cam_loss: str | None = None, label_loss: str | None = None,
                    select: str | None = None, fold_bn: bool = True) -> AttackResult:
    """Attack the images ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` by changing only the mask's pixels (default: the
    ``e``-pixel frame). Defaults are the reference's (``n_iter=100``, ``lamb=100``, ``mode="flip"``,
    ``optimizer="sign"``).

    ``target_map``: ``(h, w)`` or ``(B, h, w)`` at CAM resolution (see :mod:`ama.shapes`) to pull the CAM
    towards; ``mask``: boolean ``(H, W)`` or ``(B, H, W)``; ``names``: one label per image for the tables.

    ``optimizer``: ``"sign"`` (the reference), ``"apgd"`` or ``"adam"`` (see the module docstring); ``restarts``,
    ``cam_loss`` (``normalized``/``raw``), ``label_loss`` (``ce``/``margin``) and ``select`` (``last``: the final
    iterate, the reference; ``best``: the best 8-bit iterate) default to the optimiser's
    :data:`OPTIMIZER_DEFAULTS`. The budget: ``n_iter`` forward+backward passes per image, restarts included,
    plus one forward pass of the clean images and two of the result (float and 8-bit), for every optimiser.
    ``fold_bn``: the optimiser's passes run on a copy of the model with BatchNorm folded into the convolutions
    (:func:`ama.models.fold_batchnorm`: the same function up to float rounding, about a third faster on the CPU);
    the clean and the reported adversarial outputs always come from ``model`` itself. ``False``: every pass on
    ``model``, bit for bit the reference's arithmetic.
    Runs on ``x``'s device moved to the model's device; returns an :class:`AttackResult` on the CPU.
    """
    _check_autograd("ama.marginal_attack")
    settings = optimizer_settings(optimizer, restarts, cam_loss, label_loss, select)
    lamb = float(lamb) if isinstance(lamb, numbers.Real) and not isinstance(lamb, bool) else lamb
    n_iter = int(n_iter) if _is_int(n_iter) else n_iter
    device = model.device if isinstance(model, CAMModel) else None
    if isinstance(x, torch.Tensor) and device is not None:
        x = x.to(device)
    m = _validate(model, x, e, n_iter, lamb, mode, target_map, mask)
    lengths = _run_lengths(n_iter, settings["restarts"] + 1)
    B = x.shape[0]
    if names is not None and len(names) != B:
        raise ValueError(f"names has {len(names)} entries for a batch of {B} images")
    layout = CPU_LAYOUT if x.device.type == "cpu" else torch.contiguous_format
    x = x.detach().contiguous(memory_format=layout)
    m4 = m.unsqueeze(1)  # (B, 1, H, W), broadcast over channels

    with torch.no_grad():
        clean = compute_cam(model, x)  # the clean class c and its CAM M_x: computed once
    T = _validate_target(target_map, B, tuple(clean.cam.shape[-2:]), x.device)
    objective = _Objective(clean, mode, lamb, T, settings["cam_loss"], settings["label_loss"])
    net = _pass_network(model, x, clean.logits) if fold_bn else model
    hist = {k: [] for k in ("loss", "cam_cosine", "target_cosine", "ce", "clean_class_held")} if return_history else None

    def record(loss, terms):
        hist["loss"].append(loss.detach().cpu())
        hist["ce"].append(terms["ce"].detach().cpu())
        hist["clean_class_held"].append(terms["held"].detach().cpu())
        hist["cam_cosine"].append(terms["cos_clean"].detach().cpu())
        if terms["cos_t"] is not None:
            hist["target_cosine"].append(terms["cos_t"].detach().cpu())

    best = settings["select"] == "best"
    best_n = best_loss = best_success = None
    with _unchecked(net), torch.enable_grad():
        for run, length in enumerate(lengths):
            opt = _OPTIMIZERS[optimizer](start_noise(x, seed, run).contiguous(memory_format=layout), length)
            for _ in range(length):
                leaf = opt.leaf() if hasattr(opt, "leaf") else opt.point().requires_grad_(True)
                n = opt.point()
                # best: the pass sees the 8-bit frame (straight-through gradient), so each pass judges the saved image
                n_in = n + (quantize(n) - n).detach() if best else n
                z = torch.where(m4, n_in, x).contiguous(memory_format=layout)  # where() follows the mask's layout
                loss, terms = objective(compute_cam(net, z, target=objective.c))
                (grad,) = torch.autograd.grad(loss.sum(), leaf)
                if hist is not None:
                    record(loss, terms)
                with torch.no_grad():
                    if best:
                        success = terms["success"]
                        if best_n is None:
                            best_n, best_loss, best_success = n.detach().clone(), loss.detach(), success
                        else:
                            improved = _better(success, loss.detach(), best_success, best_loss)
                            best_n = torch.where(improved.view(-1, 1, 1, 1), n.detach(), best_n)
                            best_loss = torch.where(improved, loss.detach(), best_loss)
                            best_success = torch.where(improved, success, best_success)
                    opt.step(grad, loss.detach())
                    if isinstance(opt, _Sign):
                        opt.n = opt.n.contiguous(memory_format=layout)
            if not best:
                best_n = opt.point().detach()

    with torch.no_grad(), _unchecked(model):
        z = torch.where(m4, best_n, x)
        z_q = torch.where(m4, quantize(best_n), x)
        adv, adv_cam_pred = _evaluate(model, z, objective.c)
        adv_q, q_cam_pred = _evaluate(model, z_q, objective.c)
        if hist is not None:
            record(*objective(adv_q if best else adv))
    history = None
    if hist is not None:
        history = {k: torch.stack(v) for k, v in hist.items() if v}
    params = dict(model=model.name, e=int(e) if mask is None else None, n_iter=n_iter, lamb=float(lamb), mode=mode,
                  seed=int(seed), targeted=T is not None, mask="frame" if mask is None else "custom", **settings)
    return _result(model, x, clean, (z, adv, adv_cam_pred), (z_q, adv_q, q_cam_pred), m, T, names, params, history)


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
        z = torch.where(m4, n, x)
        z_q = torch.where(m4, quantize(n), x)
        adv, adv_cam_pred = _evaluate(model, z, clean.target)
        adv_q, q_cam_pred = _evaluate(model, z_q, clean.target)
    params = dict(model=model.name, e=int(e) if mask is None else None, n_iter=0, lamb=0.0, mode="random",
                  seed=int(seed), targeted=False, mask="frame" if mask is None else "custom", optimizer="none",
                  restarts=0, cam_loss="", label_loss="", select="")
    return _result(model, x, clean, (z, adv, adv_cam_pred), (z_q, adv_q, q_cam_pred), m, None, names, params, None)


def evaluate_images(model: CAMModel, x: torch.Tensor, adv: torch.Tensor, e: int = 1, mask=None,
                    names: Sequence[str] | None = None, params: dict | None = None) -> AttackResult:
    """The :class:`AttackResult` of adversarial images made elsewhere (the PNGs a run saved, another tool's):
    ``adv`` ``(B, 3, H, W)`` in ``[0, 1]``, equal to the clean images ``x`` off the mask (default: the ``e``-pixel
    frame), else a ValueError. ``adv`` is both the ``adv`` and the ``adv_q`` set (saved images are 8-bit already);
    two forward passes. ``params``: recorded in ``result.params`` (``mode`` flip unless given)."""
    device = model.device
    x, adv = x.to(device), adv.to(device)
    m = _validate(model, x, e, 1, 0.0, "flip", None, mask)
    if adv.shape != x.shape:
        raise ValueError(f"adversarial images have shape {tuple(adv.shape)}, the clean ones {tuple(x.shape)}")
    check_images(adv)
    m4 = m.unsqueeze(1)
    if not torch.equal(torch.where(m4, x, adv), x):
        raise ValueError("the adversarial images differ from the clean ones outside the mask: not these images' "
                         "attack (wrong images, size or frame width?)")
    with torch.no_grad():
        clean = compute_cam(model, x)
        out, cam_pred = _evaluate(model, adv, clean.target)
    info = dict(model=model.name, e=int(e) if mask is None else None, mode="flip", targeted=False,
                mask="frame" if mask is None else "custom", **(params or {}))
    return _result(model, x, clean, (adv, out, cam_pred), (adv, out, cam_pred), m, None, names, info, None)


def _result(model, x, clean, adv, adv_q, mask, target, names, params, history) -> AttackResult:
    """The one ending of :func:`marginal_attack` and :func:`random_frame`: the three evaluated sets on the CPU
    (default layout). ``x``: the clean images, ``clean``: their CAMOutput (its class ``c`` is the prediction); ``adv``/``adv_q``: ``(images, CAMOutput, cam_pred)``."""
    cpu = lambda t: None if t is None else t.detach().cpu().contiguous()  # noqa: E731  (default layout out)
    class_names = list(model.class_names)
    sets = {"clean": Evaluation(cpu(x), cpu(clean.logits), cpu(clean.cam), cpu(clean.cam), class_names)}
    for key, (images, out, cam_pred) in (("adv", adv), ("adv_q", adv_q)):
        sets[key] = Evaluation(cpu(images), cpu(out.logits), cpu(out.cam), cpu(cam_pred), class_names)
    B = sets["adv"].images.shape[0]
    return AttackResult(evaluations=sets, mask=cpu(mask).clone(), target_map=cpu(target), class_names=class_names,
                        names=list(names) if names is not None else [str(i) for i in range(B)], params=params,
                        history=history)


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


# --- the notebook's experiment grid ----------------------------------------------------------
def run_settings(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=(1, 2, 4, 8), n_iters=(50, 100),
                 modes=("flip", "keep"), lamb: float = 100.0, seed: int = 0, mode_n_iters: dict | None = None,
                 mode_e: dict | None = None, history: bool = True, progress: bool = True):
    """Attack the batch ``x`` for every ``e`` x ``n_iter`` x ``mode`` and add the random-frame baseline per ``e``.

    ``mode_n_iters`` / ``mode_e``: per mode, the ``n_iter`` / ``e`` values to run (default: all).
    Returns ``(results, table)``: ``results[(setting, e, n_iter, mode)]`` -> :class:`AttackResult`
    (``setting`` ``"attack"`` or ``"random_frame"``, the baseline with ``n_iter`` 0 and mode ``"random"``) and all
    metric rows with a ``setting`` column. Histories are kept for every attack when ``history``.
    """
    import pandas as pd
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    widths = [e] if isinstance(e, int) else list(e)
    mode_n_iters, mode_e = mode_n_iters or {}, mode_e or {}
    jobs = [(w, it, mode) for w in widths for mode in modes for it in mode_n_iters.get(mode, n_iters)
            if w in mode_e.get(mode, widths)]
    results, frames = {}, []
    for e in widths:
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


# --- the ablation of the optimisers ----------------------------------------------------------
ABLATION_INGREDIENTS = ("select", "restarts", "cam_loss", "label_loss")
_TOGGLE = {"select": {"best": "last", "last": "best"}, "cam_loss": {"normalized": "raw", "raw": "normalized"},
           "label_loss": {"ce": "margin", "margin": "ce"}}


def ablation_settings(optimizers=tuple(OPTIMIZER_DEFAULTS), ingredients=ABLATION_INGREDIENTS) -> list[dict]:
    """Per optimiser its default settings (``variant`` ``"default"``) and, per ingredient, the default with that
    ingredient switched (``"select=last"``, ``"restarts=1"``, ``"cam_loss=raw"``, ...): ``select`` best <-> last,
    ``restarts`` 0 <-> 1 (restarts imply ``select="best"``), ``cam_loss`` normalized <-> raw, ``label_loss`` ce <->
    margin. Each a dict of :func:`marginal_attack` keywords plus ``variant``."""
    out = []
    for opt in optimizers:
        base = optimizer_settings(opt)
        out.append({**base, "variant": "default"})
        for ing in ingredients:
            if ing not in ABLATION_INGREDIENTS:
                raise ValueError(f"unknown ingredient {ing!r}; use some of {', '.join(ABLATION_INGREDIENTS)}")
            s = dict(base)
            if ing == "restarts":
                s["restarts"] = 0 if base["restarts"] else 1
                if s["restarts"]:
                    s["select"] = "best"
            else:
                s[ing] = _TOGGLE[ing][base[ing]]
                if s["select"] == "last" and s["restarts"]:
                    continue  # restarts need the best iterate: no such variant
            out.append({**s, "variant": f"{ing}={s[ing]}"})
    return out


def ablation(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=(1, 2, 4, 8), budgets=(10, 30, 100),
             optimizers=tuple(OPTIMIZER_DEFAULTS), ingredients=ABLATION_INGREDIENTS, variant_e=None, budget_e=None,
             optimizer_e=None, keep_e=(), keep_optimizers=None, lamb: float = 100.0, mode: str = "flip", seed: int = 0,
             results: dict | None = None, progress: bool = True):
    """Every optimiser's default at the largest budget and every ``e`` (``optimizer_e``: ``{optimizer: [e, ...]}``
    narrows it per optimiser), at every budget (``n_iter`` in ``budgets``,
    passes per image) at each ``e`` of ``budget_e`` (default: every ``e``), each ingredient switched
    (:func:`ablation_settings`) at the largest budget and each ``e`` of ``variant_e`` (default: every ``e``), and
    the default of each of ``keep_optimizers`` (default: all) in ``keep`` mode at the largest budget and each ``e``
    of ``keep_e``. Returns the tidy table of
    :func:`ama.metrics.attack_metrics` rows (one per image x quantized) with the columns ``variant``, ``cam_loss``,
    ``label_loss`` and ``select`` added.

    ``results``: a dict of :class:`AttackResult` keyed ``(optimizer, variant, e, n_iter, mode)``; a setting found
    there is reused (e.g. the reference runs of :func:`run_settings`: ``("sign", "default", e, n_iter, "flip")``),
    the others are added to it."""
    import pandas as pd
    from tqdm import tqdm

    widths = [e] if isinstance(e, int) else list(e)
    variant_e = widths if variant_e is None else variant_e
    budget_e = widths if budget_e is None else budget_e
    top = max(budgets)
    jobs = []
    optimizer_e = optimizer_e or {}
    for s in ablation_settings(optimizers, ingredients):
        default = s["variant"] == "default"
        for w in optimizer_e.get(s["optimizer"], widths):
            for it in sorted(budgets):
                if (it == top and (default or w in variant_e)) or (default and w in budget_e):
                    jobs.append((s, w, it, mode))
            if default and w in keep_e and (keep_optimizers is None or s["optimizer"] in keep_optimizers):
                jobs.append((s, w, top, "keep"))
    results = {} if results is None else results
    frames = []
    for s, e, it, m in tqdm(jobs, desc=f"ablation {model.name}", mininterval=30, disable=not progress):
        kw = {k: s[k] for k in ("optimizer", "restarts", "cam_loss", "label_loss", "select")}
        key = (s["optimizer"], s["variant"], e, it, m)
        if key not in results:
            results[key] = marginal_attack(model, x, e=e, n_iter=it, lamb=lamb, mode=m, seed=seed, names=names, **kw)
        frames.append(results[key].metrics.assign(variant=s["variant"], cam_loss=s["cam_loss"],
                                                  label_loss=s["label_loss"], select=s["select"]))
    return pd.concat(frames, ignore_index=True)


def ablation_summary(table) -> "pandas.DataFrame":  # noqa: F821
    """Per ``model, mode, optimizer, variant, e, n_iter, quantized``: ``fooling_rate``, ``cam_cosine`` (means),
    ``kept_rate`` (share of images whose label is kept) and ``n_images``, from an :func:`ablation` table."""
    keys = ["model", "mode", "optimizer", "variant", "e", "n_iter", "quantized"]
    g = table.assign(kept=~table.fooled.astype(bool)).groupby(keys, sort=True)
    out = g.agg(fooling_rate=("fooled", "mean"), cam_cosine=("cam_cosine", "mean"), kept_rate=("kept", "mean"),
                n_images=("image", "size"))
    return out.reset_index()
