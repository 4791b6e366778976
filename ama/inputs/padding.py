"""Padding variants of an offline model: the same checkpoint's tensors, bit for bit, with only the convolutions'
padding changed (``SCIENCE.md`` section 8).

timm's ``tf_efficientnet_lite*`` pads like TensorFlow's "same": a stride-2 convolution pads its input unevenly on the
fly (at 224 px a 3 x 3 kernel gets 0 px on the left / top and 1 px on the right / bottom), every stride-1 convolution
pads ``k // 2`` zeros on each side. A variant keeps every weight and BatchNorm statistic and pads instead with

* ``zero``: ``k // 2`` zeros on every side of every convolution (symmetric, as a torchvision ResNet pads),
* ``reflect``: the same widths, filled by reflecting the map at its edge (``padding_mode="reflect"``),
* ``replicate``: the same widths, filled with the edge value (``padding_mode="replicate"``).

A variant's name is its base and its padding: ``lite0-zero-pad``, ``lite1-reflect-pad``, ``lite2-replicate-pad``
(:func:`variant_name`); the base itself (``lite0``) is the network as trained (:data:`AS_TRAINED`). Only the
EfficientNet-Lites have variants: the kit's other models are either zero padded already (torchvision's ResNets, whose
max-pool pads with -inf, not a padding a convolution's mode can change) or unknown (``timm:`` and factories).

A variant keeps the BatchNorm statistics its network learnt under TF padding, which the new padding no longer
matches at the border: its confidence collapses (reflect: median 0.02 on correct predictions). ``<name>-recal``
(``lite0-recal``, ``lite0-zero-pad-recal``...) is the same network with every BatchNorm layer's statistics
re-estimated under its own padding (:func:`recalibrate`) on :data:`RECAL_IMAGES` held-out images of ``data/imagenet``
(:func:`held_out`, seeded; a run with a ``-recal`` model neither reports nor scores them), the base included, so that
the recalibrated set differs in padding alone.
"""
from __future__ import annotations

from collections import OrderedDict

import random

import torch
import torch.nn as nn

from ..kernels.cam_model import ModelError, freeze
from ..params import IMAGES
from .images import list_images

AS_TRAINED = "tf_same"
PADDINGS = OrderedDict(  # padding -> what it is, in words (the report's and the tables' label)
    tf_same="TF 'same' zeros, uneven on stride-2 layers (as trained)",
    zero="symmetric zeros",
    reflect="reflect",
    replicate="replicate",
)
VARIANT_SUFFIX = "-pad"
ZERO_PADDINGS = ("tf_same", "zero")  # the paddings that fill with zeros
RECAL_SUFFIX = "-recal"
RECAL_IMAGES = 300   # held-out images whose BatchNorm statistics a -recal variant takes: about as many as stabilise
                     # them (the measurement), leaving 700 of data/imagenet to score and attack
RECAL_SEED = 1042    # their seeded choice, fixed: every run and every variant holds out the same images
RECAL_BATCH = 50


def recal_base(name: str) -> str | None:
    """The model a ``-recal`` name re-estimates (``lite0-zero-pad-recal`` -> ``lite0-zero-pad``), None otherwise."""
    return name.removesuffix(RECAL_SUFFIX) if name.endswith(RECAL_SUFFIX) else None


def held_out(images=None) -> list:
    """The :data:`RECAL_IMAGES` records of ``data/imagenet`` (``images``: another labelled folder) a ``-recal`` variant
    re-estimates its statistics on, chosen with :data:`RECAL_SEED` (sorted by name)."""
    records = list_images(images or IMAGES)
    if len(records) <= RECAL_IMAGES:
        raise ModelError(f"a -recal model holds out {RECAL_IMAGES} images of {images or IMAGES}, which has only "
                         f"{len(records)}; place data/imagenet (data/README.md)")
    return sorted(random.Random(RECAL_SEED).sample(records, RECAL_IMAGES), key=lambda r: r.name)


