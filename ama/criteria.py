"""The kit's criteria for the paper's three claims, and what "a cell moved" means where the kit counts it.

The paper publishes no thresholds; these are the kit's, stated in every report. Each number lives here once: the
claims' verdicts (:mod:`ama.studies.claims`), the tables that count against a bar, the figures that draw it and the
sentences of :data:`CRITERIA` (written from the constants) all read it from this module. Changes and masses are
shares: of the map's range for a CAM change, of the ERF's total for a mass. Standard library only.
"""
from __future__ import annotations

MISALIGNED_MASS = 0.5
"""Claim 1, the kit's earlier bar (beside the verdict, which is against the aligned null): the centre cell's ERF
is misaligned with its IRF when more than this share of its mass lies outside the IRF support (mean over images). A
flat ERF already puts most of its mass outside a small IRF, so this bar can hardly fail."""

KEEP_IRF_CHANGE = 0.10
"""Claim 2: filling everything outside a cell's IRF moves the cell when its raw CAM changes by more than this share of
the map's range (per image the median over cells; then the median over images), with the fill :data:`CLAIM2_FILL`."""

CLAIM2_FILL = "blur"
"""Claim 2's fill, the one that decides: a blurred copy of the image keeps its colours and coarse layout, so the
cell sees the least unnatural input outside its IRF (black, the mean colour and noise are inputs no photo holds and
move a cell more). The other fills, and every fill pooled, stand beside it; a run without it (FAST: two fills) pools
its fills."""

MARGIN_MOVES_INTERIOR = 0.01
"""Claim 2's second part: a 1-pixel margin occlusion moves an interior cell (one whose IRF never touches the margin)
when it changes the cell's raw CAM by more than this share of the map's range."""

FOOLED_RATE = 0.5
"""Claim 3, the kit's earlier bar (beside the verdicts, which are on the calibrated criterion): at the smallest frame
width the attack fools more than this share of the images."""

JOINT_RATE = 0.5
"""Claim 3, prevalence: at the smallest frame width the attack fools the model and completely changes the CAM (its
cosine to the clean CAM at most the median cosine between unrelated images' CAMs, :mod:`ama.studies.complete_change`) on
more than this share of the images."""

TAU_QUANTILE = 0.5
"""Claim 3's *completely changed*: an attacked CAM whose cosine to the clean CAM is at most this quantile of the
cosines between the clean CAMs of two unrelated images (the null, :mod:`ama.studies.complete_change`). The median:
changed completely means no more like the clean CAM than a typical unrelated image's CAM is; unrelated ImageNet CAMs
already look alike (the median is about 0.7), so stricter quantiles (:data:`TAU_CURVE`) stand beside it on every
run."""

TAU_CURVE = (0.1, 0.25, 0.5, 0.75, 0.9)
"""The null's quantiles at which every run states claim 3's joint share (the tau curve): the declared one, stricter
and more lenient."""

PADDING_EQUIVALENCE = {"cam_drop": 0.05, "margin_drop": 1.0, "log2_e": 0.5, "fooled": 0.10}
"""The padding study's equivalence margins (:mod:`ama.studies.padding_leverage`), per paired outcome: a padding's
difference from symmetric zeros is *equivalent* to none when its 95% interval lies within plus or minus this. The CAM's
cosine drop: 0.05, a third of the gap between symmetric zeros and TF padding on the models run's 8 images (0.976 vs
0.824); the clean logit margin's drop: 1 logit, about the spread of the margin between seeds; the smallest fooling
width: half a doubling (log2 px); fooled: 10 points."""

TARGET_SKIP = 0.8
"""Targeted shapes: a target whose cosine to the clean CAM is already at least this is not attacked (skipped, counted)."""

TARGET_REACHED = 0.9
"""Targeted shapes: an attack reaches its target when the attacked CAM's cosine to the target is at least this."""

CELL_MOVED = 0.05
"""Occlusion tables (``n_cells_moved``): a cell counts as moved by a patch when its raw CAM changes by more than this
share of the map's range. A description of the tables, not a claim's bar."""

UNMOVED = 1e-4
"""Below this share of the map's range a change is float rounding: the cell did not move (claim 2 per unit of area
leaves such cells out, as their ratio has no finite value)."""


def pct(share: float, digits: int = 0) -> str:
    """A share in ``[0, 1]`` as a percentage with ``digits`` decimals: ``0.1`` -> ``"10%"``; ``"–"`` for a missing
    one (NaN: e.g. a median's interval on fewer than 6 images). ``share``: e.g. a threshold of this module."""
    return "–" if share != share else f"{100 * share:.{digits}f}%"


def criteria_text() -> str:
    """The three claims with the kit's criteria, as the report states them (Markdown list, one item per claim)."""
    return f"""\
1. **Misaligned**: for every cell kind (centre, interior, edge, corner) the ERF puts more of its mass outside the \
cell's IRF than the aligned null: a Gaussian as wide as the cell's measured ERF, centred on its IRF, cut to the image. \
Per image the mean over the kind's cells, then over images; the difference must exceed 0.
2. **Occlusion outside the IRF moves the cell**: filling everything outside a cell's IRF changes its raw CAM by \
more than {pct(KEEP_IRF_CHANGE)} of the map's range (per image the median over cells, then over images), filled \
with a {CLAIM2_FILL}red copy (the other fills beside). Beside it: a 1-pixel margin occlusion moves interior cells, whose IRF never touches the margin, by \
more than {pct(MARGIN_MOVES_INTERIOR)}.
3. **A 1-pixel frame changes both**: at the smallest ``e`` the reference attack (8-bit) fools the model and \
*completely changes* the CAM (cosine to the clean CAM at most the median cosine between two unrelated images' CAMs) \
on one image. *Capability*: on more images than a random frame of the same pixels (paired, McNemar's exact test). \
*Prevalence*: on more than {pct(JOINT_RATE)} of the images (exact interval)."""


CRITERIA = criteria_text()

BARS = ("ERF mass outside the IRF minus the aligned null's, > 0 for every cell kind",
        f"keep-IRF median change of the cell, > {pct(KEEP_IRF_CHANGE)} of the map's range",
        f"at the smallest e: fooled and completely changed, more than the random frame (capability) and on > "
        f"{pct(JOINT_RATE)} of the images (prevalence)")
"""Each claim's bar in a few words, in claim order (the report's claims table, docs/EVIDENCE.md's table of the
references)."""
