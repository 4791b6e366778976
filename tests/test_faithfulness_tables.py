"""ama.faithfulness: mass shares, patch means, the upsampling comparison and the faithfulness table (tiny model)."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

import ama
from ama import faithfulness, occlusion
from ama.attack import frame_mask


def test_mass_share_and_patch_means_by_hand():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0], maps[0, 1, 1] = 3.0, 1.0
    assert faithfulness.mass_share(maps, frame_mask((4, 4), 1)).item() == pytest.approx(0.75)
    means = faithfulness.patch_means(maps, 2, 2)
    assert means.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_upsampling_comparison_and_faithfulness_table():
    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    names = ["a", "b"]
    adv = ama.marginal_attack(model, x, e=1, n_iter=2, names=names)
    occ = occlusion.sliding_patch(model, x, names, patch=8, stride=8)
    table, info = faithfulness.upsampling_comparison(model, x, names, adv, occ, patch=8, stride=8, steps=4, band=2)
    assert len(table) == 2 * len(faithfulness.UPSAMPLINGS)
    for col in ("deletion_auc", "insertion_auc", "occlusion_spearman", "clean_frame_mass", "adv_frame_mass",
                "clean_band_mass", "adv_band_mass"):
        assert table[col].between(-1, 1).all(), col
    assert (table.adv_band_mass >= table.adv_frame_mass).all()
    assert set(info["saliency"]) == set(faithfulness.UPSAMPLINGS) and info["adv_saliency"]["erf"].shape == (2, 32, 32)
    maps = {("cam", up): s for up, s in info["saliency"].items()}
    faith = faithfulness.faithfulness_table(model, x, names, maps, steps=4)
    assert list(faith.columns) == ["image", "model", "method", "upsampling", "deletion_auc", "insertion_auc"]
    assert len(faith) == 6


def test_occlusion_agreement_is_one_when_the_map_ranks_patches_like_occlusion():
    import pandas as pd

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 8, 8, generator=g)
    means = faithfulness.patch_means(maps, 4, 4)  # (2, 4) positions (0,0), (0,4), (4,0), (4,4)
    rows = [dict(image=n, top=t, left=l, max_abs_rel_change=float(means[b, k] ** 3))  # monotone in the mean
            for b, n in enumerate("ab") for k, (t, l) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)])]
    occ = pd.DataFrame(rows).sample(frac=1, random_state=0)  # row order must not matter
    rho = faithfulness.occlusion_agreement(occ, maps, ["a", "b"], 4, 4)
    assert rho.tolist() == pytest.approx([1.0, 1.0])
    assert faithfulness.occlusion_agreement(occ, -maps, ["a", "b"], 4, 4).tolist() == pytest.approx([-1.0, -1.0])
