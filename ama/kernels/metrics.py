"""How much an attack changed the prediction and the explanation: one tidy row per image and setting.

Map comparisons take two batches of maps ``(B, h, w)`` (or ``(B, H, W)``) in ``[0, 1]`` and return ``(B,)``:

* :func:`cosine` over the flattened maps; :func:`spearman` rank correlation (ties share their average rank;
  a constant map gives NaN);
* :func:`threshold_iou`: IoU of ``a >= t`` and ``b >= t`` (two empty regions: 1);
* :func:`top_iou`: IoU of the top ``q`` share of cells (ties broken by position);
* :func:`pointing_game`: is ``b``'s maximum inside ``a``'s top-``q`` region.

:func:`attack_metrics` turns an :class:`ama.attack.marginal.AttackResult` into a table. The top-20% IoU and the
pointing game use the saliency maps (CAMs upsampled to the input size, bilinear, corners aligned, as the
reference); the other map metrics use the ``h x w`` CAMs the attack optimises.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .upsampling import upsample

if TYPE_CHECKING:  # the map comparisons need no pandas; the table functions import it when called
    import pandas as pd

__all__ = ["THRESHOLDS", "TOP_SHARE", "cosine", "spearman", "threshold_iou", "top_region", "top_iou", "pointing_game",
           "changed_pixels", "linf", "compare_maps", "METRIC_COLUMNS", "attack_metrics", "SUMMARY_KEYS", "summarize",
           "summary_table", "history_table", "FAITHFULNESS_STEPS", "deletion_auc", "insertion_auc"]

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
TOP_SHARE = 0.2


def _maps_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a).detach().float(), torch.as_tensor(b).detach().float()
    if a.ndim == 2:
        a = a.unsqueeze(0)
    if b.ndim == 2:
        b = b.unsqueeze(0)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must both have shape (B, h, w), got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.flatten(1), b.flatten(1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair of flattened maps ``a``, ``b`` ``(B, h, w)``: ``(B,)`` in ``[-1, 1]`` (0 when a map
    is all zero)."""
    a, b = _maps_pair(a, b)
    return F.cosine_similarity(a, b, dim=1, eps=1e-8)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``a``, ``b`` ``(B, h, w)``: ``(B,)`` in ``[-1, 1]``; NaN where a
    map is constant."""
    from scipy.stats import rankdata

    a, b = _maps_pair(a, b)
    ra = rankdata(a.cpu().numpy().astype(np.float64), axis=1)
    rb = rankdata(b.cpu().numpy().astype(np.float64), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)
    return torch.from_numpy(rho).float()


def _iou(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    inter = (ra & rb).sum(1).float()
    union = (ra | rb).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def threshold_iou(a: torch.Tensor, b: torch.Tensor, threshold: float) -> torch.Tensor:
    """IoU of the regions ``a >= threshold`` and ``b >= threshold``, ``(B,)`` in ``[0, 1]``. ``threshold``: in the maps'
    units."""
    a, b = _maps_pair(a, b)
    return _iou(a >= threshold, b >= threshold)


def top_region(maps: torch.Tensor, share: float = TOP_SHARE) -> torch.Tensor:
    """Boolean ``(B, N)`` (flattened): the ``ceil(share * N)`` highest cells of each map. ``share``: of the cells, in
    ``(0, 1]``."""
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    flat = maps.flatten(1)
    k = max(1, int(np.ceil(share * flat.shape[1])))
    idx = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def top_iou(a: torch.Tensor, b: torch.Tensor, share: float = TOP_SHARE) -> torch.Tensor:
    """IoU of the top-``share`` regions of ``a`` and ``b``, ``(B,)`` in ``[0, 1]``."""
    a, b = _maps_pair(a, b)
    return _iou(top_region(a, share), top_region(b, share))


def pointing_game(a: torch.Tensor, b: torch.Tensor, share: float = TOP_SHARE) -> torch.Tensor:
    """``(B,)`` bool: the maximum of ``b`` lies inside the top-``share`` region of ``a``."""
    a, b = _maps_pair(a, b)
    hit = b.argmax(1, keepdim=True)
    return top_region(a, share).gather(1, hit).squeeze(1)


def changed_pixels(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """``(B,)`` number of pixel positions where any channel differs, for images ``(B, 3, H, W)``. ``clean``, ``adv``:
    the images before and after the attack."""
    return (clean != adv).any(1).flatten(1).sum(1)


def linf(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """``(B,)`` largest absolute change of any pixel and channel, in ``[0, 1]`` units (x 255 for 8-bit levels).
    ``clean``, ``adv``: the images before and after the attack."""
    return (clean.float() - adv.float()).abs().flatten(1).amax(1)


def compare_maps(clean_cam: torch.Tensor, adv_cam: torch.Tensor, size=None, prefix: str = "cam_") -> dict:
    """Every map metric of clean vs adversarial CAMs ``(B, h, w)``, as ``{column: (B,) numpy}``.

    ``size``: ``(H, W)`` for the saliency-based metrics (top-20% IoU, pointing game); default the CAM size.
    ``clean_cam``, ``adv_cam``: the maps compared; ``prefix``: of the columns' names."""
    out = {f"{prefix}cosine": cosine(clean_cam, adv_cam), f"{prefix}spearman": spearman(clean_cam, adv_cam)}
    for t in THRESHOLDS:
        out[f"iou_{t:.1f}"] = threshold_iou(clean_cam, adv_cam, t)
    sa = upsample(clean_cam.float(), size) if size is not None else clean_cam
    sb = upsample(adv_cam.float(), size) if size is not None else adv_cam
    out["top20_iou"] = top_iou(sa, sb)
    out["pointing_game"] = pointing_game(sa, sb)
    return {k: v.cpu().numpy() for k, v in out.items()}


