"""Is the margin special? Claim 3's control (``SCIENCE.md`` section 7): the reference attack on masks of exactly the
frame's pixel count elsewhere (:func:`ama.geometry.location_masks`: interior rings, random pixels, one side, a centred
square), the frame's fooling rate minus each location's, paired per image (:func:`location_summary`).

The study ``location``, declared at the end (:mod:`ama.studies.study`); the default run computes it beside claim 3.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..artifacts import TABLES
from ..criteria import pct
from ..figures.control_charts import location_control_figure
from ..geometry import location_masks
from ..stats.intervals import FAILS, HOLDS, INCONCLUSIVE, Estimate
from ..store.tables import read_table
from .attack_experiments import ORIGINAL, masked_attack_rows
from .study import Figure, Study, Table, Verdicts, register

__all__ = ["LOCATION_COLUMNS", "location_control", "location_summary", "margin_special", "location_sentence", "STUDY"]

LOCATION_COLUMNS = ["image", "model", "e", "location", "mask_pixels", "changed_pixels", "clean_class", "adv_class",
                    "fooled", "cam_cosine", "adv_conf"]


def location_control(model, x: torch.Tensor, names: Sequence[str], params, frame_result=None, labels=None,
                     batch: int | None = None) -> pd.DataFrame:
    """The reference attack (its optimiser, ``n_iter``, ``lamb``, ``seed``; 8-bit) at the run's smallest ``e`` on every
    mask of :func:`ama.geometry.location_masks` (the same pixel count as the frame): one row per image x location
    (:data:`LOCATION_COLUMNS`; ``fooled`` against the true label where known). ``frame_result``: the run's own frame
    attack at that ``e`` (reused as the ``frame`` rows), else attacked here. ``params``: a fast variant of
    :class:`ama.params.RunParams`; ``batch``: images attacked together (None: :func:`ama.attack.marginal.attack_batch`)."""
    e = min(params.e)
    masks = location_masks(tuple(x.shape[-2:]), e, params.seed)
    done = {} if frame_result is None else {"frame": frame_result}
    frames = [rows.assign(e=e, location=location, mask_pixels=int(mask.sum()))[LOCATION_COLUMNS]
              for location, mask, rows in masked_attack_rows(model, x, names, masks, params, labels, batch, done)]
    return pd.concat(frames, ignore_index=True)


def location_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, ``e`` and location of :func:`location_control` rows: the fooling rate with its exact interval, the
    mean CAM cosine with its bootstrap interval and, paired per image with the frame, ``frame_minus_fooled`` (the
    frame's fooled minus this location's, mean over images) with Newcombe's interval for paired rates, the images
    where only the frame fools (``frame_only``) and only this location (``location_only``), the exact McNemar
    ``p_value`` and the verdict against 0 it gives (holds: the frame fools more)."""
    rows = []
    for (model, e), g in table.groupby(["model", "e"], sort=False):
        frame = g[g.location == "frame"].set_index("image")
        for location, h in g.groupby("location", sort=False):
            fooled = Estimate.rate(int(h.fooled.sum()), len(h))
            cosine = Estimate.of(h.cam_cosine)
            row = dict(model=model, e=e, location=location, mask_pixels=int(h.mask_pixels.iloc[0]),
                       n_images=len(h), fooling_rate=fooled.value, fooling_low=fooled.low, fooling_high=fooled.high,
                       cam_cosine=cosine.value, cosine_low=cosine.low, cosine_high=cosine.high)
            if location != "frame" and len(frame):
                here = h.set_index("image").fooled.astype(float).reindex(frame.index)
                gap = Estimate.paired(frame.fooled.astype(float), here)
                row.update(frame_minus_fooled=gap.value, gap_low=gap.low, gap_high=gap.high,
                           frame_only=gap.discordant[0], location_only=gap.discordant[1], p_value=gap.p_value,
                           verdict=gap.verdict(0.0), **gap.p_columns(0.0))
            rows.append(row)
    return pd.DataFrame(rows)


def margin_special(summary: pd.DataFrame) -> str:
    """Is the margin special? :data:`HOLDS` when the frame fools more than every other location (each paired
    interval above 0), :data:`FAILS` when some location fools more (an interval below 0), else inconclusive."""
    verdicts = summary.dropna(subset=["verdict"]).verdict.tolist() if "verdict" in summary else []
    if not verdicts:
        return INCONCLUSIVE
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else INCONCLUSIVE


