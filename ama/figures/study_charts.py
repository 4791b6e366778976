"""The figures of notebook 05's studies drawn from their tables (:mod:`ama.studies`): explanations under attack
(:mod:`ama.studies.transfer`) and the saliency of an attacked image under each upsampling
(:mod:`ama.studies.faithfulness`). The forest plots of paired comparisons are in :mod:`ama.figures.forest`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from . import plots
from .charts import verdict_interval


def transfer_figure(transfer: pd.DataFrame):
    """Clean vs attacked map cosine of each explanation method, the attack beside the random frame, per ``e`` and
    optimiser, from the per-image rows of ``transfer`` (mean and its BCa 95% interval over images)."""
    cols = ["model", "image", "e", "optimizer", "method", "frame", "cam_cosine"]
    long = pd.concat([transfer.assign(frame="attack")[cols],
                      transfer.assign(frame="random frame", cam_cosine=transfer.random_cam_cosine)[cols]],
                     ignore_index=True)
    g = sns.catplot(data=long, x="e", y="cam_cosine", hue="frame", col="method", row="optimizer", kind="bar",
                    errorbar=verdict_interval, capsize=0.15, height=2.9, aspect=0.95, sharex=False,
                    palette={"attack": "C0", "random frame": "0.6"})
    g.set_axis_labels("frame width e (px)", "")
    g.set_titles(template="{col_name}, {row_name} attack", size=10)
    g.figure.supylabel("map cosine, clean vs attacked (mean, BCa 95% CI)", fontsize=11)
    for ax in g.axes.flat:
        ax.set_ylim(0, 1.05)
    sns.move_legend(g, "upper left", bbox_to_anchor=(1.0, 0.9), title=None, frameon=False)
    g.figure.suptitle("Does the attack move other explanations more than a random frame? (lower: moved more; "
                      f"{long.image.nunique()} images)", y=1.03, fontsize=11)
    return g.figure


def upsampling_under_attack_figure(panels: dict):
    """One row per model: the attacked image and its saliency under each upsampling (each over its maximum, one
    colourbar), titled with that map's mass on the frame's pixels over the frame's share of the area (1: no preference
    for the frame). ``panels``: :func:`ama.studies.faithfulness.upsampling_panels`."""
    ups = list(next(iter(panels.values()))[1])
    fig, axes = plt.subplots(len(panels), 1 + len(ups), figsize=(3 * (1 + len(ups)) + 0.8, 3.2 * len(panels)),
                             squeeze=False, layout="constrained")
    im = None
    for row, (model, (attack, maps, frame_ratio)) in zip(axes, panels.items()):
        row[0].imshow(plots.to_numpy_image(attack.adv_q[0]))
        row[0].set_title(f"{model}, {attack.names[0]}: attacked, e = {attack.params.e}", fontsize=9)
        for ax, up in zip(row[1:], ups):
            m = maps[up][0].detach().cpu().float()
            im = ax.imshow((m / m.max().clamp_min(1e-12)).numpy(), cmap="jet", vmin=0, vmax=1)
            ax.set_title(f"{up}: frame mass {frame_ratio[up]:.2f} x its area share", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.7, label="saliency / its maximum")
    return fig
