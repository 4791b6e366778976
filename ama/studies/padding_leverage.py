"""Does the frame's leverage follow the padding? (``SCIENCE.md`` section 8; issue 42's design.)

Hypothesis: the e-pixel frame moves the model as far as the padding carries border pixels inwards: least under
symmetric zeros (``lite0-zero-pad``), more under TF "same" (as trained), reflect and replicate. A run of the profile
``padding_leverage`` attacks the same images, every one classified correctly by every variant, under each padding
(:mod:`ama.inputs.padding`), each as loaded (``lite0-reflect-pad``: BatchNorm statistics learnt under TF padding, a
damaged network) and with its BatchNorm statistics re-estimated under its own padding on held-out images
(``lite0-reflect-pad-recal``, ``lite0-recal`` included), so that the recalibrated set differs in padding alone.

Per image and variant (:func:`leverage_rows`), the strongest attack (APGD, its defaults, the run's budget, 8-bit):
the attacked CAM's cosine to the clean CAM (``cam_drop`` = 1 - cosine), the drop of the clean logit margin (true class
minus the largest other), ``fooled`` at e = 1 and the smallest ``e`` of (1, 2, 4) that fools (``log2_e``; 3 when
none does: censored). Per padding and outcome, its value minus symmetric zeros' paired per image
(:func:`leverage_tests`: the paired t-test and t-interval, McNemar's exact for ``fooled``): *holds* (this padding gives
the frame more leverage), *does not hold* (less), each Holm-adjusted within the recalibrated set's comparisons (the
study's family); *equivalent* when the 95% interval lies within the margin of :data:`ama.criteria.PADDING_EQUIVALENCE`
(for ``fooled``, when the exact upper bound of the share of images that differ does).
The raw variants' comparisons are shown beside, not judged: their confidence differs as much as their padding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import FIGURES, TABLES
from ..attack.marginal import attack_batch, marginal_attack
from ..criteria import PADDING_EQUIVALENCE
from ..figures.forest import forest_figure
from ..inputs.padding import PADDINGS, padding_of, recal_base
from ..kernels.metrics import attack_metrics
from ..stats.intervals import INCONCLUSIVE, Estimate, clopper_pearson, holm_verdicts
from ..stats.power import MeanEffect
from ..stats.rows import eight_bit
from ..store.tables import interval_text, p_text, read_table, readable
from .attack_experiments import STRONGEST, with_labels
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

__all__ = ["WIDTHS", "OUTCOMES", "leverage_rows", "leverage_summary", "leverage_tests", "STUDY"]

WIDTHS = (1, 2, 4)  # the widths tried, smallest first, for the smallest that fools
OUTCOMES = {"cam_drop": "CAM moved (1 - cosine)", "margin_drop": "drop of the clean logit margin (logits)",
            "log2_e": "fools at a narrower frame (log2 halvings of e)",
            "fooled": "fooled at e = 1"}
"""The paired outcomes, each compared so that above 0 means more leverage than symmetric zeros: ``log2_e``, where
smaller is more, as symmetric zeros' minus the padding's (the halvings of the width it spares)."""
BASELINE = "zero"  # symmetric zeros: the padding that carries least of the border inwards


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The logit of each image's label minus its largest other logit."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, labels.view(-1, 1), float("-inf")).amax(1)
    return (true - other).numpy()


def leverage_rows(model, x: torch.Tensor, names, labels, params, first=None) -> pd.DataFrame:
    """Per image: the strongest attack at e = 1 (``first``: its :class:`AttackResult`, else attacked here) and, on the
    images it does not fool, at each larger width of :data:`WIDTHS` in turn; the module docstring's outcomes, with
    ``padding``, ``recalibrated`` and the clean ``clean_conf`` (the label's probability) and ``clean_margin``.
    ``labels``: the true classes; ``params``: the run's (:class:`ama.params.RunParams`: ``n_iter``, ``lamb``, ``seed``)."""
    labels = torch.as_tensor(labels)
    kw = dict(n_iter=params.n_iter, lamb=params.lamb, seed=params.seed, optimizer=STRONGEST)
    first = first or marginal_attack(model, x, e=WIDTHS[0], names=list(names), **kw)
    rows = with_labels(eight_bit(attack_metrics(first)), names, labels).set_index("image").reindex(list(names))
    clean, adv = first.clean_logits, first.adv_q_logits
    out = pd.DataFrame(dict(image=list(names), model=model.name, padding=padding_of(model.name),
                            recalibrated=recal_base(model.name) is not None,
                            clean_conf=clean.softmax(1).gather(1, labels.view(-1, 1)).squeeze(1).numpy(),
                            clean_margin=_margin(clean, labels), margin_drop=_margin(clean, labels) - _margin(adv, labels),
                            cam_drop=1 - rows.cam_cosine.to_numpy(), fooled=rows.fooled.astype(bool).to_numpy()))
    smallest = np.where(out.fooled, WIDTHS[0], np.nan)
    for e in WIDTHS[1:]:
        left = np.flatnonzero(np.isnan(smallest))
        size = attack_batch(x.device)
        for s in range(0, len(left), size):
            idx = left[s:s + size]
            r = marginal_attack(model, x[idx], e=e, names=[names[k] for k in idx], **kw)
            fooled = (r.adv_q_class != labels[idx]).numpy()
            smallest[idx[fooled]] = e
    out["smallest_e"] = smallest
    out["log2_e"] = np.where(np.isnan(smallest), np.log2(2 * WIDTHS[-1]), np.log2(np.nan_to_num(smallest, nan=1)))
    return out


def leverage_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant of :func:`leverage_rows` rows: the images, the median clean confidence, and each outcome's mean
    (``fooled``: the rate) with its 95% interval."""
    rows = []
    for model, g in table.groupby("model", sort=False):
        row = dict(model=model, padding=g.padding.iloc[0], recalibrated=bool(g.recalibrated.iloc[0]),
                   n_images=len(g), clean_conf=float(g.clean_conf.median()))
        for col in OUTCOMES:
            est = Estimate.rate(int(g[col].sum()), len(g)) if col == "fooled" else Estimate.of(g[col])
            row.update({col: est.value, f"{col}_low": est.low, f"{col}_high": est.high})
        rows.append(row)
    return pd.DataFrame(rows)


def leverage_tests(table: pd.DataFrame) -> pd.DataFrame:
    """Per set (raw, recalibrated), padding other than :data:`BASELINE` and outcome: its value minus symmetric zeros'
    (``log2_e``: symmetric zeros' minus its, :data:`OUTCOMES`), paired per image (:meth:`Estimate.paired`; ``cam_drop``, ``margin_drop``, ``log2_e`` by the paired t-test, ``fooled``
    by McNemar's exact test), the ``verdict`` against 0 (holds: more leverage than symmetric zeros), ``equivalent``
    (the 95% interval within :data:`ama.criteria.PADDING_EQUIVALENCE`'s margin); ``p_holds`` / ``p_fails`` only on the
    recalibrated set, the one judged."""
    rows = []
    for recal, g in table.groupby("recalibrated", sort=True):
        base = g[g.padding == BASELINE].set_index("image")
        if base.empty:
            continue
        for padding, h in g[g.padding != BASELINE].groupby("padding", sort=False):
            h = h.set_index("image")
            common = base.index.intersection(h.index)
            for col in OUTCOMES:
                pair = (h.loc[common, col].astype(float), base.loc[common, col].astype(float))
                gap = Estimate.paired(*(pair[::-1] if col == "log2_e" else pair))
                margin = PADDING_EQUIVALENCE[col]
                row = dict(recalibrated=bool(recal), padding=padding, outcome=col, n_images=gap.n, value=gap.value,
                           low=gap.low, high=gap.high, more=gap.discordant[0], less=gap.discordant[1],
                           test=gap.test, p_value=gap.p_value, verdict=gap.verdict(0.0), margin=margin,
                           equivalent=_equivalent(gap, margin))
                if recal:
                    row.update(gap.p_columns(0.0))
                rows.append(row)
    return pd.DataFrame(rows)


def _equivalent(gap: Estimate, margin: float) -> bool:
    """Within ``margin`` at 95% (two one-sided tests at 0.025): a t-interval of differences that vary inside it; for
    yes/no outcomes the exact upper bound of the share of images that differ below it (the difference can be no larger,
    whatever the direction: McNemar's conditional interval says nothing when few differ)."""
    if gap.statistic == "sign":
        return bool(clopper_pearson(sum(gap.discordant), gap.n)[1] < margin) if gap.n else False
    return bool(gap.low < gap.high and -margin < gap.low and gap.high < margin)


def _answer(rows: pd.DataFrame) -> str:
    """The recalibrated set's answer per padding, in words."""
    words = []
    for padding, g in rows.groupby("padding", sort=False):
        held = [OUTCOMES[o].split(" (")[0] for o, v in zip(g.outcome, g.verdict) if v == "holds"]
        same = [OUTCOMES[o].split(" (")[0] for o, q in zip(g.outcome, g.equivalent) if q]
        words.append(f"{PADDINGS[padding].split(',')[0]}: " + (f"more leverage ({', '.join(held)})" if held else
                     f"equivalent ({', '.join(same)})" if same else "not decided"))
    return "; ".join(words)


def leverage_finding(run_dir: Path) -> Finding | None:
    """The report's finding: the recalibrated set's answer per padding and a table of every paired comparison."""
    tests = read_table(Path(run_dir) / "tables", TABLES.padding_outcomes_tests)
    if tests is None or tests.empty:
        return None
    tests, label = deciding(run_dir, TABLES.padding_outcomes_tests, tests)
    tests = tests.sort_values("recalibrated", ascending=False, kind="stable")  # the judged set first
    recal = tests[tests.recalibrated.astype(bool)]
    n = int(tests.n_images.max())
    sentence = (f"Against symmetric zeros, paired on {n} images (APGD) with BatchNorm re-estimated under each "
                "padding: "
                f"{_answer(recal) if len(recal) else 'no recalibrated variants in this run'}.")
    table = readable(tests, {
        "BatchNorm": lambda r: "re-estimated" if r.recalibrated else "as trained",
        "padding": lambda r: PADDINGS[r.padding].split(",")[0], "outcome": lambda r: OUTCOMES[r.outcome],
        "more leverage than symmetric zeros (95% CI)": lambda r: interval_text(r.value, r.low, r.high, signed=True),
        "test": lambda r: f"{r.test} {p_text(r.p_value)}",
        "within the equivalence band": lambda r: f"{'yes' if r.equivalent else 'no'} (±{r.margin:g})",
        label: lambda r: r.verdict if r.recalibrated else "shown, not judged"})
    return Finding(sentence, table)


def leverage_figure(tests: pd.DataFrame | None):
    """A forest plot of ``tests`` (rows of :func:`leverage_tests`): each padding minus symmetric zeros per outcome (a
    panel each), the recalibrated and the raw variants one above the other, the recalibrated coloured by their
    Holm-adjusted verdict (the report's), the raw grey (not judged); None without rows."""
    if tests is None or tests.empty:
        return None
    tests = tests.sort_values("recalibrated", ascending=False, kind="stable")  # the judged set on top
    recal = tests.recalibrated.astype(bool)
    judged = pd.Series(INCONCLUSIVE, index=tests.index)  # the raw set is shown, not judged
    if "p_holds" in tests and recal.any():  # the recalibrated set as the report judges it: Holm over its comparisons
        judged[recal] = holm_verdicts(tests.p_holds[recal], tests.p_fails[recal])
    rows = tests.assign(label=[f"{PADDINGS[p].split(',')[0]} ({'BN re-estimated' if r else 'as trained'})"
                               for p, r in zip(tests.padding, recal)],
                        panel=[OUTCOMES[o] for o in tests.outcome], judged=judged)
    notes = [f"n = {int(n)}; {int(a)} more, {int(b)} less" for n, a, b in zip(rows.n_images, rows.more, rows.less)]
    return forest_figure(rows, "label", "value", "low", "high", notes, panel="panel", sharex=False,
                         xlabel="more leverage than symmetric zeros (above 0), paired per image (95% interval)",
                         title="Does the frame's leverage follow the padding? APGD at the run's budget",
                         side_labels={"above": "more leverage than symmetric zeros (Holm)",
                                      "below": "less leverage (Holm)",
                                      "includes": "not decided (Holm), or as trained: shown, not judged"},
                         verdict="judged")


def _compute(model, inputs) -> dict:
    """The study's rows per image (:func:`leverage_rows`) for the run's ``model``, its e = 1 attack the run's own."""
    if inputs.labels is None or bool((torch.as_tensor(inputs.labels) < 0).any()):
        return {}  # the outcomes are against the true label: a labelled set only (data/imagenet)
    first = inputs.attack(STRONGEST, WIDTHS[0])
    return {TABLES.padding_outcomes: leverage_rows(model, inputs.x, inputs.names, inputs.labels, inputs.params, first)}


def _summarise(tables: dict) -> dict:
    rows = tables[TABLES.padding_outcomes]
    return {TABLES.padding_outcomes_summary: leverage_summary(rows), TABLES.padding_outcomes_tests: leverage_tests(rows)}


def _caption(run_dir) -> str | None:
    tests = read_table(Path(run_dir) / "tables", TABLES.padding_outcomes_tests)
    if tests is None or tests.empty:
        return None
    return (f"Each padding minus symmetric zeros, paired over {int(tests.n_images.max())} images, per outcome; above 0 "
            "the frame moves the model more under that padding. Re-estimated BatchNorm (the judged set) above the "
            "network as trained.")


STUDY = register(Study(
    name="padding_leverage",
    question="Does the frame's leverage follow the padding? The same images under each padding, BatchNorm re-estimated",
    tables=(Table("padding_outcomes", "image x padding variant: APGD's outcomes at e = 1 and the smallest fooling e",
),
            Table("padding_outcomes_summary", "padding variant: clean confidence and each outcome's mean", "summary"),
            Table("padding_outcomes_tests", "padding x outcome: minus symmetric zeros, paired", "summary",
                  verdicts=Verdicts("value", "low", "high", 0.0,
                                    lambda r: f"{r.padding} gives the frame more leverage than symmetric zeros: "
                                              f"{r.outcome}"))),
    figures=(Figure("padding_outcomes", "each padding minus symmetric zeros, per outcome",
                    lambda folder: leverage_figure(folder.read(TABLES.padding_outcomes_tests)), caption=_caption),),
    compute=_compute, summarise=_summarise, keys=("padding", "outcome", "recalibrated"), section=leverage_finding,
    # a medium paired effect (d = 0.5: the cosine gap of 0.15 with a spread of about 0.3 across images) in a family of
    # 3 paddings x 4 outcomes: 60 images for 80% power at Holm's strictest level (make study PROFILE=padding_leverage)
    power=MeanEffect(0.5, family=12, source="the models run's 8 images: cosine 0.976 vs 0.824, symmetric zeros vs TF")))
