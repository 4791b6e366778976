"""The model wrapper CAM needs: a frozen CNN split into ``features`` and a global-average-pool + linear ``head``.

A :class:`CAMModel` takes images in ``[0, 1]`` pixel space (normalisation lives inside it) and splits the network
into ``features`` (image -> ``(B, K, h, w)``) and ``head`` (global average pool + linear -> ``(B, C)`` logits).
:func:`wrap_model` wraps your own pair; :mod:`ama.inputs.models` loads the kit's networks. Every network is put in eval
mode with frozen parameters before its first forward pass (:func:`freeze`), so no probe moves BatchNorm statistics.
:func:`fold_batchnorm` makes the faster copy the attack's passes run on (:func:`attack_network` checks it first).
"""
from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelError", "Preprocessing", "check_images", "CAMModel", "freeze",
           "wrap_model", "fold_batchnorm", "FOLD_TOLERANCE", "ieee_fp32", "attack_network", "predict"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelError(ValueError):
    """A model that cannot be loaded or cannot be explained by CAM."""


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes a ``(3, size, size)`` tensor in ``[0, 1]``."""

    resize: int
    crop: int
    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        mode = T.InterpolationMode(self.interpolation)
        return T.Compose([T.Resize(self.resize, interpolation=mode), T.CenterCrop(self.crop), T.ToTensor()])


def check_images(x: torch.Tensor) -> None:
    """Raise a one-line ``ValueError`` unless ``x`` is a non-empty float32 ``(B, 3, H, W)`` batch of finite values
    in ``[0, 1]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {x.dtype}; use x.float() / 255 for 8-bit images")
    if x.dtype != torch.float32:
        raise ValueError(f"images must be float32 (the models' dtype), got {x.dtype}; use x.float()")
    if x.ndim != 4 or x.shape[1] != 3:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if x.ndim == 4 and x.shape[-1] == 3 else ""
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image")
    finite = torch.isfinite(x.detach())
    if not finite.all():
        bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"images hold NaN or inf pixels (batch index {bad}); every pixel must be a finite value "
                         "in [0, 1]")
    lo, hi = torch.aminmax(x.detach())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"images must lie in [0, 1] pixel space, got range [{lo.item():.3g}, {hi.item():.3g}]; "
                         "do not normalise them, the model does")


class CAMModel(nn.Module):
    """A frozen CNN split for CAM; inputs are ``(B, 3, H, W)`` images in ``[0, 1]``.

    ``model(x)`` -> logits ``(B, C)``; ``model.features(x)`` -> ``A`` ``(B, K, h, w)``;
    ``model.head(A)`` -> logits, equal to ``fc(mean_hw A)``.
    """

    def __init__(self, name: str, backbone: nn.Module, fc: nn.Linear, preprocessing: Preprocessing,
                 class_names: Sequence[str] | None = None, check_inputs: bool = True):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.fc = fc
        self.preprocessing = preprocessing
        self.preprocess = preprocessing.transform()
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(fc.out_features)]
        self.check_inputs = check_inputs
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    # --- the split -------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` pixels -> the network's input space."""
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> feature map ``A`` ``(B, K, h, w)``."""
        if self.check_inputs:
            check_images(x)
        return self.backbone(self.normalize(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, K, h, w)`` -> logits ``(B, C)``: global average pool, then the linear layer."""
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True):  # noqa: D102 - always eval: BN statistics stay frozen
        return super().train(False)

    @contextlib.contextmanager
    def unchecked_inputs(self):
        """Skip the per-call input check inside a loop whose images are in ``[0, 1]`` by construction."""
        old = self.check_inputs
        self.check_inputs = False
        try:
            yield self
        finally:
            self.check_inputs = old

    # --- facts -----------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """Linear weights ``W`` ``(C, K)``."""
        return self.fc.weight

    @property
    def bias(self) -> torch.Tensor:
        """Linear bias ``b`` ``(C,)``."""
        return self.fc.bias if self.fc.bias is not None else torch.zeros_like(self.fc.weight[:, 0])

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images :attr:`preprocess` makes."""
        return (self.preprocessing.crop, self.preprocessing.crop)

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def feature_size(self, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(h, w)`` of the feature map for an input of ``size`` (default :attr:`input_size`)."""
        H, W = size or self.input_size
        with torch.no_grad():
            return tuple(self.features(torch.zeros(1, 3, H, W, device=self.device)).shape[-2:])

    def class_name(self, index: int) -> str:
        return self.class_names[int(index)]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, classes={len(self.class_names)}"


