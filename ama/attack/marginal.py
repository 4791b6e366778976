"""The adversarial marginal attack (AMA): change only an ``e``-pixel frame of the image.

Reference algorithm (``SCIENCE.md`` section 4), the 2021 code's loop in ``[0, 1]`` pixel space (held against a port of
it, bit for bit, by ``tests/test_original_loop.py``):

* mask ``m``: the top and bottom ``e`` rows and the left and right ``e`` columns (:func:`ama.geometry.frame_mask`);
* ``z = where(m, clamp(n, 0, 1), x)``: pixels off the mask are the input's, bit for bit;
* start: ``n ~ U[0, 1]`` from a seeded ``torch.Generator`` (drawn on the CPU, so any device starts alike;
  one draw shared by the images of a batch, see :func:`start_noise`);
* objective, maximised, per image ``b``:
  ``L_b = CE(f(z_b), c_b) * [argmax f(z_b) == c_b] + lamb * (1 - cos(M_z_b, M_x_b))``,
  ``c`` the clean prediction and ``M_x`` the clean CAM of ``c`` (both computed once, fixed), ``M_z`` the CAM
  of ``c`` on ``z``, cosine over the flattened ``h x w`` normalised maps;
* update ``n <- n + (1 / n_iter) * sign(dL/dn)``, ``n_iter`` times, ``n`` never clipped: a value past a bound gets a
  zero gradient through the clamp and stays there; then the last ``z`` is evaluated once more, as optimised and 8-bit.

Batching. The reference script attacks one image at a time. Here the gradient is taken of ``sum_b L_b``, so image
``b``'s update is the batch-of-one reference update and does not depend on the other images of the batch, up to float
rounding: a batched convolution sums in another order than a batch-of-one one, so logits, CAMs and gradients agree
with a batch-of-one run to about the 6th significant digit, not bit for bit, and a sign flip of a near-zero gradient
component can then move a frame pixel another way (a batch *mean* of CE over the still-fooled images would scale the
CE term of each image by ``1 / k``, ``k`` the number of images not yet fooled, and so couple the images; the kit avoids
that on purpose). ``sign()`` makes the overall scale irrelevant per image.

The objective is composed of small callables (:class:`Objective`): a label term (:data:`LABEL_TERMS`: ``ce``, the
reference, or ``margin``), a view of the CAM (:data:`CAM_VIEWS`: the normalised maps, the reference, or the ReLU'd
raw ones) and a CAM term (away from the clean CAM, or towards a target map). Optimisers, the budget and the best
8-bit iterate: :mod:`ama.attack.optimizers`. Variants: ``mode="keep"`` keeps the label (the label term is negated);
``target_map`` pulls the CAM towards a map; ``mask`` replaces the frame by any boolean ``(H, W)`` or ``(B, H, W)`` mask.

Only input gradients are computed (``torch.autograd.grad`` with respect to the frame); the model's parameters are
frozen. On the CPU the iterates are kept channels-last (:data:`CPU_LAYOUT`), which oneDNN's convolutions run 1.1-1.2x
faster than the default layout (``benchmarks/attack_speed.py``); this changes float rounding only, but a sign flip
early on sends a frame pixel down another path, so results agree with a default-layout run in distribution, not bit
for bit (``ama.attack.marginal.CPU_LAYOUT = torch.contiguous_format`` restores the default layout). The optimiser's passes run
on a copy of the model with BatchNorm folded into its convolutions (``fold_bn``, 1.3x faster on the CPU for lite0,
:func:`ama.kernels.cam_model.attack_network`), with the same caveat; the clean and adversarial outputs that the result
reports come from the model itself. On CUDA the backward of bilinear upsampling and some convolutions is not
deterministic: runs agree in distribution, not bit for bit; on the CPU the same seed gives the same result.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..defaults import LAMB, N_ITER, SEED, check_lamb, check_n_iter, check_seed
from ..geometry import frame_mask
from ..kernels.cam import CAMOutput, compute_cam, normalize_maps, raw_cam_from_features
from ..kernels.cam_model import CAMModel, attack_network, check_images
from . import optimizers
from .result import RANDOM, AttackParams, AttackResult, Evaluation

__all__ = ["MODES", "COS_EPS", "CPU_LAYOUT", "ATTACK_BATCH", "CALLS", "attack_batch", "start_noise", "quantize",
           "cross_entropy_term", "margin_term", "LABEL_TERMS", "CAM_VIEWS", "objective_cosine", "Objective", "marginal_attack",
           "random_frame", "evaluate_images"]

MODES = ("flip", "keep")
COS_EPS = 1e-8
CPU_LAYOUT = torch.channels_last  # memory layout of the iterates on the CPU (torch.contiguous_format: the default)
ATTACK_BATCH = {"cpu": 16, "cuda": 64}  # images attacked together, by device type: on the CPU a larger batch runs
# slower per image and holds more memory; on one H200 lite0 ran 737 image-passes/s at batch 8, 3,259 at batch 64
CALLS: Counter = Counter()  # how often this process called each entry point ("marginal_attack", "evaluate_images"):
# an attack's outcome rests on sign() steps that flip on float rounding, so the run layer reads these counts to mark
# the tables written after them as stochastic (ama.store.lineage); the kernel only counts


def attack_batch(device) -> int:
    """How many images the kit's experiments attack together on ``device`` (:data:`ATTACK_BATCH`; another device
    type: the CPU's). An image's result does not depend on its batch but for float rounding."""
    return ATTACK_BATCH.get(torch.device(device).type, ATTACK_BATCH["cpu"])


# --- start, quantisation -------------------------------------------------------------------------
def start_noise(x: torch.Tensor, seed: int = SEED, run: int = 0) -> torch.Tensor:
    """The start ``n``: one ``U[0, 1]`` draw of shape ``(3, H, W)`` from ``torch.Generator().manual_seed(seed)``
    on the CPU, shared by every image of the batch (as a batch-of-one run with that seed would start), so that an
    image's result does not depend on its batch or its position in it, except in float rounding. ``run`` ``k``: the
    ``k + 1``-th draw of that generator (the start of restart ``k``). ``seed``: an integer in ``[0, 2**63 - 1]``.
    ``(B, 3, H, W)`` on ``x``'s device."""
    gen = torch.Generator().manual_seed(check_seed(seed))
    for _ in range(int(run) + 1):
        n = torch.rand(x.shape[1:], generator=gen, dtype=torch.float32)
    n = n.to(device=x.device, dtype=x.dtype)
    return n.unsqueeze(0).expand_as(x).clone()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to the nearest of the 256 8-bit levels (what a PNG holds)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


