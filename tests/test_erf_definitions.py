"""The occlusion ERF against a hand computation, and claim 1's statistics under both ERF definitions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ama.kernels.cam import compute_cam
from ama.kernels.occlusion import _covering_patches, occlusion_erf
from ama.studies import erf_definitions as ed


def test_the_covering_patches_reach_every_pixel_and_the_last_ones_sit_flush_with_the_edge():
    masks = _covering_patches((20, 20), 8)
    assert len(masks) == 9 and masks.any(0).all()
    assert masks[2, :8, 12:].all() and masks[8, 12:, 12:].all()


def test_the_occlusion_erf_is_each_patchs_raw_cam_change_spread_over_its_pixels(tiny_model, images32):
    x = images32[:1]
    maps = occlusion_erf(tiny_model, x, patch=16)                     # 4 patches of a 32 x 32 image
    clean = compute_cam(tiny_model, x)
    h, w = clean.raw.shape[-2:]
    assert maps.shape == (1, h * w, 32, 32) and torch.allclose(maps.sum((-2, -1)), torch.ones(1, h * w))
    cell = 5
    change = []
    for t, l in ((0, 0), (0, 16), (16, 0), (16, 16)):                 # by hand: fill, recompute, |delta| of the cell
        z = x.clone()
        z[..., t:t + 16, l:l + 16] = x[0].mean((1, 2))[:, None, None]
        raw = compute_cam(tiny_model, z, clean.target, relu=False, normalize=False).raw
        change.append((raw - clean.raw).abs().flatten()[cell].item())
    want = torch.tensor(change) / sum(change) / 256
    got = maps[0, cell, [0, 0, 16, 16], [0, 16, 0, 16]]
    assert torch.allclose(got, want.float(), rtol=1e-4, atol=1e-9)


def test_definition_rows_give_both_definitions_on_the_same_cells_and_the_summary_judges_each(tiny_model, images32):
    rows = ed.definition_rows(tiny_model, images32[:3], ["a", "b", "c"], e=1, patch=8)
    assert set(rows.definition) == set(ed.DEFINITIONS)
    assert len(rows[rows.definition == "gradient"]) == len(rows[rows.definition == "occlusion"])
    summary = ed.definition_summary(rows)
    assert summary[summary.definition == "gradient"].p_holds.isna().all()
    assert summary[summary.definition == "occlusion"].p_holds.notna().all()
    found = ed.definition_finding(summary)
    assert len(found.table) == 8 and "nan" not in found.table.to_string()


def test_the_summary_finds_the_verdict_depends_on_the_definition_when_one_is_aligned():
    rows = []
    for k in range(8):
        for d, mass, null in (("gradient", 0.8 + 0.01 * k, 0.6), ("occlusion", 0.5 + 0.01 * (k % 3 - 1), 0.5)):
            rows.append(dict(model="m", image=f"i{k}", definition=d, cell=0, cell_kind="centre",
                             erf_mass_outside_irf=mass, centred_gaussian_mass_outside_irf=null))
    summary = ed.definition_summary(pd.DataFrame(rows)).set_index("definition")
    assert summary.loc["gradient"].claim1 == "holds" and summary.loc["occlusion"].claim1 == "inconclusive"
    assert summary.loc["gradient"].null_gap == pytest.approx(np.mean([0.2 + 0.01 * k for k in range(8)]))
    assert "depends on the ERF's definition" in ed.definition_finding(summary.reset_index()).sentence