# --- freezing, wrapping ------------------------------------------------------------------
def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients, set before any forward pass.

    Networks are built in training mode; one forward pass in that mode (a shape probe, a warm-up) would
    overwrite every BatchNorm layer's running statistics and count ``num_batches_tracked``.
    ``net``: any module; returned frozen."""
    net.eval()
    net.requires_grad_(False)
    return net


def _check_pair(backbone: nn.Module, fc: nn.Module, input_size: int, name: str) -> None:
    """Probe ``backbone`` once (eval mode, no grad, one ``input_size`` image) and say what does not fit ``fc``."""
    if not isinstance(backbone, nn.Module):
        raise ModelError(f"{name}: backbone must be an nn.Module (image -> (B, K, h, w)), got {type(backbone).__name__}")
    if not isinstance(fc, nn.Linear):
        raise ModelError(f"{name}: fc must be an nn.Linear (K -> classes), got {type(fc).__name__}; CAM needs a "
                         "linear layer after global average pooling")
    try:
        ref = next(backbone.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    size = int(input_size)
    with torch.no_grad():
        try:
            feats = backbone(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype))
        except Exception as err:
            raise ModelError(f"{name}: the backbone fails on a (1, 3, {size}, {size}) image: "
                             f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ModelError(f"{name}: the backbone must return a (B, K, h, w) feature map, got {shape}; cut it before "
                         "its pooling/flatten")
    if feats.shape[1] != fc.in_features:
        raise ModelError(f"{name}: the backbone gives K = {feats.shape[1]} channels but fc takes "
                         f"{fc.in_features} features; they must match")


def wrap_model(backbone: nn.Module, fc: nn.Linear, *, name: str = "custom", input_size: int = 224,
               mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names: Sequence[str] | None = None) -> CAMModel:
    """Wrap your own ``backbone`` (image -> ``(B, K, h, w)``) and ``fc`` as a :class:`CAMModel`.

    The pair is probed once (eval mode, no grad, one random image): a backbone that does not give a 4-D map, or
    whose channel count is not ``fc.in_features``, is refused with a one-line :class:`ModelError`.
    ``input_size``: the side the images are resized and cropped to; ``mean``, ``std``: the normalisation the network was
    trained with (applied inside the model); ``class_names``: one per output, for titles."""
    prep = Preprocessing(resize=input_size, crop=input_size, interpolation="bilinear", mean=tuple(mean), std=tuple(std))
    if isinstance(backbone, nn.Module):
        freeze(backbone)
    if isinstance(fc, nn.Module):
        freeze(fc)
    _check_pair(backbone, fc, input_size, name)
    if class_names is not None and len(class_names) != fc.out_features:
        raise ModelError(f"{name}: class_names has {len(class_names)} entries for {fc.out_features} classes")
    return CAMModel(name, backbone, fc, prep, class_names)


# --- BatchNorm folding for the attack's passes ----------------------------------------------
def _fold_children(module: nn.Module) -> int:
    """Fold, in place, each ``Conv2d`` child that is directly followed (in registration order) by a ``BatchNorm2d``
    child of the same width; a timm ``BatchNormAct2d`` leaves its dropout and activation behind. Returns the count."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    count = 0
    kids = list(module.named_children())
    for (conv_name, conv), (bn_name, bn) in zip(kids, kids[1:]):
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels
                and bn.running_mean is not None and bn.running_var is not None):
            fused = fuse_conv_bn_eval(conv, bn)
            if conv.weight.is_contiguous(memory_format=torch.channels_last):
                fused = fused.to(memory_format=torch.channels_last)
            setattr(module, conv_name, fused)  # frozen with the copy by fold_batchnorm
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(module, bn_name, nn.Sequential(*after) if after else nn.Identity())
            count += 1
    return count + sum(_fold_children(child) for _, child in module.named_children())


