"""The figures of notebook 05's studies drawn from their tables (:mod:`ama.studies`): explanations under attack
(:mod:`ama.studies.transfer`) and the saliency of an attacked image under each upsampling
(:mod:`ama.studies.faithfulness`). The forest plots of paired comparisons are in :mod:`ama.figures.forest`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from . import plots
from .charts import verdict_interval


def transfer_figure(transfer: pd.DataFrame):
    """Clean vs attacked map cosine of each explanation method, the attack beside the random frame, per ``e`` and
    optimiser, from the per-image rows of ``transfer`` (mean and its t 95% interval over images)."""
    cols = ["model", "image", "e", "optimizer", "method", "frame", "cam_cosine"]
    long = pd.concat([transfer.assign(frame="attack")[cols],
                      transfer.assign(frame="random frame", cam_cosine=transfer.random_cam_cosine)[cols]],
                     ignore_index=True)
    g = sns.catplot(data=long, x="e", y="cam_cosine", hue="frame", col="method", row="optimizer", kind="bar",
                    errorbar=verdict_interval, capsize=0.15, height=2.9, aspect=0.95, sharex=False,
                    palette={"attack": "C0", "random frame": "0.6"})
    g.set_axis_labels("frame width e (px)", "")
    g.set_titles(template="{col_name}, {row_name} attack", size=10)
    g.figure.supylabel("map cosine, clean vs attacked (mean, t 95% CI)", fontsize=11)
    for ax in g.axes.flat:
        ax.set_ylim(0, 1.05)
    sns.move_legend(g, "upper left", bbox_to_anchor=(1.0, 0.9), title=None, frameon=False)
    g.figure.suptitle("Does the attack move other explanations more than a random frame? (lower: moved more; "
                      f"{long.image.nunique()} images)", y=1.03, fontsize=11)
    return g.figure


ALIKE = 0.9  # maps of different images this correlated (mean over pairs) are one blob: their differences are drawn


def _alike(maps) -> bool:
    """Whether the maps ``(n, H, W)`` of ``n >= 2`` images are nearly one map (their mean pairwise correlation above
    :data:`ALIKE`), as the Gaussian upsampling's wide blob is."""
    flat = maps.detach().cpu().double().flatten(1)
    if len(flat) < 2:
        return False
    c = torch.corrcoef(flat)
    return float(c[~torch.eye(len(flat), dtype=torch.bool)].mean()) > ALIKE


def upsampling_under_attack_figure(panels: dict):
    """One row per model and image: the attacked image and its saliency under each upsampling (each min-max
    normalised; an upsampling whose maps are nearly one blob for every image, :func:`_alike`, drawn minus its mean
    over the shown images, so that what varies shows; a perceptual colour map, one colourbar), titled with that map's mass on the frame's pixels over the frame's share of the area (1: no
    preference for the frame). Not drawn (None) when no model has two images: one image is an anecdote.
    ``panels``: :func:`ama.studies.faithfulness.upsampling_panels`."""
    rows = [(model, attack, maps, ratio, j) for model, (attack, maps, ratio) in panels.items()
            for j in range(len(next(iter(maps.values()))))]
    if not rows or max(len(next(iter(maps.values()))) for _, maps, _ in panels.values()) < 2:
        return None
    ups = list(rows[0][2])
    fig, axes = plt.subplots(len(rows), 1 + len(ups), figsize=(2.9 * (1 + len(ups)) + 0.8, 2.9 * len(rows)),
                             squeeze=False, layout="constrained")
    im = None
    alike = {(model, up): _alike(maps[up]) for model, (_, maps, _) in panels.items() for up in ups}
    for row, (model, attack, maps, ratio, j) in zip(axes, rows):
        row[0].imshow(plots.to_numpy_image(attack.adv_q[j]))
        row[0].set_title(f"{model}, {attack.names[j]}\nattacked, e = {attack.params.e}", fontsize=9)
        for ax, up in zip(row[1:], ups):
            m = maps[up][j].detach().cpu().float()
            if alike[(model, up)]:  # one blob for every image: what differs from the model's mean map shows
                m = m - maps[up].detach().cpu().float().mean(0)
            m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
            im = ax.imshow(m.numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{up}{' minus its mean over these images' if alike[(model, up)] else ''}:\nframe mass "
                         f"{ratio[up][j]:.2f} x its area share", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, label="saliency, min-max normalised per map")
    fig.suptitle("An attacked image's saliency under each upsampling", fontsize=11)
    return fig
