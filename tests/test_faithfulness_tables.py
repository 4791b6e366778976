"""ama.studies.faithfulness: mass shares, patch means, the upsampling comparison and the faithfulness table (tiny model)."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

import ama
from ama.geometry import frame_mask
from ama.kernels import occlusion
from ama.studies import beyond, faithfulness


def test_mass_share_and_patch_means_by_hand():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0], maps[0, 1, 1] = 3.0, 1.0
    assert faithfulness.mass_share(maps, frame_mask((4, 4), 1)).item() == pytest.approx(0.75)
    means = faithfulness.patch_means(maps, 2, 2)
    assert means.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_upsampling_comparison_and_faithfulness_table():
    """Each number of the comparison recomputed by hand: the ERF projection cell by cell, the frame's mass share, the
    deletion AUC of the bilinear map; the faithfulness table's AUCs."""
    from ama.kernels import receptive_field as rf
    from ama.kernels.metrics import deletion_auc

    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    names = ["a", "b"]
    adv = ama.marginal_attack(model, x, e=1, n_iter=2, names=names)
    occ = occlusion.sliding_patch(model, x, names, patch=8, stride=8)
    table, info = faithfulness.upsampling_comparison(model, x, names, adv, occ, patch=8, stride=8, steps=4, band=2)
    assert len(table) == 2 * len(faithfulness.SALIENCY_UPSAMPLINGS)
    out = ama.compute_cam(model, x)
    erf = rf.effective_receptive_field(model, x)
    projection = sum(out.cam[:, k // 8, k % 8, None, None] * erf[:, k] for k in range(64))
    torch.testing.assert_close(info["saliency"]["erf"], ama.normalize_maps(projection), atol=1e-5, rtol=1e-4)
    bilinear = ama.normalize_maps(ama.upsample(out.cam, (32, 32)))
    torch.testing.assert_close(info["saliency"]["bilinear"], bilinear)
    rows = table.set_index(["upsampling", "image"])
    frame = frame_mask((32, 32), 1)
    share = (bilinear * frame).sum((1, 2)) / bilinear.sum((1, 2))
    assert rows.loc["bilinear"].clean_frame_mass.tolist() == pytest.approx(share.tolist(), abs=1e-6)
    auc = deletion_auc(model, x, bilinear, out.target, steps=4)
    assert rows.loc["bilinear"].deletion_auc.tolist() == pytest.approx(auc.tolist(), abs=1e-6)
    assert (table.adv_band_mass >= table.adv_frame_mass).all()  # the band holds the frame
    maps = {("cam", up): s for up, s in info["saliency"].items()}
    faith = faithfulness.faithfulness_table(model, x, names, maps, steps=4)
    assert list(faith.columns) == ["image", "model", "method", "upsampling", "deletion_auc", "insertion_auc"]
    assert len(faith) == 6
    assert faith[faith.upsampling == "bilinear"].deletion_auc.tolist() == pytest.approx(auc.tolist(), abs=1e-6)


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


@pytest.mark.parametrize("reuse", [True, False])
def test_under_attack_figure_pairs_each_model_with_its_own_image_and_numbers(reuse):
    """Two models of different input sizes: each row shows that model's attacked image, its maps and its numbers
    (the run's extras reused, or, for a sharded run, computed again for the first image)."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from ama.figures import study_charts
    from ama.params import RunParams

    params = RunParams(models=("a", "b"), e=(1,), n_iter=2, auc_steps=2, studies="faithfulness")
    loaded, extras, comparisons = {}, {}, {}
    for name, size in (("a", 32), ("b", 40)):
        model = make_tiny_model(seed=size, size=size)
        model.name = name
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        loaded[name] = (model, SimpleNamespace(images=x, names=[f"{name}0", f"{name}1"]))
        tables, extras[name] = beyond.beyond(model, x, [f"{name}0", f"{name}1"], params)
        comparisons[name] = tables["upsampling_comparison"]
    panels = faithfulness.upsampling_panels(loaded, extras if reuse else None, params, None)
    fig = study_charts.upsampling_under_attack_figure(panels)
    shown = [(name, size, j) for name, size in (("a", 32), ("b", 40)) for j in range(2)]  # a row per model and image
    assert len(fig.axes) == 4 * len(shown) + 1  # and one colourbar
    for k, (name, size, j) in enumerate(shown):
        row = fig.axes[4 * k:4 * k + 4]
        assert row[0].get_title().startswith(f"{name}, {name}{j}\nattacked, e = 1")
        assert row[0].get_images()[0].get_array().shape[:2] == (size, size)
        for ax in row[1:]:
            shown_map = ax.get_images()[0]
            assert shown_map.get_array().shape == (size, size) and shown_map.get_cmap().name == "viridis"
            assert shown_map.get_array().min() == pytest.approx(0) and shown_map.get_array().max() == pytest.approx(1)
        if reuse:  # the titles give this model's own rows of the comparison
            rows = comparisons[name][comparisons[name].image == f"{name}{j}"].set_index("upsampling")
            for ax, up in zip(row[1:], faithfulness.SALIENCY_UPSAMPLINGS):
                ratio = rows.loc[up, "adv_frame_mass"] / rows.loc[up, "frame_share"]
                assert ax.get_title().endswith(f"frame mass {ratio:.2f} x its area share") and ax.get_title().startswith(up)
    one = {name: (attack, {up: m[:1] for up, m in maps.items()}, {up: r[:1] for up, r in ratio.items()})
           for name, (attack, maps, ratio) in panels.items()}
    assert study_charts.upsampling_under_attack_figure(one) is None  # one image per model: not drawn
    plt.close(fig)
