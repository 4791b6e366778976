"""How faithful are the saliency maps, and does a receptive-field-aware upsampling help? (notebook 05)

A module of its own because it combines four others: CAM and its upsamplings (:mod:`ama.cam`), the ERFs
(:mod:`ama.receptive_field`), the sliding-patch occlusion (:mod:`ama.occlusion`) and the deletion/insertion
AUC (:mod:`ama.metrics`).

Upsamplings compared (``UPSAMPLINGS``): ``bilinear`` (the reference's, corners aligned), ``gaussian`` (width
and centres fitted to the clean images' measured ERFs, :func:`ama.cam.fit_erf_gaussian`) and ``erf`` (the exact
projection with each image's own ERFs).

* Faithfulness: deletion (mean-colour baseline) and insertion (blurred start) AUC of each saliency map.
* Agreement with occlusion: Spearman correlation, over the positions of :func:`ama.occlusion.sliding_patch`,
  between how much occluding the patch moves the raw CAM (``max_abs_rel_change``) and the saliency's mean
  over the same patch.
* Where the evidence sits under the attack: the share of a saliency map's mass within ``e`` pixels of the
  border (``frame_mass``) and within ``e + band`` pixels (``band_mass``, the frame's neighbourhood), on the
  clean and on the attacked image (CAM of the clean class).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .cam import compute_cam, fit_erf_gaussian, upsample
from .metrics import FAITHFULNESS_STEPS, deletion_auc, insertion_auc, spearman
from .receptive_field import effective_receptive_field, margin_mask

UPSAMPLINGS = ("bilinear", "gaussian", "erf")
BAND = 16  # px beyond the frame counted as its neighbourhood (half the stride of a 7 x 7 CAM at 224 px)


def saliency_maps(cams: torch.Tensor, size, erf: torch.Tensor, fit: dict, upsamplings=UPSAMPLINGS) -> dict:
    """``{upsampling: (B, H, W)}`` saliency of CAMs ``(B, h, w)``, each min-max normalised to ``[0, 1]``."""
    from .cam import normalize_maps

    out = {}
    for mode in upsamplings:
        if mode == "gaussian":
            s = upsample(cams, size, "gaussian", **fit)
        elif mode == "erf":
            s = upsample(cams, size, "erf", erf=erf)
        else:
            s = upsample(cams, size, mode)
        out[mode] = normalize_maps(s.float())
    return out


def mass_share(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``(B,)`` share of each non-negative map's mass ``(B, H, W)`` inside the boolean ``region`` ``(H, W)``."""
    m = maps.clamp_min(0).flatten(1)
    return (m * region.flatten()[None].to(m)).sum(1) / m.sum(1).clamp_min(1e-12)


def patch_means(maps: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``(B, n_positions)``: each map's mean over every ``patch x patch`` square at ``stride``, row-major (the
    order of :func:`ama.occlusion.sliding_patch`)."""
    return F.avg_pool2d(maps[:, None].float(), patch, stride).flatten(1)


def occlusion_agreement(occlusion: pd.DataFrame, maps: torch.Tensor, names, patch: int, stride: int) -> torch.Tensor:
    """``(B,)`` Spearman correlation between the sliding-patch occlusion effect (``max_abs_rel_change`` per
    position) and the saliency's patch means."""
    means = patch_means(maps, patch, stride)
    effect = torch.stack([torch.tensor(occlusion[occlusion.image == n].sort_values(["top", "left"])
                                       .max_abs_rel_change.to_numpy(), dtype=torch.float32) for n in names])
    return spearman(effect[:, None], means[:, None])  # (B, 1, P): one correlation per image


def upsampling_comparison(model, x: torch.Tensor, names, attack=None, occlusion: pd.DataFrame | None = None,
                          patch: int = 32, stride: int = 32, steps: int = FAITHFULNESS_STEPS, band: int = BAND,
                          batch_size: int = 32) -> tuple[pd.DataFrame, dict]:
    """One row per image x upsampling: ``deletion_auc, insertion_auc, occlusion_spearman`` on the clean images and,
    given ``attack`` (an :class:`~ama.attack.AttackResult` of ``x``), ``e, clean_frame_mass, adv_frame_mass,
    clean_band_mass, adv_band_mass`` (the attacked image's map uses its own ERFs in ``erf`` mode; ``gaussian`` keeps
    the clean fit). Returns the table and ``{"sigma", "centres", "saliency", "adv_saliency"}`` (``{upsampling:
    (B, H, W)}`` maps of the clean and the attacked images; the latter None without ``attack``)."""
    x = x.to(model.device)
    B, _, H, W = x.shape
    with torch.no_grad():
        clean = compute_cam(model, x)
    erf = effective_receptive_field(model, x, clean.target)
    h, w = clean.cam.shape[-2:]
    fit = fit_erf_gaussian(erf, (h, w))
    sal = saliency_maps(clean.cam, (H, W), erf, fit)
    rows = {"image": list(names) * len(UPSAMPLINGS), "model": model.name,
            "upsampling": [m for m in UPSAMPLINGS for _ in range(B)]}
    cols = {"deletion_auc": [], "insertion_auc": [], "occlusion_spearman": []}
    for mode in UPSAMPLINGS:
        cols["deletion_auc"].append(deletion_auc(model, x, sal[mode], clean.target, steps, batch_size=batch_size))
        cols["insertion_auc"].append(insertion_auc(model, x, sal[mode], clean.target, steps, batch_size=batch_size))
        cols["occlusion_spearman"].append(occlusion_agreement(occlusion, sal[mode].cpu(), names, patch, stride)
                                          if occlusion is not None else torch.full((B,), float("nan")))
    if attack is not None:
        e = int(attack.params["e"])
        adv = attack.adv_q.to(model.device)
        c = attack.clean_class.to(model.device)
        adv_erf = effective_receptive_field(model, adv, c)
        adv_sal = saliency_maps(attack.adv_q_cam.to(model.device), (H, W), adv_erf, fit)
        frame, ring = margin_mask((H, W), e), margin_mask((H, W), e + band)
        rows["e"] = e
        for key, region in (("frame_mass", frame), ("band_mass", ring)):
            cols[f"clean_{key}"] = [mass_share(sal[m].cpu(), region) for m in UPSAMPLINGS]
            cols[f"adv_{key}"] = [mass_share(adv_sal[m].cpu(), region) for m in UPSAMPLINGS]
    else:
        adv_sal = None
    table = pd.DataFrame({**rows, **{k: torch.cat(v).numpy() for k, v in cols.items()}})
    return table, {"sigma": fit["sigma"], "centres": fit["centres"], "saliency": sal, "adv_saliency": adv_sal}


def faithfulness_table(model, x: torch.Tensor, names, maps: dict, target=None, steps: int = FAITHFULNESS_STEPS,
                       batch_size: int = 32) -> pd.DataFrame:
    """Deletion and insertion AUC per image of each saliency in ``maps`` ``{(method, upsampling): (B, H, W)}``:
    columns ``image, model, method, upsampling, deletion_auc, insertion_auc``."""
    frames = []
    for (method, up), s in maps.items():
        frames.append(pd.DataFrame(dict(
            image=list(names), model=model.name, method=method, upsampling=up,
            deletion_auc=deletion_auc(model, x, s, target, steps, batch_size=batch_size).numpy(),
            insertion_auc=insertion_auc(model, x, s, target, steps, batch_size=batch_size).numpy())))
    return pd.concat(frames, ignore_index=True)