# --- the objective ---------------------------------------------------------------------------------
def cross_entropy_term(logits: torch.Tensor, c: torch.Tensor, flip: bool) -> torch.Tensor:
    """``(B,)``: flip: ``CE(f(z), c)`` while ``c`` is still predicted, else 0; keep: ``-CE``. ``flip``: True for the
    flip mode, False for keep."""
    ce = F.cross_entropy(logits, c, reduction="none")
    return ce * (logits.argmax(1) == c) if flip else -ce


def margin_term(logits: torch.Tensor, c: torch.Tensor, flip: bool) -> torch.Tensor:
    """``(B,)``: flip: ``max_{k != c} f_k - f_c`` while ``c`` is still predicted (continuous at the boundary), else 0;
    keep: ``-relu(max_{k != c} f_k - f_c)``. ``flip``: True for the flip mode, False for keep."""
    z_c = logits.gather(1, c[:, None]).squeeze(1)
    other = logits.scatter(1, c[:, None], float("-inf")).amax(1)
    return (other - z_c) * (logits.argmax(1) == c) if flip else -F.relu(other - z_c)


LABEL_TERMS: dict[str, Callable] = {"ce": cross_entropy_term, "margin": margin_term}
# What the CAM term compares: the min-max normalised maps (the reference), or the ReLU'd raw ones (same cosine up to
# the min shift; its gradient reaches every positive cell, not only the two extremes).
CAM_VIEWS: dict[str, Callable[[CAMOutput], torch.Tensor]] = {"normalized": lambda out: out.cam,
                                                               "raw": lambda out: F.relu(out.raw)}


def objective_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B,)`` cosine of the flattened maps ``a`` and ``b`` ``(B, h, w)``, differentiable, with the objective's
    ``COS_EPS`` (the one the attack optimises; :func:`ama.kernels.metrics.cosine` is the one the tables report)."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=COS_EPS)


