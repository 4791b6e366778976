"""The targeted shapes: glyph targets, the skip rule, reached targets beside the random frame, exact paired tests."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

from ama.attack.marginal import random_frame
from ama.criteria import TARGET_REACHED, TARGET_SKIP
from ama.inputs.targets import glyph
from ama.kernels.cam import cam
from ama.kernels.metrics import cosine
from ama.params import RunParams
from ama.stats.intervals import clopper_pearson
from ama.studies import targeted_shapes as ts


def test_a_quarter_of_the_images_two_to_twenty_spread_over_them():
    names = [f"i{k:03d}" for k in range(400)]
    assert len(ts.targeted_images(names[:200])) == 20 and len(ts.targeted_images(names)) == 20
    assert ts.targeted_images(names[:8]) == ["i000", "i007"] and ts.targeted_images(names[:1]) == ["i000"]
    assert len(ts.targeted_images(names[:60])) == 15 and len(ts.targeted_images(names[:100])) == 20


def test_targets_are_the_glyphs_at_cam_resolution_and_close_ones_are_skipped(tiny_model, images32):
    table, maps = ts.target_table(tiny_model, images32, list("abcd"))
    assert list(table.target[:2]) == [f"glyph {g}" for g in ts.GLYPHS] and len(table) == 4 * len(ts.GLYPHS)
    with torch.no_grad():
        clean = cam(tiny_model, images32)
    assert torch.equal(maps[1], glyph((8, 8), ts.GLYPHS[1]))
    assert table.clean_target_cosine[3] == pytest.approx(cosine(clean[1:2], maps[3:4]).item(), abs=1e-6)
    assert (table.attacked == (table.clean_target_cosine < TARGET_SKIP)).all()


def test_targeted_attacks_rows_and_the_random_frames_cosine_to_its_target(tiny_model, images32):
    p = RunParams(e=(1, 4), n_iter=2)
    targets, rows = ts.targeted_attacks(tiny_model, images32[:2], ["a", "b"], p)
    n = int(targets.attacked.sum())
    assert ts.targeted_widths(p) == [1] and len(rows) == n * 3 * 2  # (sign, apgd, random) x quantised
    assert set(rows.optimizer) == {"sign", "apgd", ts.RANDOM_FRAME}
    assert (rows.reached == (rows.target_cosine >= TARGET_REACHED)).all()
    chosen = targets[targets.attacked]
    x = images32[:2].repeat_interleave(len(ts.GLYPHS), 0)[torch.tensor(targets.attacked.to_numpy())]
    r = random_frame(tiny_model, x, e=1, names=list(chosen.image))
    T = torch.stack([glyph((8, 8), t.removeprefix("glyph ")) for t in chosen.target])
    rf = rows[(rows.optimizer == ts.RANDOM_FRAME) & rows.quantized]
    assert rf.target_cosine.to_numpy() == pytest.approx(cosine(T, r.adv_q_cam).numpy(), abs=1e-6)
    assert list(rf.target) == list(chosen.target)


def test_targeted_summary_exact_rates_and_paired_tests_on_known_numbers():
    n = 6
    targets = pd.DataFrame(dict(model="m", image=[f"i{k}" for k in range(n) for _ in range(2)],
                                target=["glyph X", "glyph L"] * n, attacked=[True, True] * (n - 1) + [True, False]))
    reached = {"sign": [1, 0, 0, 0, 0, 0], "apgd": [1, 1, 1, 1, 0, 0], ts.RANDOM_FRAME: [0] * n}
    rows = pd.concat([pd.DataFrame(dict(model="m", image=[f"i{k}" for k in range(n)], e=1, target="glyph X",
                                        optimizer=o, quantized=True, reached=[bool(v) for v in r],
                                        target_cosine=[0.95 if v else 0.5 for v in r])) for o, r in reached.items()])
    s = ts.targeted_summary(rows, targets)
    x = s[s.target == "glyph X"].set_index("optimizer")
    assert (x.loc["apgd", "reached"], x.loc["apgd", "reached_low"]) == (4 / 6, pytest.approx(clopper_pearson(4, 6)[0]))
    assert x.loc["apgd", "vs_random_p"] == pytest.approx(binomtest(4, 4, 0.5).pvalue)
    assert x.loc["apgd", "vs_reference"] == pytest.approx(3 / 6)
    assert x.loc["apgd", "vs_reference_p"] == pytest.approx(binomtest(3, 3, 0.5).pvalue)
    assert pd.isna(x.loc["sign", "vs_reference"]) and (x.n_skipped == 0).all()
    both = s[s.target == ts.BOTH].set_index("optimizer")
    assert both.loc["apgd", "n_skipped"] == 1 and both.loc["apgd", "n_targets"] == 12
    lines = ts.targeted_lines(s)
    assert "m 12 targets" in lines[0] and "1 skipped" in lines[0]
    assert any(line.startswith("m, e = 1, apgd: reached 67%") for line in lines)
