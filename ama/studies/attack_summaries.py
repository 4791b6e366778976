"""What the attack's per-image tables give over images (notebook 03): the fooling rate by clean-confidence tercile,
the spread over seeds, and the notebook's Markdown table and lines. Tables in, tables or text out.
"""
from __future__ import annotations

import pandas as pd

from ..stats.intervals import clopper_pearson
from ..stats.rows import attack_rows, eight_bit, original_attack


TERCILES = ("low", "middle", "high")


def by_confidence(metrics: pd.DataFrame) -> pd.DataFrame:
    """The reference attack's fooling rate (flip, the run's largest ``n_iter``, 8-bit) per model, ``e`` and tercile of
    the clean confidence (the model's images cut at its 1/3 and 2/3 quantiles): ``n_images``, ``fooled``,
    ``fooling_rate`` with its exact (Clopper-Pearson) interval (``low``, ``high``) and the tercile's confidence range."""
    rows = original_attack(metrics)
    out = []
    for model, g in rows.groupby("model", sort=False):
        conf = g.drop_duplicates("image").set_index("image").clean_conf
        if len(conf) < len(TERCILES):  # too few images to cut: one group
            tercile = pd.Series("all", index=conf.index)
        else:
            tercile = pd.qcut(conf.rank(method="first"), len(TERCILES), labels=list(TERCILES))
        for (e, t), h in g.assign(tercile=g.image.map(tercile)).groupby(["e", "tercile"], observed=True):
            k, n = int(h.fooled.sum()), len(h)
            lo, hi = clopper_pearson(k, n)
            out.append(dict(model=model, e=e, tercile=t, conf_min=h.clean_conf.min(), conf_max=h.clean_conf.max(),
                            n_images=n, fooled=k, fooling_rate=k / n, low=lo, high=hi))
    return pd.DataFrame(out)


def seed_spread(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per model, optimiser and ``e`` (8-bit rows of ``attack_seeds``): the fooling rate and mean CAM cosine of each
    seed summarised across seeds: ``n_seeds``, their mean, standard deviation, minimum and maximum."""
    q = eight_bit(seeds)
    per_seed = q.groupby(["model", "optimizer", "e", "seed"]).agg(fooling_rate=("fooled", "mean"),
                                                                  cam_cosine=("cam_cosine", "mean"))
    out = per_seed.groupby(["model", "optimizer", "e"]).agg(
        n_seeds=("fooling_rate", "size"), fooling_rate=("fooling_rate", "mean"), fooling_sd=("fooling_rate", "std"),
        fooling_min=("fooling_rate", "min"), fooling_max=("fooling_rate", "max"), cam_cosine=("cam_cosine", "mean"),
        cam_cosine_sd=("cam_cosine", "std"))
    return out.reset_index()


SUMMARY_MARKDOWN_DROP = ("iou_0.4", "iou_0.6")


def summary_markdown(summary: pd.DataFrame) -> str:
    """``attack_summary`` as a Markdown table (rounded to 3 digits; the IoU at 0.4 and 0.6 left out for width)."""
    return summary.drop(columns=list(SUMMARY_MARKDOWN_DROP)).round(3).to_markdown(index=False) + "\n"


SUMMARY_COLUMNS = ["model", "e", "n_iter", "mode", "setting", "quantized", "n_images", "fooling_rate", "cam_cosine",
                   "cam_spearman", "iou_0.5", "top20_iou", "pointing_rate", "random_fooling_rate", "random_cam_cosine"]


def headline(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e`` and ``n_iter`` of the reference attack (flip, 8-bit) beside the random frame."""
    head = attack_rows(summary, "flip")
    return [f"{r.model} e={r.e} n_iter={r.n_iter}: fooling {r.fooling_rate:.0%} (random frame "
            f"{r.random_fooling_rate:.0%}), CAM cosine {r.cam_cosine:.3f} (random frame {r.random_cam_cosine:.3f})"
            for r in head.itertuples()]


def keep_line(metrics: pd.DataFrame, model: str) -> str:
    """How the keep mode did for ``model`` (8-bit rows of ``attack_metrics``): labels kept and their CAM cosine."""
    rows = attack_rows(metrics[metrics.model == model], "keep")
    if rows.empty:
        return "keep mode: not in this run's grid (GRID=slim); the figure attacks one image in keep mode"
    kept = ~rows.fooled.astype(bool)
    return (f"keep mode, e = {', '.join(str(e) for e in sorted(rows.e.unique()))}: label kept for {int(kept.sum())} "
            f"of {len(rows)} images (8-bit); mean CAM cosine where kept {rows[kept].cam_cosine.mean():.3f}")
