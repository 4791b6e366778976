"""The frame's sides: the masks partition the frame, each side's ERF mass ratio on known maps, the paired tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

from ama.geometry import FRAME_SIDES, frame_mask, frame_sides
from ama.kernels import receptive_field as rf
from ama.studies import controls, sides


@pytest.mark.parametrize("e", [1, 3])
def test_the_four_sides_partition_the_frame_with_the_corners_on_left_and_right(e):
    masks = frame_sides((20, 30), e)
    assert list(masks) == list(FRAME_SIDES)
    total = torch.stack(list(masks.values())).int().sum(0)
    assert torch.equal(total.bool(), frame_mask((20, 30), e)) and total.max() == 1        # disjoint, cover the frame
    assert masks["left"][0, 0] and masks["right"][-1, -1] and not masks["top"][0, 0]
    assert int(masks["left"].sum()) == 20 * e and int(masks["top"].sum()) == (30 - 2 * e) * e


def test_side_mass_ratios_of_a_flat_erf_are_one_and_of_an_erf_on_the_left_column_its_inverse_share():
    H = W = 16
    irf = torch.zeros(4, H, W)
    irf[:, 6:10, 6:10] = 1
    flat = torch.full((1, 4, H, W), 1 / (H * W))
    left = torch.zeros(1, 4, H, W)
    left[..., :, 0] = 1 / H
    t_flat, t_left = rf.misalignment(flat, irf, e=1), rf.misalignment(left, irf, e=1)
    for side in FRAME_SIDES:
        assert np.allclose(t_flat[f"side_mass_ratio_{side}"], 1.0)
    assert np.allclose(t_left.side_mass_ratio_left, W)                      # all the mass on 1/W of the image
    assert np.allclose(t_left[["side_mass_ratio_right", "side_mass_ratio_top", "side_mass_ratio_bottom"]], 0)


def _mis(values_left, values_right):
    rows = []
    for k, (a, b) in enumerate(zip(values_left, values_right)):
        for cell in range(2):
            rows.append(dict(model="m", image=f"i{k}", cell=cell, cell_kind="centre" if cell else "corner",
                             side_mass_ratio_left=a, side_mass_ratio_right=b, side_mass_ratio_top=1.0,
                             side_mass_ratio_bottom=1.0))
    return pd.DataFrame(rows)


def test_side_mass_summary_pairs_left_against_right_per_image_and_gives_p_values_for_all_cells_only():
    s = controls.side_mass_summary(_mis([0.4, 0.5, 0.3, 0.45, 0.35, 0.5], [0.9, 0.8, 0.85, 0.95, 0.7, 0.9]))
    lr = s[(s.cell_kind == "all") & (s.measure == "left - right")].iloc[0]
    assert lr.value == pytest.approx(np.mean([-0.5, -0.3, -0.55, -0.5, -0.35, -0.4])) and lr.verdict == "does not hold"
    tb = s[(s.cell_kind == "all") & (s.measure == "top - bottom")].iloc[0]
    assert tb.value == 0 and not np.isnan(tb.p_holds)
    assert s[(s.cell_kind == "centre") & (s.measure == "left - right")].p_holds.isna().all()
    assert controls.side_mass_summary(pd.DataFrame(dict(model=["m"], image=["a"], cell_kind=["centre"]))).empty


def test_side_attack_summary_tests_opposite_sides_with_mcnemar_on_the_discordant_images():
    fooled = dict(left=[1, 1, 1, 1, 0, 0], right=[0, 0, 0, 1, 0, 1], top=[1] * 6, bottom=[1] * 6)
    rows = [dict(model="m", e=1, side=s, image=f"i{k}", mask_pixels=224, fooled=bool(v), cam_cosine=0.5)
            for s, vals in fooled.items() for k, v in enumerate(vals)]
    out = sides.side_attack_summary(pd.DataFrame(rows)).set_index("side")
    assert out.loc["left"].fooling_rate == pytest.approx(4 / 6)
    lr = out.loc["left - right"]
    assert (lr.first_only, lr.second_only) == (3, 1)
    assert lr.p_value == pytest.approx(binomtest(3, 4).pvalue) and lr.fooling_rate == pytest.approx(2 / 6)
    assert out.loc["top - bottom"].fooling_rate == 0


def test_side_attack_confines_the_change_to_one_side(tiny_model, images32):
    class P:
        e, n_iter, lamb, seed = (1,), 2, 100.0, 0
    table = sides.side_attack(tiny_model, images32[:2], ["a", "b"], P)
    assert len(table) == 8 and list(table.side.unique()) == list(FRAME_SIDES)
    assert set(table[table.side == "left"].mask_pixels) == {32} and set(table[table.side == "top"].mask_pixels) == {30}
    mass = pd.DataFrame(dict(model=table.model.iloc[0], cell_kind="all", n_images=2,
                             measure=["left", "right", "top", "bottom"],
                             value=[0.4, 0.8, 0.6, 0.6], low=0.1, high=0.9, verdict=None))
    found = sides.sides_finding(mass, sides.side_attack_summary(table))
    assert "right side 0.80 against the left's 0.40" in found.sentence and "Confined to one side" in found.sentence
    assert list(found.table.columns[:3]) == ["model", "images", "ERF left"] and "nan" not in found.table.to_string()