class Objective:
    """The attack's objective per image (maximised) from one forward pass's :class:`~ama.kernels.cam.CAMOutput`:
    ``label(logits, c, flip) + lamb * cam_term``, where ``cam_term = 1 - cos(view(z), view(x))`` (away from the clean
    CAM) or, with a ``target`` map, ``-(1 - cos(view(z), target))`` (towards it). ``success``: flip -> the label
    changed; keep -> the label held."""

    def __init__(self, clean: CAMOutput, mode: str, lamb: float, target, cam_loss: str, label_loss: str):
        self.c, self.flip, self.lamb, self.target = clean.target, mode == "flip", lamb, target
        self.view, self.label = CAM_VIEWS[cam_loss], LABEL_TERMS[label_loss]
        self.reference = self.view(clean)

    def __call__(self, out: CAMOutput) -> tuple[torch.Tensor, dict]:
        held = out.logits.argmax(1) == self.c
        label = self.label(out.logits, self.c, self.flip)
        cam = self.view(out)
        cos_clean = objective_cosine(cam, self.reference)
        if self.target is None:
            cos_t, cam_term = None, self.lamb * (1 - cos_clean)        # push away from the clean CAM
        else:
            cos_t = objective_cosine(cam, self.target)
            cam_term = -self.lamb * (1 - cos_t)                         # pull towards the target
        ce = F.cross_entropy(out.logits, self.c, reduction="none")
        return label + cam_term, dict(ce=ce, held=held, cos_clean=cos_clean, cos_t=cos_t,
                                      success=~held if self.flip else held)


# --- validation, evaluation (shared by the entry points) --------------------------------------------
def _check_autograd(what: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} needs autograd (input gradients): call it outside torch.inference_mode() "
                           "(torch.no_grad() around it is fine)")


