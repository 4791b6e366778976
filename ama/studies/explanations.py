"""Other explanations than CAM, for the transfer study (:mod:`ama.studies.transfer`): maps from an independent library
(pytorch-grad-cam) and two the kit computes: EigenCAM with its sign fixed, and a gradient-free occlusion map (not a relative of CAM).

The attack optimises CAM. Here the clean and the adversarial images of an :class:`ama.attack.marginal.AttackResult`
are explained by Grad-CAM++, Score-CAM, LayerCAM and EigenCAM as computed by ``pytorch_grad_cam`` (the
``grad-cam`` package, which this kit did not write), for the clean class, and compared like CAM in
:func:`ama.kernels.metrics.compare_maps`: cosine and Spearman of the ``h x w`` maps (the library's own resolution:
its resize is switched off), top-20% IoU of both maps upsampled to the image size the same way (bilinear,
corners aligned).

The library sees :class:`LibraryView`: ``head(identity(features(x)))``, the identity module being the target
layer, so its activations are exactly ``model.features(x)`` ``(B, K, h, w)``.

Pitfalls handled here: the library zips targets with outputs (a short target list would silently drop
images: one target per image is checked); the kit freezes parameters, so the input is made to require a
gradient; the library's OpenCV resize is bypassed (maps stay ``h x w``).

For a global-average-pool + linear head, Grad-CAM, HiResCAM and XGrad-CAM equal ReLU(CAM) up to a positive
scale per image: the gradient of the logit with respect to ``A_k(i, j)`` is ``W[c, k] / (h w)`` at every cell,
so Grad-CAM's channel weights are ``W[c] / (h w)``, HiResCAM's element-wise product gives the same sum, and
XGrad-CAM's weights ``sum_ij grad A / sum_ij A`` reduce to ``W[c] / (h w)`` where ``A >= 0``: :data:`CHECK_METHODS`, used as a check, not a
transfer result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..kernels.cam import cam, normalize_maps
from ..kernels.metrics import cosine, spearman, top_iou
from ..kernels.occlusion import occlusion_map
from ..kernels.upsampling import upsample

TRANSFER_METHODS = ("gradcam++", "layercam", "eigencam", "eigencam-signed", "occlusion", "scorecam")
KIT_METHODS = ("eigencam-signed", "occlusion")  # computed by the kit: EigenCAM with its sign fixed; no gradient
SMALLEST_E_ONLY = ("occlusion",)  # 49 forward passes per map: explained at the run's smallest e only
RELATIVES = ("gradcam++", "layercam")  # CAM's algebraic relatives for a GAP + linear head: consistency, not transfer
CHECK_METHODS = ("gradcam", "hirescam", "xgradcam")  # equal to CAM up to scale for a GAP + linear head
SCORE_CAM_BATCH = 64


class LibraryView(nn.Module):
    """What the library sees: ``x -> head(target(features(x)))``; ``target`` (an identity) is the target layer."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.target = nn.Identity()

    def forward(self, x):
        return self.model.head(self.target(self.model.features(x)))


def _classes():
    from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM)

    return {"gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "layercam": LayerCAM, "eigencam": EigenCAM,
            "gradcam": GradCAM, "hirescam": HiResCAM, "xgradcam": XGradCAM}


def _native_resolution(cls):
    """The library's class with its resize switched off: maps come back at the target layer's ``h x w``."""
    class Native(cls):
        def get_target_width_height(self, input_tensor):
            a = self.activations_and_grads.activations[0]
            return a.shape[-1], a.shape[-2]

    Native.__name__ = f"Native{cls.__name__}"
    return Native


