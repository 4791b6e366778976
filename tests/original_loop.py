"""The 2021 code's attack loop (``attack.py`` of xpf/CAM-Adversarial-Marginal-Attack), ported as plainly as it is
written there: one image, no helper of the kit but the model, in ``[0, 1]`` pixel space instead of the normalised
space (the same loop: the model normalises, and ``sign`` of a gradient is the same in both spaces because the
normalisation's scale is positive; a step of ``(clamp_max - clamp_min) / n_iter`` there is ``1 / n_iter`` here).

Kept here, apart from ``ama``, so that the kit's ``sign`` optimiser is held against it (``test_original_loop.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def original_loop(model, x, e, n_iter, lamb, n0):
    """Attack one image ``x`` ``(1, 3, H, W)`` in ``[0, 1]`` from the start ``n0`` ``(1, 3, H, W)``; returns
    ``(z, n)``: the adversarial image (float, the last iterate) and the unclipped iterate."""
    assert x.shape[0] == 1, "the original script attacks one image"
    weights = model.fc.weight
    with torch.no_grad():
        f = model.features(x)
        p = model.head(f)
        y = torch.argmax(p, dim=1)
        weight = weights[y, :].unsqueeze(dim=-1).unsqueeze(dim=-1)
        cam_x = (f * weight).sum(dim=1, keepdim=True).clamp_min(0).view(x.shape[0], -1)
        cam_x = cam_x - cam_x.min(dim=-1, keepdim=True)[0]
        cam_x = cam_x / (cam_x.max(dim=-1, keepdim=True)[0] + 1e-12)

    clamp_max, clamp_min = torch.ones_like(x), torch.zeros_like(x)
    n = n0.clone()
    mask = torch.zeros_like(x)
    mask[:, :, -e:, :], mask[:, :, :e, :], mask[:, :, :, -e:], mask[:, :, :, :e] = 1, 1, 1, 1
    for _ in range(n_iter):
        n = n.detach().requires_grad_(True)
        z = x * (1 - mask) + torch.max(torch.min(n, clamp_max), clamp_min) * mask
        u = model.features(z)
        v = model.head(u)
        t = torch.argmax(v, dim=1) == y
        cam_z = (u * weight).sum(dim=1, keepdim=True).clamp_min(0).view(z.shape[0], -1)
        cam_z = cam_z - cam_z.min(dim=-1, keepdim=True)[0]
        cam_z = cam_z / (cam_z.max(dim=-1, keepdim=True)[0] + 1e-12)
        loss_c = F.cross_entropy(v[t, :], y[t]) if t.sum() != 0 else 0
        loss_s = 1 - F.cosine_similarity(cam_z, cam_x, dim=-1).mean(dim=0)
        loss = loss_c + lamb * loss_s
        loss.backward()
        n = n.data + n.grad.data.sign_() * (clamp_max - clamp_min) / n_iter
    z = x * (1 - mask) + torch.max(torch.min(n, clamp_max), clamp_min) * mask
    return z.detach(), n.detach()