def location_sentence(location: pd.DataFrame) -> str:
    """Claim 3's control: is the margin special? (:func:`location_summary`). ``location``: rows of
    ``attack_location``."""
    s = location_summary(location)
    e, n_px, n = int(s.e.min()), int(s.mask_pixels.iloc[0]), int(s.n_images.max())
    rates = "; ".join(f"{r.location} {pct(r.fooling_rate)} ({pct(r.fooling_low)} to {pct(r.fooling_high)})"
                      for r in s.itertuples())
    gaps = "; ".join(f"{r.location} {100 * r.frame_minus_fooled:+.0f} points ({100 * r.gap_low:+.0f} to "
                     f"{100 * r.gap_high:+.0f}; {int(r.frame_only)} vs {int(r.location_only)} images, exact "
                     f"p = {r.p_value:.2g})" for r in s.dropna(subset=["frame_minus_fooled"]).itertuples())
    answer = {HOLDS: "yes: the frame fools more than every other location",
              FAILS: "no: some location of the same pixel count fools more than the frame",
              INCONCLUSIVE: "not decided on this run: some difference's exact test has p >= 0.05"}[margin_special(s)]
    return (f" Control, is the margin special? The same attack on {n_px} pixels (the {e}-pixel frame's count) placed "
            f"elsewhere ({n} images, notebook 05) fools: {rates}. The frame minus each location, paired per image "
            f"(Newcombe's 95% interval; the images where only the frame or only the location fools, McNemar's exact "
            f"test): "
            f"{gaps}. Answer: {answer}.")


def _compute(model, inputs) -> dict:
    """The study's rows per image: the location control on ``inputs`` (:class:`ama.studies.study.Inputs`), the run's frame
    attack at the smallest ``e`` reused as its ``frame`` rows; ``model``: a :class:`ama.kernels.cam_model.CAMModel`."""
    frame = inputs.attack(ORIGINAL, min(inputs.params.e))
    return {TABLES.attack_location: location_control(model, inputs.x, inputs.names, inputs.params, frame,
                                                     inputs.labels)}


def _section(run_dir) -> list[str]:
    """The report's lines: :func:`location_sentence` of the run's ``attack_location``."""
    rows = read_table(run_dir / "tables", TABLES.attack_location)
    return [] if rows is None or rows.empty else [location_sentence(rows).strip()]


def _caption(run_dir) -> str | None:
    """The figure's caption on the run in ``run_dir``: the frame's fooling rate beside the other locations' range
    (the first model's), None without the summary."""
    rows = read_table(Path(run_dir) / "tables", TABLES.attack_location_summary)
    if rows is None or rows.empty or "frame" not in set(rows.location):
        return None
    rows = rows[rows.model == rows.model.iloc[0]]
    frame, rest = rows[rows.location == "frame"].iloc[0], rows[rows.location != "frame"]
    if rest.empty:
        return None
    lo, hi = rest.loc[rest.fooling_rate.idxmin()], rest.loc[rest.fooling_rate.idxmax()]
    return (f"At e = {int(frame.e)} the frame's {int(frame.mask_pixels)} pixels fool {pct(frame.fooling_rate)} of "
            f"{int(frame.n_images)} images ({frame.model}); as many pixels elsewhere fool from {pct(lo.fooling_rate)} "
            f"({lo.location}) to {pct(hi.fooling_rate)} ({hi.location}).")


STUDY = register(Study(
    name="location", family="controls",
    question="Is the margin special? The same attack on the same number of pixels elsewhere",
    tables=(Table("attack_location", "image x location: the reference attack on as many pixels as the frame, elsewhere"),
            Table("attack_location_summary", "location: its fooling rate and the frame minus it, paired", "summary",
                  shown=True, verdicts=Verdicts("frame_minus_fooled", "gap_low", "gap_high", 0.0,
                                                lambda r: f"the frame fools more than {r.location}, e = {r.e}"))),
    figures=(Figure("attack_location", "the location control's fooling rates",
                    lambda folder: location_control_figure(folder.read(TABLES.attack_location_summary)),
                    caption=_caption),),
    compute=_compute,
    summarise=lambda tables: {TABLES.attack_location_summary: location_summary(tables[TABLES.attack_location])},
    keys=("location",), section=_section))