def recalibrate(model, x: torch.Tensor, batch: int = RECAL_BATCH):
    """Re-estimate, in place, every BatchNorm layer's running mean and variance of ``model`` (a
    :class:`ama.kernels.cam_model.CAMModel`) from the images ``x`` ``(N, 3, H, W)`` in ``[0, 1]``: the layers' statistics
    reset, then averaged over the batches of ``x`` (cumulative, ``momentum`` None) with the weights untouched, ``batch`` images
    at a time; the model is returned frozen in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ModelError(f"{model.name} has no BatchNorm layer to re-estimate")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        nn.Module.train(m, True)
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                model.features(x[s:s + batch].to(model.device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            nn.Module.train(m, False)
    return freeze(model)


def variant_name(base: str, padding: str) -> str:
    """The model name of ``base`` with ``padding`` (a key of :data:`PADDINGS`): ``lite0-reflect-pad``; the base
    itself for :data:`AS_TRAINED`."""
    if padding not in PADDINGS:
        raise ModelError(f"unknown padding {padding!r}; use one of {', '.join(PADDINGS)}")
    return base if padding == AS_TRAINED else f"{base}-{padding}{VARIANT_SUFFIX}"


def parse_variant(name: str) -> tuple[str, str] | None:
    """``(base, padding)`` of a variant's name (``lite0-reflect-pad`` -> ``("lite0", "reflect")``), None for a name
    that is not one (the base itself included). A name ending in ``-pad`` with an unknown padding is refused."""
    if not name.endswith(VARIANT_SUFFIX) or "-" not in name.removesuffix(VARIANT_SUFFIX):
        return None
    base, padding = name.removesuffix(VARIANT_SUFFIX).rsplit("-", 1)
    if padding not in PADDINGS or padding == AS_TRAINED:
        valid = ", ".join(variant_name(base, p) for p in PADDINGS if p != AS_TRAINED)
        raise ModelError(f"unknown padding variant {name!r}; use {valid} ({base} itself is as trained)")
    return base, padding


def padding_of(name: str) -> str:
    """The padding key of a kit model's name: the variant's, else :data:`AS_TRAINED` (the network as its checkpoint
    was trained; for a torchvision ResNet that is zero padding); a ``-recal`` name's is its base's."""
    parsed = parse_variant(name.removesuffix(RECAL_SUFFIX))
    return AS_TRAINED if parsed is None else parsed[1]


def base_of(name: str) -> str:
    """The model a variant's name derives from (``lite0-zero-pad`` -> ``lite0``, ``lite0-zero-pad-recal`` ->
    ``lite0``); any other name itself."""
    plain = name.removesuffix(RECAL_SUFFIX)
    parsed = parse_variant(plain)
    return plain if parsed is None else parsed[0]


def _symmetric(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` holding ``conv``'s own parameters (the same tensors) that pads ``k // 2`` (times the
    dilation) on each side with ``mode``."""
    k, d = conv.kernel_size, conv.dilation
    padding = tuple((kk - 1) // 2 * dd for kk, dd in zip(k, d))
    if any(kk % 2 == 0 for kk in k):
        raise ModelError(f"a {k[0]} x {k[1]} convolution has no symmetric padding (even kernel)")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, k, conv.stride, padding, d, conv.groups,
                    bias=conv.bias is not None, padding_mode="zeros" if mode == "zero" else mode,
                    device="meta")
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


def _pads(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` pads its input: a dynamic TF-"same" convolution (timm's ``Conv2dSame``, ``padding`` 0 but
    padded in its forward) or a static padding above 0."""
    return type(conv) is not nn.Conv2d or any(p > 0 for p in conv.padding)


def repad(net: nn.Module, padding: str) -> int:
    """Change, in place, every padded convolution of ``net`` to ``padding`` (a key of :data:`PADDINGS` other than
    :data:`AS_TRAINED`); returns how many changed. Parameters and buffers stay the same tensors, so the state dict is
    the checkpoint's bit for bit."""
    if padding not in PADDINGS or padding == AS_TRAINED:
        raise ModelError(f"repad needs one of {', '.join(p for p in PADDINGS if p != AS_TRAINED)}, got {padding!r}")
    count = 0
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and _pads(child) and child.kernel_size != (1, 1):
                setattr(parent, child_name, _symmetric(child, padding))
                count += 1
    if count == 0:
        raise ModelError(f"{type(net).__name__} has no padded convolution: a {padding} variant would be the model itself")
    return count
