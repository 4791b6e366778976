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
from ..stats.power import PairedEffect
from ..store.tables import interval_text, p_text, read_table, readable
from .attack_experiments import ORIGINAL, STRONGEST, masked_attack_rows
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

__all__ = ["LOCATION_COLUMNS", "location_control", "location_summary", "margin_special", "location_finding", "location_table", "location_sentence", "LOCATION_NAMES", "STUDY"]

LOCATION_COLUMNS = ["image", "model", "optimizer", "e", "location", "mask_pixels", "changed_pixels", "clean_class", "adv_class",
                    "fooled", "cam_cosine", "adv_conf"]


OPTIMIZERS = (ORIGINAL, STRONGEST)
"""The attacks the control runs at every placement: the paper's (the reference) and the strongest at the same budget
(a placement that only a weak optimiser leaves unexploited is not evidence that the margin is special)."""


def location_control(model, x: torch.Tensor, names: Sequence[str], params, frame_result=None, labels=None,
                     batch: int | None = None, optimizers: Sequence[str] = (ORIGINAL,)) -> pd.DataFrame:
    """Each attack of ``optimizers`` (its defaults, ``n_iter``, ``lamb``, ``seed``; 8-bit) at the run's smallest ``e``
    on every mask of :func:`ama.geometry.location_masks` (the same pixel count as the frame): one row per image x
    optimiser x location (:data:`LOCATION_COLUMNS`; ``fooled`` against the true label where known).
    ``frame_result``: ``{optimizer: AttackResult}``, the run's own frame attacks at that ``e`` (reused as the ``frame``
    rows; an :class:`AttackResult` alone is the reference's), else attacked here. ``params``: a fast variant of
    :class:`ama.params.RunParams`; ``batch``: images attacked together (None: :func:`ama.attack.marginal.attack_batch`)."""
    e = min(params.e)
    masks = location_masks(tuple(x.shape[-2:]), e, params.seed)
    given = {} if frame_result is None else frame_result if isinstance(frame_result, dict) else \
        {ORIGINAL: frame_result}
    frames = []
    for optimizer in optimizers:
        done = {"frame": given[optimizer]} if optimizer in given else {}
        frames += [rows.assign(optimizer=optimizer, e=e, location=location, mask_pixels=int(mask.sum()))[LOCATION_COLUMNS]
                   for location, mask, rows in masked_attack_rows(model, x, names, masks, params, labels, batch, done,
                                                                  optimizer)]
    return pd.concat(frames, ignore_index=True)