def _prepare(model, x, e, mask, names) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The checks of every entry point, once: the model, the images (moved to the model's device), the mask
    ``(B, H, W)`` (the ``e``-pixel frame unless ``mask`` is given) and one name per image."""
    if not isinstance(model, CAMModel):
        raise TypeError(f"model must be an ama.CAMModel (see ama.load_model / ama.wrap_model), got {type(model).__name__}")
    if isinstance(x, torch.Tensor):
        x = x.to(model.device)
    check_images(x)
    B, _, H, W = x.shape
    if mask is None:
        m = frame_mask((H, W), e, device=x.device)  # validates e against the image size
    else:
        m = torch.as_tensor(mask, device=x.device)
        if m.dtype != torch.bool:
            raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
        if m.shape not in ((H, W), (B, H, W)):
            raise ValueError(f"mask must have shape (H, W) = {(H, W)} or (B, H, W) = {(B, H, W)}, got {tuple(m.shape)}")
        if not m.flatten(-2).any(-1).all():
            raise ValueError("mask selects no pixel (of at least one image); nothing to attack")
    if names is not None and len(names) != B:
        raise ValueError(f"names has {len(names)} entries for a batch of {B} images")
    names = list(names) if names is not None else [str(i) for i in range(B)]
    return x, m.expand(B, H, W), names


def _target(target_map, B: int, hw, device) -> torch.Tensor | None:
    if target_map is None:
        return None
    t = torch.as_tensor(target_map, device=device)
    t = t if t.is_floating_point() else t.float()
    if t.shape == hw:
        t = t.expand(B, *hw)
    elif t.shape != (B, *hw):
        raise ValueError(f"target_map must have shape (h, w) = {tuple(hw)} or (B, h, w) = {(B, *hw)} (the CAM's), "
                         f"got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or not (t.flatten(1).abs().amax(1) > 0).all():
        raise ValueError("target_map must be finite and not all zero")
    return t.float()


def _evaluate(model, z, c) -> tuple[CAMOutput, torch.Tensor]:
    """``(CAMOutput, CAM of the own prediction)`` for images ``z``, from one forward pass."""
    out = compute_cam(model, z, target=c)
    pred = out.logits.argmax(1)
    return out, normalize_maps(F.relu(raw_cam_from_features(model, out.features, pred)))


def _result(model, x, clean, adv, adv_q, mask, target, names, params: AttackParams, history) -> AttackResult:
    """The one ending of every entry point: the three evaluated sets on the CPU (default layout). ``x``: the clean
    images, ``clean``: their CAMOutput; ``adv``/``adv_q``: ``(images, CAMOutput, cam_pred)``."""
    cpu = lambda t: None if t is None else t.detach().cpu().contiguous()  # noqa: E731  (default layout out)
    class_names = list(model.class_names)
    sets = {"clean": Evaluation(cpu(x), cpu(clean.logits), cpu(clean.cam), cpu(clean.cam), class_names)}
    for key, (images, out, cam_pred) in (("adv", adv), ("adv_q", adv_q)):
        sets[key] = Evaluation(cpu(images), cpu(out.logits), cpu(out.cam), cpu(cam_pred), class_names)
    return AttackResult(evaluations=sets, mask=cpu(mask).clone(), target_map=cpu(target), class_names=class_names,
                        names=names, params=params, history=history)


def _frame_params(model, e, mask, **kw) -> AttackParams:
    return AttackParams(model=model.name, e=int(e) if mask is None else None,
                        mask="frame" if mask is None else "custom", **kw)


class _History:
    """Per-pass records of the objective's terms: ``(passes, B)`` tensors on the CPU."""

    KEYS = {"loss": None, "cam_cosine": "cos_clean", "target_cosine": "cos_t", "ce": "ce", "clean_class_held": "held"}

    def __init__(self):
        self.rows = {k: [] for k in self.KEYS}

    def record(self, loss: torch.Tensor, terms: dict) -> None:
        for key, term in self.KEYS.items():
            value = loss if term is None else terms[term]
            if value is not None:
                self.rows[key].append(value.detach().cpu())

    def tables(self) -> dict:
        return {k: torch.stack(v) for k, v in self.rows.items() if v}


# --- the entry points ------------------------------------------------------------------------------
def marginal_attack(model: CAMModel, x: torch.Tensor, e: int = 1, n_iter: int = N_ITER, lamb: float = LAMB,
                    mode: str = "flip", target_map=None, mask=None, seed: int = SEED, return_history: bool = False,
                    names: Sequence[str] | None = None, optimizer: str = optimizers.ORIGINAL,
                    restarts: int | None = None, cam_loss: str | None = None, label_loss: str | None = None,
                    select: str | None = None, fold_bn: bool = True) -> AttackResult:
    """Attack the images ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` by changing only the mask's pixels (default: the
    ``e``-pixel frame). Defaults are the reference's (``n_iter``, ``lamb`` and ``seed`` those of :mod:`ama.defaults`,
    ``mode="flip"``, ``optimizer="sign"``).

    ``target_map``: ``(h, w)`` or ``(B, h, w)`` at CAM resolution (see :mod:`ama.inputs.targets`) to pull the CAM
    towards; ``mask``: boolean ``(H, W)`` or ``(B, H, W)``; ``names``: one label per image for the tables.

    ``optimizer``: ``"sign"`` (the reference), ``"apgd"`` or ``"adam"`` (:mod:`ama.attack.optimizers`); ``restarts``,
    ``cam_loss`` (``normalized``/``raw``), ``label_loss`` (``ce``/``margin``) and ``select`` (``last``: the final
    iterate, the reference; ``best``: the best 8-bit iterate, judged on the image a PNG would hold: each pass then sees
    the 8-bit frame, with a straight-through gradient) default to the optimiser's
    :data:`ama.attack.optimizers.DEFAULTS`. The budget: ``n_iter`` forward+backward passes per image, restarts included,
    plus one forward pass of the clean images and two of the result (float and 8-bit), for every optimiser. ``fold_bn``:
    the optimiser's passes run on a copy of the model with BatchNorm folded into the convolutions (the same function up
    to float rounding, about a third faster on the CPU); the clean and the reported adversarial outputs always come from
    ``model`` itself. ``False``: every pass on ``model``, bit for bit the reference's arithmetic.
    Runs on the model's device; returns an :class:`~ama.attack.result.AttackResult` on the CPU.
    ``return_history``: keep the per-iteration CAM cosine and prediction (``AttackResult.history``)."""
    _check_autograd("ama.marginal_attack")
    CALLS["marginal_attack"] += 1
    settings = optimizers.settings(optimizer, restarts, cam_loss, label_loss, select)
    n_iter, lamb = check_n_iter(n_iter), check_lamb(lamb)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    x, m, names = _prepare(model, x, e, mask, names)
    lengths = optimizers.run_lengths(n_iter, settings["restarts"] + 1)
    layout = CPU_LAYOUT if x.device.type == "cpu" else torch.contiguous_format
    x = x.detach().contiguous(memory_format=layout)
    m4 = m.unsqueeze(1)  # (B, 1, H, W), broadcast over channels

    with torch.no_grad():
        clean = compute_cam(model, x)  # the clean class c and its CAM M_x: computed once
    T = _target(target_map, x.shape[0], tuple(clean.cam.shape[-2:]), x.device)
    objective = Objective(clean, mode, lamb, T, settings["cam_loss"], settings["label_loss"])
    net = attack_network(model, x, clean.logits) if fold_bn else model
    history = _History() if return_history else None
    best = optimizers.BestIterate() if settings["select"] == "best" else None

    with net.unchecked_inputs(), torch.enable_grad():
        for run, length in enumerate(lengths):
            start = start_noise(x, seed, run).contiguous(memory_format=layout)
            opt = optimizers.OPTIMIZERS[settings["optimizer"]](start, length, layout=layout)
            for _ in range(length):
                leaf, n = opt.leaf(), opt.point()
                # best: the pass sees the 8-bit frame (straight-through gradient), so each pass judges the saved image
                n_in = n + (quantize(n) - n).detach() if best is not None else n
                z = torch.where(m4, n_in, x).contiguous(memory_format=layout)  # where() follows the mask's layout
                loss, terms = objective(compute_cam(net, z, target=objective.c))
                (grad,) = torch.autograd.grad(loss.sum(), leaf)
                if history is not None:
                    history.record(loss, terms)
                with torch.no_grad():
                    if best is not None:
                        best.update(n, loss, terms["success"])
                    opt.step(grad, loss.detach())
    final = best.point if best is not None else opt.point().detach()

    with torch.no_grad(), model.unchecked_inputs():
        z, z_q = torch.where(m4, final, x), torch.where(m4, quantize(final), x)
        adv, adv_cam_pred = _evaluate(model, z, objective.c)
        adv_q, q_cam_pred = _evaluate(model, z_q, objective.c)
        if history is not None:
            history.record(*objective(adv_q if best is not None else adv))
    params = _frame_params(model, e, mask, mode=mode, n_iter=n_iter, lamb=lamb, seed=int(seed),
                           targeted=T is not None, **settings)
    return _result(model, x, clean, (z, adv, adv_cam_pred), (z_q, adv_q, q_cam_pred), m, T, names, params,
                   history.tables() if history is not None else None)


def random_frame(model: CAMModel, x: torch.Tensor, e: int = 1, mask=None, seed: int = SEED,
                 names: Sequence[str] | None = None) -> AttackResult:
    """The baseline: the same frame (or mask) filled with uniform noise, not optimised.

    The noise is the attack's own starting point for the same ``seed``; ``params.mode`` is ``"random"`` and ``n_iter``
    0. Evaluated as-is and 8-bit quantised, like the attack.
    ``mask``: boolean ``(H, W)`` or ``(B, H, W)`` in place of the frame."""
    x, m, names = _prepare(model, x, e, mask, names)
    n, m4 = start_noise(x, seed), m.unsqueeze(1)
    with torch.no_grad():
        clean = compute_cam(model, x)
        z, z_q = torch.where(m4, n, x), torch.where(m4, quantize(n), x)
        adv, adv_cam_pred = _evaluate(model, z, clean.target)
        adv_q, q_cam_pred = _evaluate(model, z_q, clean.target)
    params = _frame_params(model, e, mask, mode=RANDOM, seed=int(seed))
    return _result(model, x, clean, (z, adv, adv_cam_pred), (z_q, adv_q, q_cam_pred), m, None, names, params, None)


def evaluate_images(model: CAMModel, x: torch.Tensor, adv: torch.Tensor, e: int = 1, mask=None,
                    names: Sequence[str] | None = None, params: dict | None = None) -> AttackResult:
    """The :class:`~ama.attack.result.AttackResult` of adversarial images made elsewhere (the PNGs a run saved,
    another tool's): ``adv`` ``(B, 3, H, W)`` in ``[0, 1]``, equal to the clean images ``x`` off the mask (default: the
    ``e``-pixel frame), else a ValueError. ``adv`` is both the ``adv`` and the ``adv_q`` set (saved images are 8-bit
    already); two forward passes. ``params``: :class:`~ama.attack.result.AttackParams` fields to record (how the
    images were made: ``n_iter``, ``optimizer``...; ``mode`` flip unless given). ``mask``: boolean ``(H, W)`` or ``(B,
    H, W)`` in place of the frame."""
    x, m, names = _prepare(model, x, e, mask, names)
    CALLS["evaluate_images"] += 1
    adv = adv.to(x.device)
    if adv.shape != x.shape:
        raise ValueError(f"adversarial images have shape {tuple(adv.shape)}, the clean ones {tuple(x.shape)}")
    check_images(adv)
    if not torch.equal(torch.where(m.unsqueeze(1), x, adv), x):
        raise ValueError("the adversarial images differ from the clean ones outside the mask: not these images' "
                         "attack (wrong images, size or frame width?)")
    with torch.no_grad():
        clean = compute_cam(model, x)
        out, cam_pred = _evaluate(model, adv, clean.target)
    info = _frame_params(model, e, mask).replace(**(params or {}))
    return _result(model, x, clean, (adv, out, cam_pred), (adv, out, cam_pred), m, None, names, info, None)