METRIC_COLUMNS = ("fooled", "cam_cosine", "cam_spearman", *(f"iou_{t:.1f}" for t in THRESHOLDS), "top20_iou",
                  "pointing_game", "cam_cosine_pred", "target_cosine", "changed_pixels", "changed_share", "linf")


def attack_metrics(result) -> pd.DataFrame:
    """One row per image x ``quantized`` (False, then True) of an :class:`~ama.attack.marginal.AttackResult`.

    Columns: ``image, model, e, mode, optimizer, restarts, n_iter, lamb, seed, targeted, mask, quantized``; the classes
    ``clean_class, clean_name, clean_conf, clean_margin`` (top-1 minus top-2 clean logit), ``adv_class, adv_name,
    adv_conf``; :data:`METRIC_COLUMNS`
    (``cam_*`` compare the clean class's CAM on both images; ``cam_cosine_pred`` uses the adversarial image's own
    predicted class; ``target_cosine`` is NaN unless targeted; ``changed_share`` = ``changed_pixels / (H W)``;
    ``linf`` in ``[0, 1]`` units).
    """
    import pandas as pd

    p = result.params
    clean = result.evaluations["clean"]
    B, _, H, W = clean.images.shape
    top2 = clean.logits.topk(2, dim=1).values if clean.logits.shape[1] > 1 else None
    clean_margin = (top2[:, 0] - top2[:, 1]).numpy() if top2 is not None else np.full(B, np.nan)
    frames = []
    for quantized in (False, True):
        adv = result.evaluated(quantized)
        prob = torch.softmax(adv.logits, 1)
        adv_conf, adv_class = prob.max(1)
        changed = changed_pixels(clean.images, adv.images).numpy()
        row = dict(
            image=list(result.names), model=p.model, e=p.e if p.e is not None else -1, mode=p.mode,
            optimizer=p.optimizer, restarts=p.restarts, n_iter=p.n_iter, lamb=p.lamb, seed=p.seed,
            targeted=bool(p.targeted), mask=p.mask, quantized=quantized, clean_class=clean.classes.numpy(),
            clean_name=clean.names, clean_conf=clean.conf.numpy(), clean_margin=clean_margin,
            adv_class=adv_class.numpy(),
            adv_name=[result.class_names[int(i)] for i in adv_class], adv_conf=adv_conf.numpy(),
            fooled=(adv_class != clean.classes).numpy(),
        )
        row.update(compare_maps(clean.cam, adv.cam, (H, W)))
        row["cam_cosine_pred"] = cosine(clean.cam, adv.cam_pred).numpy()
        row["target_cosine"] = (cosine(result.target_map, adv.cam).numpy() if result.target_map is not None
                                else np.full(B, np.nan))
        row["changed_pixels"] = changed
        row["changed_share"] = changed / (H * W)
        row["linf"] = linf(clean.images, adv.images).numpy()
        frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True)


