"""The frame's four sides (``SCIENCE.md`` section 8): how much of a cell's ERF lies on each side's ``e`` pixels, and the
reference attack confined to one side.

* **Per-side ERF mass** (:func:`ama.studies.controls.side_mass_summary`, notebook 02's): per image the mean over cells of ``side_mass_ratio_<side>``
  (:func:`ama.kernels.receptive_field.misalignment`: the ERF mass on that side / that side's share of the image), per
  cell column and row too; left minus right and top minus bottom paired per image (t interval, 0 = balanced).
* **One-side attack** (:func:`side_attack`, :func:`side_attack_summary`): the reference attack at the smallest ``e``
  with its mask one side of the frame (corners on the left / right sides, :func:`ama.geometry.frame_sides`); fooled
  per side with the exact interval, left against right and top against bottom paired per image (McNemar exact).

TF "same" padding pads a stride-2 convolution's right and bottom edges only (:mod:`ama.inputs.padding`), a plausible
cause of an imbalance; the padding variants of a run (``MODELS=lite0,lite0-zero-pad,...``) test it with the weights
fixed (:func:`imbalance_line`). The study ``sides``, declared at the end (:mod:`ama.studies.study`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..artifacts import TABLES
from ..figures.control_charts import frame_sides_figure
from ..geometry import FRAME_SIDES, frame_sides
from ..inputs.padding import AS_TRAINED, base_of, padding_of
from ..stats.intervals import INCONCLUSIVE, Estimate
from ..criteria import pct
from ..store.tables import interval_text, number_text, read_table
from .attack_experiments import masked_attack_rows
from .controls import PAIRS
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

SIDE_COLUMNS = ["image", "model", "e", "side", "mask_pixels", "clean_class", "adv_class", "fooled", "cam_cosine"]


def side_attack(model, x: torch.Tensor, names: Sequence[str], params, labels=None,
                batch: int | None = None) -> pd.DataFrame:
    """The reference attack (the run's ``n_iter``, ``lamb``, ``seed``; 8-bit) at the smallest ``e`` confined to each
    side of the frame: one row per image x side (:data:`SIDE_COLUMNS`; ``fooled`` against the true label where
    known). ``params``: :class:`ama.params.RunParams` (or its fast variant); ``batch``: images attacked together."""
    e = min(params.e)
    return pd.concat([rows.assign(e=e, side=side, mask_pixels=int(mask.sum()))[SIDE_COLUMNS] for side, mask, rows in
                      masked_attack_rows(model, x, names, frame_sides(tuple(x.shape[-2:]), e), params, labels, batch)],
                     ignore_index=True)


def side_attack_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and ``e`` of :func:`side_attack` rows: each side's fooling rate (exact interval) and mean CAM cosine;
    per pair of opposite sides (rows ``side`` = ``left - right``, ``top - bottom``) the first's fooled minus the
    second's paired per image (McNemar's exact interval), the discordant images and McNemar's exact ``p_value`` with the
    verdict against 0."""
    rows = []
    for (model, e), g in table.groupby(["model", "e"], sort=False):
        by_side = {side: h.set_index("image") for side, h in g.groupby("side", sort=False)}
        for side, h in by_side.items():
            rate = Estimate.rate(int(h.fooled.sum()), len(h))
            rows.append(dict(model=model, e=e, side=side, mask_pixels=int(h.mask_pixels.iloc[0]), n_images=len(h),
                             fooling_rate=rate.value, low=rate.low, high=rate.high, cam_cosine=h.cam_cosine.mean()))
        for a, b in PAIRS:
            if a in by_side and b in by_side:
                first = by_side[a].fooled.astype(float)
                gap = Estimate.paired(first, by_side[b].fooled.astype(float).reindex(first.index))
                rows.append(dict(model=model, e=e, side=f"{a} - {b}", n_images=gap.n, fooling_rate=gap.value,
                                 low=gap.low, high=gap.high, first_only=gap.discordant[0],
                                 second_only=gap.discordant[1], p_value=gap.p_value, verdict=gap.verdict(0.0),
                                 **gap.p_columns(0.0)))
    return pd.DataFrame(rows)


AXES = (("left - right", "left / right"), ("top - bottom", "top / bottom"))


def _axis_cause(lead, variants) -> str:
    """One axis of :func:`imbalance_line`: the as-trained model's row ``lead`` beside the symmetric variants' rows."""
    decided = [v for v in variants if v.verdict != INCONCLUSIVE]
    if lead.verdict == INCONCLUSIVE:
        return "no clear imbalance as trained" + (", though the symmetric paddings show one" if decided else "")
    if not variants:
        return ("an imbalance as trained (this run has no padding variants: "
                "`MODELS=lite0,lite0-zero-pad,... STUDIES=sides` asks the cause)")
    if len(decided) == len(variants) and all((v.value > 0) != (lead.value > 0) for v in decided):
        return "it flips with the padding: the padding's geometry causes it"
    return "it does not follow the padding: the kit leaves it unexplained"


def imbalance_line(mass: pd.DataFrame) -> str | None:
    """Is the frame's imbalance of ERF mass between opposite sides the padding's? TF "same" gives the right column and
    the bottom row a stride-2 kernel's centre tap and the left and top only its edge tap, symmetric padding the
    reverse; so where the padding causes an imbalance, it flips between the as-trained model and its symmetric
    variants. Per axis (all cells): each model's paired difference, and that reading of it. ``mass``: rows of
    ``frame_side_mass`` (:func:`ama.studies.sides.side_mass_summary`)."""
    rows = mass[mass.cell_kind == "all"].set_index(["model", "measure"])
    models = [m for m in mass.model.unique() if all((m, a) in rows.index for a, _ in AXES)]
    lead = [m for m in models if padding_of(m) == AS_TRAINED]
    if not lead:
        return None
    symmetric = [m for m in models if base_of(m) == lead[0] and m != lead[0]]
    text = lambda r: f"{r.value:+.2f} ({r.low:+.2f} to {r.high:+.2f}, {r.verdict})"  # noqa: E731
    parts = []
    for measure, axis in AXES:
        values = "; ".join(f"{m} {text(rows.loc[(m, measure)])}" for m in [lead[0], *symmetric])
        cause = _axis_cause(rows.loc[(lead[0], measure)], [rows.loc[(m, measure)] for m in symmetric])
        parts.append(f"{measure}: {values}: {cause}")
    return ("ERF mass on opposite sides of the frame, paired per image (TF 'same' padding gives the right column and the "
            "bottom row a stride-2 kernel's centre tap, symmetric padding the left and top): " + ". ".join(parts) + ".")


def sides_table(mass: pd.DataFrame, attack: pd.DataFrame | None, verdict: str = "verdict") -> pd.DataFrame:
    """The report's table, a row per model: each side's ERF mass over its share of the image (all cells), the paired
    left - right and top - bottom differences with the verdict that decides (headed ``verdict``), and the one-side
    attack's fooling rate per side. ``mass``: ``frame_side_mass`` rows; ``attack``: ``attack_sides_summary`` rows."""
    rows = []
    mass = mass[mass.cell_kind == "all"]
    models = list(dict.fromkeys(list(mass.model) + (list(attack.model) if attack is not None else [])))
    for model in models:
        g = mass[mass.model == model]
        by = g.set_index("measure")
        row = {"model": model}
        if len(g):
            row["images"] = int(g.n_images.iloc[0])
        row.update({f"ERF {side}": number_text(by.value[side]) for side in FRAME_SIDES if side in by.index})
        for pair, _ in AXES:
            if pair in by.index:
                r = by.loc[pair]
                row[f"{pair}, paired"] = interval_text(r.value, r.low, r.high, signed=True)
                row[f"{pair.replace(' - ', ' > ')}? {verdict}"] = r.verdict  # the hypothesis the verdict tests
        if attack is not None and len(attack):
            a = attack[(attack.model == model) & attack.side.isin(FRAME_SIDES)]
            row["one side attacked: fools l / r / t / b"] = " / ".join(
                pct(a[a.side == side].fooling_rate.iloc[0]) if (a.side == side).any() else "–" for side in FRAME_SIDES)
        rows.append(row)
    return pd.DataFrame(rows)


def sides_finding(mass: pd.DataFrame, attack: pd.DataFrame | None, verdict: str = "verdict") -> Finding:
    """The report's finding of the sides study: which sides the ERF weighs more, what one side alone does, and, with
    the padding variants in the run, whether the imbalance follows the padding (:func:`imbalance_line`). ``mass``:
    ``frame_side_mass`` rows (all cells); ``attack``: ``attack_sides_summary`` rows, or None; ``verdict``: the
    verdict columns' heading (:func:`ama.studies.study.deciding`)."""
    table = sides_table(mass, attack, verdict)
    sentence = ""
    if len(mass) and len(table) == 1:
        r = table.iloc[0]
        sentence = (f"Per unit of area the ERF weighs the frame's right side {r.get('ERF right', '–')} against the "
                    f"left's {r.get('ERF left', '–')}, and the bottom {r.get('ERF bottom', '–')} against the top "
                    f"{r.get('ERF top', '–')} ({int(r.images)} images).")
    elif len(mass):
        right = int((mass[(mass.cell_kind == "all") & (mass.measure == "left - right")].high < 0).sum())
        sentence = (f"The ERF weighs the frame's right side more than its left in {right} of {len(table)} models "
                    f"(interval below 0).")
    if attack is not None and len(attack):
        single = attack[attack.side.isin(FRAME_SIDES)]
        sentence += f" Confined to one side, the reference attack fools at most {pct(single.fooling_rate.max())}."
    lead = imbalance_line(mass) if len(mass) and len(table) > 1 else None
    if lead:
        sentence += " Left against right with the padding variants: " + lead.split("left - right: ")[1].split(
            ". top - bottom")[0].split(": ")[-1] + "."
    return Finding(sentence.strip(), table)


def _section(run_dir: Path) -> Finding | None:
    """The report's finding: :func:`sides_finding` of the run's tables, None when it has none."""
    tables = Path(run_dir) / "tables"
    mass, attack = read_table(tables, TABLES.frame_side_mass), read_table(tables, TABLES.attack_sides_summary)
    if (mass is None or mass.empty) and (attack is None or attack.empty):
        return None
    if mass is None or mass.empty:  # the one-side attack alone (a run without notebook 02)
        return sides_finding(pd.DataFrame(columns=["model", "cell_kind", "measure", "value", "low", "high",
                                                   "n_images", "verdict"]), attack)
    mass, label = deciding(run_dir, TABLES.frame_side_mass, mass[mass.cell_kind == "all"])
    return sides_finding(mass, attack, label)


def _figure(folder):
    """The figure ``frame_sides`` from the run's tables, or None when it has no side masses."""
    mass, attack = folder.read(TABLES.frame_side_mass), folder.read(TABLES.attack_sides_summary)
    return frame_sides_figure(mass, attack) if mass is not None and len(mass) else None


def _caption(run_dir: Path) -> str | None:
    """The figure's caption on the run in ``run_dir``: each side's ERF mass over its area over all cells and the
    one-side attack's largest fooling rate (the first model's), None without ``frame_side_mass``."""
    tables = Path(run_dir) / "tables"
    mass, attack = read_table(tables, TABLES.frame_side_mass), read_table(tables, TABLES.attack_sides_summary)
    if mass is None or mass.empty:
        return None
    mass = mass[(mass.model == mass.model.iloc[0]) & (mass.cell_kind == mass.cell_kind.iloc[0])].set_index("measure")
    if not set(FRAME_SIDES) <= set(mass.index):
        return None
    v = mass.value
    text = (f"Over {mass.cell_kind.iloc[0]} cells, the ERF's mass over each side's area: left {v['left']:.2f}, right "
            f"{v['right']:.2f}, top {v['top']:.2f}, bottom {v['bottom']:.2f}.")
    if attack is not None and len(attack) and attack.fooling_rate.notna().any():
        one = attack[attack.side.isin(FRAME_SIDES)]
        text += f" The attack on one side fools at most {100 * one.fooling_rate.max():.0f}% of the images."
    return text


STUDY = register(Study(
    name="sides", question="Why the margin? The frame's four sides",
    tables=(Table("attack_sides", "image x side: the reference attack confined to one side of the frame"),
            Table("attack_sides_summary", "side: its fooling rate; left against right and top against bottom, paired",
                  "summary",
                  verdicts=Verdicts("fooling_rate", "low", "high", 0.0,
                                    lambda r: f"the one-side attack fools, {r.side}, e = {r.e}",
                                    "sides: one side attacked"))),
    figures=(Figure("frame_sides", "each side's ERF mass over its area and the one-side attack's fooling rate",
                    _figure, caption=_caption),),
    judges={TABLES.frame_side_mass: Verdicts("value", "low", "high", 0.0,
                                             lambda r: f"the ERF's mass on the frame's sides, {r.measure}",
                                             "sides: ERF mass")},
    compute=lambda model, inputs: {TABLES.attack_sides: side_attack(model, inputs.x, inputs.names, inputs.params,
                                                                    inputs.labels)},
    summarise=lambda tables: {TABLES.attack_sides_summary: side_attack_summary(tables[TABLES.attack_sides])},
    keys=("side", "measure"), measured_by=("measure",), section=_section))