def fold_batchnorm(model: "CAMModel") -> tuple["CAMModel", int]:
    """``(copy of model with its eval-mode BatchNorm layers folded into the convolutions before them, number
    folded)``. The same function up to float rounding and about a third faster for a forward + input-gradient pass
    on the CPU (BatchNorm's backward is gone); ``model`` is untouched. The pairing is structural (a convolution and
    the BatchNorm registered right after it), so a caller checks the copy's outputs against ``model``'s once
    (:func:`attack_network` does, on the attack's clean images) before trusting it."""
    folded = copy.deepcopy(model)
    n = _fold_children(folded.backbone)
    return freeze(folded), n


_FOLDED: "weakref.WeakKeyDictionary[CAMModel, tuple]" = weakref.WeakKeyDictionary()


def _folded(model: "CAMModel") -> tuple["CAMModel", int]:
    """:func:`fold_batchnorm` of ``model``, remembered (weakly) until a parameter moves or is modified in place."""
    params = list(model.parameters())
    key = (tuple(str(p.device) for p in params[:1]), tuple(p._version for p in params), len(params))
    cached = _FOLDED.get(model)
    if cached is None or cached[0] != key:
        cached = (key, *fold_batchnorm(model))
        _FOLDED[model] = cached
    return cached[1], cached[2]


FOLD_TOLERANCE = 1e-3  # folded logits within this x max |logit| of the model's, or the model itself is used


@contextlib.contextmanager
def ieee_fp32():
    """CUDA convolutions and matrix products in IEEE fp32 inside the block, as on the CPU. PyTorch runs cuDNN
    convolutions in TF32 by default (about 1e-3 relative per product): on an H200 lite0's logits moved by 0.013
    between two TF32 evaluations of the same function, a folded and an unfolded one. Nothing changes on the CPU."""
    knobs = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    before = [k.fp32_precision for k in knobs]
    try:
        for k in knobs:
            k.fp32_precision = "ieee"
        yield
    finally:
        for k, value in zip(knobs, before):
            k.fp32_precision = value


def attack_network(model: CAMModel, x: torch.Tensor, logits: torch.Tensor) -> CAMModel:
    """The network an attack's passes run on: ``model`` with BatchNorm folded (:func:`fold_batchnorm`) when it has
    any and the copy's logits on the clean images ``x`` agree with ``logits`` (the model's own) within
    :data:`FOLD_TOLERANCE`, both in IEEE fp32 (:func:`ieee_fp32`; on CUDA the model's are computed again for that);
    else ``model``, with a warning. The folded copy is made once per model and kept while its parameters are
    unchanged (same device, no in-place update): an attack call no longer pays a deep copy."""
    folded, n = _folded(model)
    if n == 0:
        return model
    with torch.no_grad(), folded.unchecked_inputs(), ieee_fp32():
        if x.is_cuda:  # the caller's logits carry TF32 rounding: compare like with like
            logits = model(x)
        diff = (folded(x) - logits).abs().max()
    if not diff <= FOLD_TOLERANCE * logits.abs().max().clamp_min(1.0):
        warnings.warn(f"{model.name}: folding BatchNorm changed the logits by {float(diff):.3g}, so its "
                      "conv/BatchNorm pairing is not the forward order; the attack runs on the unfolded model")
        return model
    return folded


def predict(model: CAMModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes ``(B,)`` and their softmax confidence ``(B,)`` in ``[0, 1]``."""
    with torch.no_grad():
        prob = F.softmax(model(x), dim=1)
    conf, idx = prob.max(dim=1)
    return idx, conf