SUMMARY_KEYS = ("model", "e", "n_iter", "mode", "setting", "quantized")


def summarize(df: pd.DataFrame, keys=SUMMARY_KEYS) -> pd.DataFrame:
    """Means per setting (``fooling_rate`` is the mean of ``fooled``) with ``n_images``; keys missing from ``df``
    are left out. ``keys``: the setting's columns."""

    keys = [k for k in keys if k in df.columns]
    numeric = [c for c in METRIC_COLUMNS if c in df.columns]
    g = df.groupby(keys, sort=True, dropna=False)
    out = g[numeric].mean(numeric_only=False).reset_index()
    out.insert(len(keys), "n_images", g.size().to_numpy())
    return out.rename(columns={"fooled": "fooling_rate", "pointing_game": "pointing_rate"})


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize` per ``model, e, n_iter, mode, setting, quantized`` with the random-frame baseline of the
    same ``model, e, quantized`` on every row (``random_fooling_rate``, ``random_cam_cosine``)."""
    s = summarize(df)
    base = s[s.setting == "random_frame"][["model", "e", "quantized", "fooling_rate", "cam_cosine"]]
    base = base.rename(columns={"fooling_rate": "random_fooling_rate", "cam_cosine": "random_cam_cosine"})
    return s.merge(base, on=["model", "e", "quantized"], how="left")


def history_table(results: dict) -> pd.DataFrame:
    """Long table of the per-iteration histories: ``model, e, n_iter, mode, image, iteration`` and the recorded
    quantities; ``results`` maps a :class:`~ama.attack.result.GridKey` -> AttackResult (those without history
    skipped)."""
    import pandas as pd

    frames = []
    for key, r in results.items():
        if r.history is None:
            continue
        steps, B = r.history["loss"].shape
        d = {"model": r.params.model, "e": r.params.e, "n_iter": r.params.n_iter, "mode": r.params.mode,
             "image": np.tile(r.names, steps), "iteration": np.repeat(np.arange(steps), B)}
        for k, v in r.history.items():
            d[k] = v.float().numpy().reshape(-1)
        frames.append(pd.DataFrame(d))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- faithfulness: deletion and insertion (Petsiuk et al. 2018) -----------------------------
FAITHFULNESS_STEPS = 16
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # insertion's blurred start (RISE's own setting)


def _faithfulness_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """``(B, 3, H, W)`` image the pixels are replaced by: ``"mean"`` each image's per-channel mean colour,
    ``"black"`` zeros, ``"blur"`` a Gaussian blur (kernel 11, sigma 5), or a tensor of ``x``'s shape."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape:
            raise ValueError(f"a baseline tensor must have the images' shape {tuple(x.shape)}, got {tuple(baseline.shape)}")
        return baseline.to(x)
    if baseline == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(x, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    raise ValueError(f"unknown baseline {baseline!r}; use 'mean', 'black', 'blur' or a (B, 3, H, W) tensor")


def _order_curve(model, x, saliency, target, steps, baseline, insert: bool, batch_size: int) -> torch.Tensor:
    """Probability of the explained class ``(B, steps + 1)`` after removing (or revealing) the top ``t / steps``
    share of pixels, ``t = 0..steps``."""
    x = torch.as_tensor(x).float()
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
    B, _, H, W = x.shape
    s = torch.as_tensor(saliency).detach().float()
    s = s.unsqueeze(0) if s.ndim == 2 else s
    if tuple(s.shape) != (B, H, W):
        raise ValueError(f"saliency must have shape ({B}, {H}, {W}) (upsample CAMs to the image size first), "
                         f"got {tuple(s.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    device = next(model.parameters()).device
    x, s = x.to(device), s.to(device)
    base = _faithfulness_baseline(x, baseline)
    N = H * W
    order = torch.sort(s.flatten(1), dim=1, descending=True, stable=True).indices  # ties: by position
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(B, N))
    counts = torch.tensor([t * N // steps for t in range(steps + 1)], device=device)  # pixels changed at step t
    with torch.no_grad():
        if target is None:
            target = model(x).argmax(1)
        target = torch.as_tensor(target, device=device).long().reshape(-1).expand(B)
        pairs = [(b, t) for b in range(B) for t in range(steps + 1)]
        probs = torch.empty(B, steps + 1, device=device)
        for start in range(0, len(pairs), batch_size):
            bi = torch.tensor([p[0] for p in pairs[start:start + batch_size]], device=device)
            ti = torch.tensor([p[1] for p in pairs[start:start + batch_size]], device=device)
            chosen = (rank[bi] < counts[ti][:, None]).view(-1, 1, H, W)  # the top pixels of each image
            z = torch.where(chosen, x[bi], base[bi]) if insert else torch.where(chosen, base[bi], x[bi])
            p = torch.softmax(model(z).float(), 1).gather(1, target[bi][:, None]).squeeze(1)
            probs[bi, ti] = p
    return probs.cpu()


def deletion_auc(model, x: torch.Tensor, saliency: torch.Tensor, target=None, steps: int = FAITHFULNESS_STEPS,
                 baseline="mean", batch_size: int = 32, return_curve: bool = False):
    """Deletion AUC ``(B,)`` in ``[0, 1]`` (lower = more faithful), Petsiuk et al. 2018.

    Pixels of ``x`` ``(B, 3, H, W)`` in ``[0, 1]`` are ordered by decreasing ``saliency`` ``(B, H, W)`` (ties by
    position); at step ``t = 0..steps`` the top ``floor(t H W / steps)`` pixels are replaced by ``baseline``
    (default ``"mean"``: the image's own per-channel mean colour; ``"black"``; ``"blur"``; or a tensor). The AUC
    is the mean over the ``steps + 1`` points, both ends included, of the softmax probability of ``target``
    (default: the class predicted on ``x``). ``model(x)`` must return logits; forward passes are chunked
    ``batch_size`` at a time over (image, step) pairs. ``return_curve``: also return the ``(B, steps + 1)`` curve.
    """
    curve = _order_curve(model, x, saliency, target, steps, baseline, False, batch_size)
    return (curve.mean(1), curve) if return_curve else curve.mean(1)


def insertion_auc(model, x: torch.Tensor, saliency: torch.Tensor, target=None, steps: int = FAITHFULNESS_STEPS,
                  baseline="blur", batch_size: int = 32, return_curve: bool = False):
    """Insertion AUC ``(B,)`` in ``[0, 1]`` (higher = more faithful): start from ``baseline`` (default ``"blur"``,
    a Gaussian blur of ``x`` with kernel 11 and sigma 5) and reveal the top ``floor(t H W / steps)`` pixels of
    ``x`` at step ``t = 0..steps``; otherwise as :func:`deletion_auc`. ``saliency``: ``(B, H, W)``, higher first;
    ``return_curve``: also return the scores at each step."""
    curve = _order_curve(model, x, saliency, target, steps, baseline, True, batch_size)
    return (curve.mean(1), curve) if return_curve else curve.mean(1)