def library_cam(model, x: torch.Tensor, target, method: str, batch_size: int = SCORE_CAM_BATCH) -> torch.Tensor:
    """``method``'s map of class ``target`` ``(B,)`` for images ``x`` ``(B, 3, H, W)`` in ``[0, 1]``: ``(B, h, w)``
    in ``[0, 1]`` (the library's ReLU and min-max normalisation), float32 on the CPU."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = _classes()
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; use one of {', '.join(classes)}")
    target = torch.as_tensor(target).long().reshape(-1)
    if len(target) != len(x):
        raise ValueError(f"need one target class per image: {len(target)} classes for {len(x)} images")
    view = LibraryView(model)
    explainer = _native_resolution(classes[method])(view, target_layers=[view.target])
    if method == "scorecam":
        explainer.batch_size = int(batch_size)
    targets = [ClassifierOutputTarget(int(c)) for c in target]  # one per image: the library zips them
    inputs = x.to(model.device).detach().clone().requires_grad_(True)  # parameters are frozen
    try:
        with torch.enable_grad():
            maps = explainer(input_tensor=inputs, targets=targets)
    finally:
        explainer.activations_and_grads.release()
    if maps.shape[0] != len(x):
        raise RuntimeError(f"{method} returned {maps.shape[0]} maps for {len(x)} images")
    return torch.from_numpy(np.ascontiguousarray(maps)).float()


def eigen_projection(features: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """EigenCAM's map before its ReLU: each cell's activations ``(B, K, h, w)``, centred over the cells, projected on
    their first right singular vector; ``(B, h, w)``. A singular vector's sign is arbitrary (pytorch-grad-cam keeps
    whichever the SVD returns); ``signed`` flips each map to correlate positively with the channel sum of the
    activations, so that the ReLU keeps the activated half. ``features``: the backbone's maps ``(B, K, h, w)``."""
    B, K, h, w = features.shape
    flat = features.detach().double().flatten(2).transpose(1, 2)            # (B, h*w, K)
    centred = flat - flat.mean(1, keepdim=True)
    vh = torch.linalg.svd(centred, full_matrices=False).Vh                  # (B, K', K)
    proj = (centred @ vh[:, 0, :, None]).squeeze(-1)                        # (B, h*w)
    if signed:
        total = flat.sum(-1)
        agree = ((proj - proj.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1)
        proj = proj * torch.where(agree < 0, -1.0, 1.0).to(proj)[:, None]
    return proj.view(B, h, w).float()


def kit_map(model, x: torch.Tensor, target, method: str) -> torch.Tensor:
    """A :data:`KIT_METHODS` map of ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` for class ``target`` ``(B,)``: ``(B, h, w)`` in
    ``[0, 1]`` (ReLU, min-max normalised) on the CPU. ``eigencam-signed``: :func:`eigen_projection`; ``occlusion``:
    :func:`ama.kernels.occlusion.occlusion_map` (the sliding patch, no gradient). ``method``: one of :data:`KIT_METHODS`."""
    if method == "occlusion":
        return occlusion_map(model, x, target)
    if method == "eigencam-signed":
        with torch.no_grad():
            features = model.features(x.to(model.device))
        return normalize_maps(torch.relu(eigen_projection(features))).cpu()
    raise ValueError(f"unknown kit method {method!r}; use one of {', '.join(KIT_METHODS)}")


def explanation(model, x: torch.Tensor, target, method: str, batch_size: int = SCORE_CAM_BATCH) -> torch.Tensor:
    """``method``'s map (:data:`TRANSFER_METHODS` or :data:`CHECK_METHODS`): the kit's (:func:`kit_map`) or the
    library's (:func:`library_cam`); ``(B, h, w)`` in ``[0, 1]``."""
    if method in KIT_METHODS:
        return kit_map(model, x, target, method)
    return library_cam(model, x, target, method, batch_size)


def _similarity(clean: torch.Tensor, adv: torch.Tensor, size) -> dict:
    return {"cam_cosine": cosine(clean, adv).numpy(), "cam_spearman": spearman(clean, adv).numpy(),
            "top20_iou": top_iou(upsample(clean, size), upsample(adv, size)).numpy()}


@dataclass(frozen=True)
class MapKey:
    """A map :func:`transfer_table` keeps for reuse: ``method``'s maps of the first ``n`` images, of the clean images
    (``frame`` ``"clean"``) or of the random frame at ``e``."""

    method: str
    n: int
    frame: str = "clean"
    e: int | None = None


def transfer_table(model, attack, baseline, methods=TRANSFER_METHODS, optimizer: str = "reference",
                   image_limits: dict | None = None, clean_maps: dict | None = None,
                   batch_size: int = SCORE_CAM_BATCH) -> pd.DataFrame:
    """Clean-vs-adversarial similarity of each library method's map of the clean class, one row per image x method.

    ``attack`` and ``baseline`` (:func:`ama.attack.marginal.random_frame` of the same images and ``e``) are
    :class:`~ama.attack.marginal.AttackResult` s; their 8-bit images (``adv_q``) are explained. Columns:
    ``image, model, e, optimizer, method, fooled, cam_cosine, cam_spearman, top20_iou`` and the random frame's
    ``random_cam_cosine, random_cam_spearman, random_top20_iou``. ``image_limits``: ``{method: n}`` explains only
    the first ``n`` images with that method (Score-CAM costs one forward pass per channel). ``clean_maps``: a dict
    filled with and reused for the clean images' maps (they do not depend on ``e``) and the random frame's (the same
    for every optimiser at one ``e``: pass the same ``baseline``).
    ``methods``: of :data:`TRANSFER_METHODS`."""
    if attack.clean.shape != baseline.clean.shape or not torch.equal(attack.clean, baseline.clean):
        raise ValueError("attack and baseline must be results on the same images")
    clean_maps = {} if clean_maps is None else clean_maps
    image_limits = image_limits or {}
    size = tuple(attack.clean.shape[-2:])
    c = attack.clean_class
    fooled = (attack.adv_q_logits.argmax(1) != c).numpy()
    frames = []
    for method in methods:
        n = min(len(c), int(image_limits.get(method, len(c))))
        if n < 1:
            continue
        key = MapKey(method, n)
        if key not in clean_maps:
            clean_maps[key] = explanation(model, attack.clean[:n], c[:n], method, batch_size)
        clean = clean_maps[key]
        adv = explanation(model, attack.adv_q[:n], c[:n], method, batch_size)
        random_key = MapKey(method, n, "random frame", attack.params.e)  # shared by the optimisers at one e
        if random_key not in clean_maps:
            clean_maps[random_key] = explanation(model, baseline.adv_q[:n], c[:n], method, batch_size)
        rand = clean_maps[random_key]
        row = dict(image=list(attack.names[:n]), model=attack.params.model, e=attack.params.e,
                   optimizer=optimizer, method=method, fooled=fooled[:n])
        row.update(_similarity(clean, adv, size))
        row.update({f"random_{k}": v for k, v in _similarity(clean, rand, size).items()})
        frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize_transfer(table: pd.DataFrame) -> pd.DataFrame:
    """Means per ``model, e, optimizer, method`` with ``n_images``."""
    keys = ["model", "e", "optimizer", "method"]
    cols = [c for c in table.columns if c.startswith(("cam_", "top20", "random_")) or c == "fooled"]
    g = table.groupby(keys, sort=True)
    out = g[cols].mean().reset_index()
    out.insert(len(keys), "n_images", g.size().to_numpy())
    return out


def scale_check(model, x: torch.Tensor, names=None, target=None, methods=CHECK_METHODS) -> pd.DataFrame:
    """Check that Grad-CAM, HiResCAM and XGrad-CAM equal CAM up to a positive scale for a GAP + linear head.

    One row per image x method: ``max_abs_diff`` between the library's normalised map and the kit's normalised
    ReLU(CAM) (:func:`ama.kernels.cam`), and their ``cosine``; :func:`scale_check_summary` aggregates over images.
    ``methods``: of :data:`CHECK_METHODS`."""
    names = list(names) if names is not None else [str(i) for i in range(len(x))]
    with torch.no_grad():
        logits = model(x.to(model.device))
    t = logits.argmax(1).cpu() if target is None else torch.as_tensor(target).long().reshape(-1).expand(len(x))
    with torch.no_grad():
        ref = cam(model, x.to(model.device), t).cpu().float()
    frames = []
    for method in methods:
        m = library_cam(model, x, t, method)
        frames.append(pd.DataFrame(dict(image=names, model=model.name, method=method,
                                        max_abs_diff=(m - ref).abs().flatten(1).amax(1).numpy(),
                                        cosine=cosine(m, ref).numpy())))
    return pd.concat(frames, ignore_index=True)


def scale_check_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and method over the images of :func:`scale_check`: ``n_images``, the largest ``max_abs_diff`` and
    the smallest cosine (``min_cosine``)."""
    g = rows.groupby(["model", "method"], sort=False)
    return g.agg(n_images=("image", "size"), max_abs_diff=("max_abs_diff", "max"),
                 min_cosine=("cosine", "min")).reset_index()