def _with_optimizer(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``optimizer`` column: the reference's where a run before APGD joined the control wrote none."""
    return table if "optimizer" in table else table.assign(optimizer=ORIGINAL)


def location_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, optimiser, ``e`` and location of :func:`location_control` rows (a table without ``optimizer``, as
    runs before it wrote, is the reference's): the fooling rate with its exact interval, the
    mean CAM cosine with its bootstrap interval and, paired per image with the frame, ``frame_minus_fooled`` (the
    frame's fooled minus this location's, mean over images) with the exact interval of McNemar's test, the images
    where only the frame fools (``frame_only``) and only this location (``location_only``), the exact McNemar
    ``p_value`` and the verdict against 0 it gives (holds: the frame fools more)."""
    rows = []
    table = _with_optimizer(table)
    for (model, optimizer, e), g in table.groupby(["model", "optimizer", "e"], sort=False):
        frame = g[g.location == "frame"].set_index("image")
        for location, h in g.groupby("location", sort=False):
            fooled = Estimate.rate(int(h.fooled.sum()), len(h))
            cosine = Estimate.of(h.cam_cosine)
            row = dict(model=model, optimizer=optimizer, e=e, location=location, mask_pixels=int(h.mask_pixels.iloc[0]),
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


def _compute(model, inputs) -> dict:
    """The study's rows per image: the location control on ``inputs`` (:class:`ama.studies.study.Inputs`), the run's frame
    attack at the smallest ``e`` reused as its ``frame`` rows; ``model``: a :class:`ama.kernels.cam_model.CAMModel`."""
    frames = {o: inputs.attack(o, min(inputs.params.e)) for o in OPTIMIZERS}
    return {TABLES.attack_location: location_control(model, inputs.x, inputs.names, inputs.params, frames,
                                                     inputs.labels, optimizers=OPTIMIZERS)}


LOCATION_NAMES = {"frame": "the frame", "ring8": "ring 8 px in", "ring32": "ring 32 px in", "ring64": "ring 64 px in",
                  "random": "scattered pixels", "strip": "top strip", "square": "centred square"}
"""The locations as people read them (``random`` is seeded scattered pixels, not the random-frame baseline)."""


def location_table(summary: pd.DataFrame, verdict: str = "verdict") -> pd.DataFrame:
    """The report's table of :func:`location_summary`: per location its fooling rate, CAM cosine and the frame minus
    it, paired per image, with the discordant images and McNemar's exact test (with several attacks a row per placement,
    a column per attack, the verdicts in the attacks' order); with several models a row per model
    (the frame's rate, the placement that fools most, how many fool more, and the answer). ``verdict``: the verdict
    column's heading (:func:`ama.studies.study.deciding`)."""
    summary = _with_optimizer(summary)
    if summary.model.nunique() > 1:
        rows = []
        for (model, optimizer), g in summary.groupby(["model", "optimizer"], sort=False):
            frame, others = g[g.location == "frame"], g[g.location != "frame"]
            best = others.sort_values("fooling_rate").iloc[-1]
            rows.append({"model": model, "attack": optimizer, "the frame fools": pct(frame.fooling_rate.iloc[0]) if len(frame) else "–",
                         "placement that fools most": f"{LOCATION_NAMES.get(best.location, best.location)} "
                                                      f"{pct(best.fooling_rate)}",
                         "fool more (of the others)": f"{int((others.fooling_rate > frame.fooling_rate.max()).sum())}"
                                                      f" of {len(others)}",
                         "is the margin special?": margin_special(g)})
        return pd.DataFrame(rows)
    if summary.optimizer.nunique() > 1:  # several attacks: a row per placement, a column per attack
        return pd.DataFrame([{"placement": LOCATION_NAMES.get(location, location),
                              **{f"fools, {o}": pct(r.fooling_rate) for o, r in g.set_index("optimizer").iterrows()},
                              **{f"frame minus it, {o}": interval_text(r.frame_minus_fooled, r.gap_low, r.gap_high, True,
                                                                        signed=True)
                                 for o, r in g.set_index("optimizer").iterrows()},
                              verdict: " / ".join(v if isinstance(v, str) else "–" for v in g.verdict)}
                             for location, g in summary.groupby("location", sort=False)])
    return readable(summary, {
        "placement": lambda r: LOCATION_NAMES.get(r.location, r.location),
        "fools (95% CI)": lambda r: interval_text(r.fooling_rate, r.fooling_low, r.fooling_high, percent=True),
        "CAM cosine": "cam_cosine",
        "frame minus it, paired": lambda r: interval_text(r.frame_minus_fooled, r.gap_low, r.gap_high, True,
                                                          signed=True),
        "only the frame / only it": lambda r: ("–" if pd.isna(r.frame_only) else
                                               f"{int(r.frame_only)} / {int(r.location_only)}"),
        "McNemar": lambda r: p_text(r.p_value), verdict: "verdict"})


def location_finding(summary: pd.DataFrame, verdict: str = "verdict") -> Finding:
    """The report's finding of the location control (:func:`location_summary` rows, their verdicts those that decide,
    headed ``verdict``): is the margin special, in one sentence, and :func:`location_table`."""
    e, n_px, n = int(summary.e.min()), int(summary.mask_pixels.iloc[0]), int(summary.n_images.max())
    summary = _with_optimizer(summary)
    by_model = {m: margin_special(g) for m, g in summary.groupby(["model", "optimizer"], sort=False)}
    answers = {HOLDS: "yes: the frame fools more than every other placement",
               FAILS: "no: a placement of as many pixels fools more than the frame",
               INCONCLUSIVE: "not decided on this run"}
    if summary.model.nunique() == 1:
        parts = []
        for (_, optimizer), answer in by_model.items():
            g = summary[summary.optimizer == optimizer]
            first = g[g.location != "frame"].sort_values("fooling_rate").iloc[-1]
            frame = g[g.location == "frame"].fooling_rate
            parts.append(f"with {optimizer}, {answers[answer].split(':')[0]}: the frame fools "
                         f"{pct(frame.iloc[0]) if len(frame) else '–'}, its pixels elsewhere up to "
                         f"{pct(first.fooling_rate)} ({LOCATION_NAMES.get(first.location, first.location)})")
        answer = "; ".join(parts)
        sentence = (f"Is the {e}-pixel frame's margin special, against its {n_px} pixels placed elsewhere on {n} "
                    f"images? {answer[:1].upper()}{answer[1:]}.")
    else:
        counts = pd.Series(by_model).value_counts()
        sentence = (f"Per model, on {n} images, the {e}-pixel frame against its {n_px} pixels "
                    f"placed elsewhere: " + "; ".join(f"{answers[v]} for {k} of {len(by_model)} models"
                                                       for v, k in counts.items()) + " (model x attack).")
    return Finding(sentence, location_table(summary, verdict))


def location_sentence(run_dir: Path) -> str | None:
    """Claim 3's sentence on the location control of the run in ``run_dir`` (its first model, the paper's attack):
    how many other placements of the frame's pixels fool more often by the verdict that decides (Holm,
    :func:`~ama.studies.study.deciding`), the one that fools most and the frame's rate; None where the run has none."""
    location = read_table(Path(run_dir) / "tables", TABLES.attack_location_summary)
    if location is None or location.empty:
        return None
    location, _ = deciding(run_dir, TABLES.attack_location_summary, _with_optimizer(location))
    g = location[(location.model == location.model.iloc[0]) & (location.optimizer == ORIGINAL)]
    frame, others = g[g.location == "frame"].fooling_rate, g[g.location != "frame"]
    if frame.empty or others.empty:
        return None
    best = others.sort_values("fooling_rate").iloc[-1]
    more = int(others.verdict.astype(str).str.startswith(FAILS).sum())  # "the frame fools more" does not hold
    n, n_px = int(g.n_images.max()), int(g.mask_pixels.iloc[0])
    most = (f"most: {LOCATION_NAMES.get(best.location, best.location)}, {pct(best.fooling_rate)} against "
            f"{pct(frame.iloc[0])}")
    if more:
        return (f"The frame is not the attack's best place: with the paper's sign steps, {more} of {len(others)} "
                f"other placements of its {n_px} pixels fool more often, by Holm's verdict ({most}; {n} images).")
    return (f"No other placement of the frame's {n_px} pixels fools more often by Holm's verdict, on {n} images "
            f"({most}).")


def _section(run_dir) -> Finding | None:
    """The report's finding: :func:`location_finding` of the run's ``attack_location``."""
    rows = read_table(run_dir / "tables", TABLES.attack_location)
    if rows is None or rows.empty:
        return None
    return location_finding(*deciding(run_dir, TABLES.attack_location_summary, location_summary(rows)))


def _caption(run_dir) -> str | None:
    """The figure's caption on the run in ``run_dir``: per optimiser, the range of the frame's fooling rate minus each
    placement's, paired per image (the first model's), None without the summary."""
    rows = read_table(Path(run_dir) / "tables", TABLES.attack_location_summary)
    if rows is None or rows.empty or "frame_minus_fooled" not in rows:
        return None
    rows = _with_optimizer(rows[(rows.model == rows.model.iloc[0])].dropna(subset=["frame_minus_fooled"]))
    if rows.empty:
        return None
    ranges = [f"{optimizer} {100 * g.frame_minus_fooled.min():+.0f} to {100 * g.frame_minus_fooled.max():+.0f}"
              for optimizer, g in rows.groupby("optimizer", sort=False)]
    first = rows.iloc[0]
    return (f"The frame's fooling rate minus each placement's, paired over {int(rows.n_images.max())} images "
            f"({first.model}, e = {int(first.e)}), in points: {', '.join(ranges)}; negative where the placement "
            "fools more.")


STUDY = register(Study(
    name="location",
    question="Is the margin special? The same attack on the same number of pixels elsewhere",
    tables=(Table("attack_location", "image x location: the reference attack on as many pixels as the frame, elsewhere"),
            Table("attack_location_summary", "location: its fooling rate and the frame minus it, paired", "summary", verdicts=Verdicts("frame_minus_fooled", "gap_low", "gap_high", 0.0,
                                                lambda r: f"the frame fools more than {r.location} "
                                                          f"({getattr(r, 'optimizer', ORIGINAL)}), e = {r.e}"))),
    figures=(Figure("attack_location", "the location control's fooling rates",
                    lambda folder: location_control_figure(folder.read(TABLES.attack_location_summary)),
                    caption=_caption),),
    compute=_compute,
    summarise=lambda tables: {TABLES.attack_location_summary: location_summary(tables[TABLES.attack_location])},
    keys=("location", "optimizer"), section=_section,
    # the effect to detect: the evidence run's frame vs ring 8 and ring 32 (0 vs 4 of 20 images differ), in a family of
    # 6 placements x 2 attacks: 56 images for 80% power at Holm's strictest level (make study PROFILE=location: 60)
    power=PairedEffect(0.0, 0.2, family=12, source="the evidence run's frame vs ring 8: 0 vs 4 of 20 images differ")))
