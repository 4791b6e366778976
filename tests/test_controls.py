"""The controls (ama.studies.controls): location masks, claim-1 baselines, claim 2 per area, the location control,
transfer verdicts beyond CAM's relatives (EigenCAM's sign, the occlusion map), the frame's share of the map's mass."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_model

from ama import geometry
from ama.kernels import receptive_field as rf
from ama.kernels.cam import normalize_maps
from ama.params import RunParams
from ama.stats.intervals import FAILS, HOLDS, INCONCLUSIVE
from ama.studies import controls, explanations, faithfulness, location, transfer


# --- location masks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, e", [((224, 224), 1), ((224, 224), 2), ((240, 200), 3), ((32, 32), 1)])
def test_every_location_mask_has_the_frames_pixel_count(size, e):
    depths = (4, 8) if min(size) < 64 else geometry.LOCATION_DEPTHS
    masks = geometry.location_masks(size, e, seed=0, depths=depths)  # every depth fits these sizes
    n = geometry.frame_pixels(size, e)
    assert set(masks) == {"frame", "random", "strip", "square"} | {f"ring{d}" for d in depths}
    assert {k: int(m.sum()) for k, m in masks.items()} == {k: n for k in masks}
    depth = geometry.depth_map(size)
    for d in depths:  # a ring starts at its depth and is as thin as the pixel count allows
        ring = masks[f"ring{d}"]
        assert depth[ring].min() == d and ring[d, d:size[1] - d].all()
    assert not masks["strip"][n // size[1] + 1:].any()           # one side only: the top rows
    assert not (masks["square"] & geometry.frame_mask(size, 1)).any()


def test_a_ring_at_depth_0_is_the_frame_and_random_pixels_follow_the_seed():
    n = geometry.frame_pixels(224, 2)
    assert torch.equal(geometry.ring_mask(224, n, 0), geometry.frame_mask(224, 2))
    a, b = geometry.random_pixels_mask(224, n, seed=1), geometry.random_pixels_mask(224, n, seed=2)
    assert torch.equal(a, geometry.random_pixels_mask(224, n, seed=1)) and not torch.equal(a, b)
    square = geometry.centred_square_mask(224, 900)  # 30 x 30 exactly, rows and columns 97..126
    assert square[97:127, 97:127].all() and int(square.sum()) == 900
    with pytest.raises(ValueError, match="between 1 and"):
        geometry.strip_mask(8, 65)
    with pytest.raises(ValueError, match="depth must be"):
        geometry.ring_mask(32, 10, 16)


# --- claim 1: baselines -----------------------------------------------------------------------------------------
def test_a_flat_erf_and_a_centred_gaussian_by_hand():
    irf = rf.implicit_receptive_field((7, 7), (224, 224))
    support = rf.irf_support(irf)
    centre = geometry.centre_cell((7, 7))
    cy, cx = geometry.cell_centres((7, 7), (224, 224))[centre].tolist()
    ys, xs = np.arange(224)[:, None], np.arange(224)[None, :]
    g = np.exp(-0.5 * ((ys - cy) / 12.0) ** 2 - 0.5 * ((xs - cx) / 20.0) ** 2)
    g /= g.sum()
    erf = torch.zeros(1, 1, 224, 224)
    erf[0, 0] = torch.from_numpy(g).float()
    row = rf.misalignment(erf, irf, cells=[centre], grid=(7, 7)).iloc[0]
    assert row.uniform_mass_outside_irf == pytest.approx(1 - 5476 / 50176)  # 74 x 74 support of lite0's centre cell
    by_hand = 1 - g[support[centre].numpy()].sum()
    assert row.erf_mass_outside_irf == pytest.approx(by_hand, abs=1e-5)
    # the ERF is exactly a Gaussian centred on the cell: the width-only baseline equals it
    assert row.centred_gaussian_mass_outside_irf == pytest.approx(by_hand, abs=1e-4)
    assert rf.erf_spread(erf[0, 0]).tolist() == pytest.approx([12.0, 20.0], abs=1e-3)
    # the same Gaussian moved 30 px right: the baseline stays, the ERF's mass outside grows (the offset's share)
    erf[0, 0] = torch.from_numpy(np.roll(g, 30, axis=1)).float()
    moved = rf.misalignment(erf, irf, cells=[centre], grid=(7, 7)).iloc[0]
    assert moved.centred_gaussian_mass_outside_irf == pytest.approx(by_hand, abs=1e-4)
    assert moved.erf_mass_outside_irf > by_hand + 0.2


def _mis_rows(values, baseline, uniform=0.89):
    return pd.DataFrame(dict(model="m", image=[f"i{k}" for k in range(len(values))], cell_kind="centre",
                             erf_mass_outside_irf=values, uniform_mass_outside_irf=uniform,
                             centred_gaussian_mass_outside_irf=baseline, upsampling="bilinear"))


def test_misalignment_baselines_and_the_verdict_per_upsampling():
    rows = pd.concat([_mis_rows([0.8, 0.82, 0.84, 0.86], [0.7, 0.7, 0.7, 0.7]),
                      _mis_rows([0.40, 0.42, 0.44, 0.46], [0.5] * 4).assign(upsampling="bicubic")])
    est = controls.misalignment_baselines(rows[rows.upsampling == "bilinear"])
    assert est["erf"].value == pytest.approx(0.83) and est["uniform"].value == pytest.approx(0.89)
    assert est["offset"].value == pytest.approx(0.13) and est["offset"].verdict(0.0) == HOLDS
    v = controls.misalignment_by_upsampling(rows).set_index("upsampling")  # judged against the aligned null
    assert v.verdict.to_dict() == {"bilinear": HOLDS, "bicubic": FAILS}
    assert v.loc["bicubic", "erf_mass_outside_irf"] == pytest.approx(0.43)
    assert v.loc["bicubic", "null_gap"] == pytest.approx(-0.07) and v.loc["bilinear", "null_gap"] == pytest.approx(0.13)


# --- claim 2 per area ----------------------------------------------------------------------------------------------
def test_per_area_influence_by_hand():
    keys = dict(model="m", image=["a", "a", "b"], fill="mean", cell=[24, 0, 24], cell_kind=["centre", "corner", "centre"])
    keep = pd.DataFrame(dict(keys, rel_change=[-0.2, 0.1, 0.3], occluded_share=[0.9, 0.97, 0.9]))
    occlude = pd.DataFrame(dict(keys, rel_change=[0.3, -0.03, 0.1], occluded_share=[0.1, 0.03, 0.1]))
    rows = controls.per_area_influence(keep, occlude)
    assert rows.irf_to_outside.tolist() == pytest.approx([(0.3 / 0.1) / (0.2 / 0.9), (0.03 / 0.03) / (0.1 / 0.97),
                                                          (0.1 / 0.1) / (0.3 / 0.9)])
    summary = controls.per_area_summary(rows).set_index("cell_kind")
    assert summary.loc["centre", "irf_to_outside"] == pytest.approx(np.median([13.5, 3.0]))
    assert summary.loc["corner", "n_images"] == 1 and summary.loc["centre", "irf_share"] == pytest.approx(0.1)


# --- claim 3: is the margin special? ----------------------------------------------------------------------------
def _locations(fooled: dict, n=12):
    return pd.DataFrame([dict(image=f"i{k}", model="m", e=1, location=loc, mask_pixels=892, changed_pixels=892,
                              fooled=k < f, cam_cosine=0.9, adv_conf=0.5)
                         for loc, f in fooled.items() for k in range(n)])


def test_margin_special_can_hold_fail_or_be_inconclusive():
    special = location.location_summary(_locations({"frame": 12, "ring8": 0, "random": 1}))
    assert special.set_index("location").loc["ring8", "frame_minus_fooled"] == pytest.approx(1.0)
    assert special.set_index("location").loc["frame", "fooling_rate"] == pytest.approx(1.0)
    assert location.margin_special(special) == HOLDS
    assert location.margin_special(location.location_summary(_locations({"frame": 2, "random": 12}))) == FAILS
    assert location.margin_special(location.location_summary(_locations({"frame": 6, "random": 5}))) == INCONCLUSIVE


def test_location_control_attacks_every_mask_with_the_frames_pixel_count():
    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    p = RunParams(e=(1,), n_iter=3)
    table = location.location_control(model, x, ["a", "b"], p, labels=torch.tensor([3, -1]),
                                      optimizers=location.OPTIMIZERS)
    # at 32 px only the ring 8 px deep fits the frame's 124 pixels inside it; each placement with both attacks
    assert set(table.location) == {"frame", "ring8", "random", "strip", "square"}
    assert len(table) == 2 * 5 * 2 and set(table.mask_pixels) == {geometry.frame_pixels(32, 1)}
    assert set(table.optimizer) == {"sign", "apgd"}
    summary = location.location_summary(table)
    assert len(summary) == 2 * 5 and set(summary.optimizer) == {"sign", "apgd"}
    table = table[table.optimizer == "sign"].reset_index(drop=True)
    assert (table.changed_pixels <= table.mask_pixels).all() and (table.changed_pixels > 0).all()
    a, b = table[table.image == "a"], table[table.image == "b"]
    assert (a.fooled == (a.adv_class != 3)).all()                  # against the true label where known
    assert (b.fooled == (b.adv_class != b.clean_class)).all()      # else against the clean prediction
    # the frame's rows are the run's own frame attack when it is given (same seed: the same result)
    from ama.attack.marginal import marginal_attack
    frame = marginal_attack(model, x, e=1, n_iter=3, names=["a", "b"])
    reused = location.location_control(model, x, ["a", "b"], p, frame_result=frame, labels=torch.tensor([3, -1]))
    cols = ["image", "location", "changed_pixels", "adv_class", "cam_cosine"]
    pd.testing.assert_frame_equal(reused[cols], table[cols], check_exact=False, atol=1e-5)


# --- transfer: EigenCAM's sign, the occlusion map, the verdicts ------------------------------------------------------
def test_eigen_projection_matches_the_library_and_its_sign_is_fixed():
    model = make_tiny_model()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.features(x)
    unsigned, signed = explanations.eigen_projection(features, signed=False), explanations.eigen_projection(features)
    library = explanations.library_cam(model, x, torch.zeros(4, dtype=torch.long), "eigencam")
    assert torch.allclose(normalize_maps(torch.relu(unsigned)), library, atol=1e-5)  # pytorch-grad-cam's EigenCAM
    total = features.sum(1).flatten(1)
    for b in range(4):
        assert torch.allclose(signed[b], unsigned[b]) or torch.allclose(signed[b], -unsigned[b])
        assert np.corrcoef(signed[b].flatten(), total[b])[0, 1] > 0
    flipped = explanations.eigen_projection(-features)  # the activations' sign flips the SVD's; the fix follows the sum
    assert np.corrcoef(flipped[0].flatten(), -total[0])[0, 1] > 0


def test_occlusion_map_by_hand():
    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 5])
    maps = explanations.kit_map(model, x, target, "occlusion")   # 8 px patches at stride 8 would be 4 x 4; default 32
    assert maps.shape == (2, 1, 1)
    from ama.kernels.occlusion import fill_images, occlusion_map
    m = occlusion_map(model, x, target, patch=8, stride=8)
    with torch.no_grad():
        filled = x[1].clone()
        filled[:, 8:16, 16:24] = fill_images(x[1:2], "mean", model)[0][:, 8:16, 16:24]
        p = torch.softmax(model(torch.stack([x[1], filled])), 1)[:, 5]
        drops = []
        for t in range(0, 32, 8):
            for l in range(0, 32, 8):
                c = x[1].clone()
                c[:, t:t + 8, l:l + 8] = fill_images(x[1:2], "mean", model)[0][:, t:t + 8, l:l + 8]
                drops.append(p[0] - torch.softmax(model(c[None]), 1)[0, 5])
    drops = torch.relu(torch.stack(drops))
    expected = (drops - drops.min()) / (drops.max() - drops.min() + 1e-8)
    assert m.shape == (2, 4, 4) and m[1].flatten().tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert m[1, 1, 2].item() == pytest.approx(expected[6].item(), abs=1e-5)


def test_transfer_verdicts_per_method():
    rows = pd.DataFrame(dict(image=[f"i{k}" for k in range(6)] * 2, model="m", optimizer="sign", e=1,
                             method=["gradcam++"] * 6 + ["occlusion"] * 6,
                             cam_cosine=[0.8] * 6 + [0.95, 0.99, 0.9, 1.0, 0.97, 0.93],
                             random_cam_cosine=[0.99] * 6 + [0.96, 0.95, 0.94, 0.97, 0.98, 0.96]))
    v = transfer.transfer_verdicts(rows).set_index("method")
    assert v.loc["gradcam++", "gap"] == pytest.approx(0.19) and v.loc["gradcam++", "verdict"] == HOLDS
    assert bool(v.loc["gradcam++", "relative_of_cam"]) and not bool(v.loc["occlusion", "relative_of_cam"])
    assert v.loc["occlusion", "verdict"] == INCONCLUSIVE


def test_frame_mass_ratio_is_one_for_a_map_as_heavy_as_its_area():
    share = geometry.frame_pixels(224, 1) / 224 ** 2
    comp = pd.DataFrame(dict(model="m", image=list("abcd"), upsampling="erf", e=1, frame_share=share,
                             clean_frame_mass=[share, 2 * share, share, share],
                             adv_frame_mass=[share / 2, share, share / 2, share / 2]))
    ratios = faithfulness.frame_mass_ratio(comp)
    assert ratios.clean_ratio.tolist() == pytest.approx([1.0, 2.0, 1.0, 1.0])
    assert ratios.change.tolist() == pytest.approx([-0.5, -1, -0.5, -0.5])
    summary = faithfulness.frame_mass_summary(ratios).iloc[0]
    assert summary.change == pytest.approx(-0.625) and summary.verdict == FAILS  # the t-test: t = -5, p = 0.008


# --- in the FAST run of make reproduce (two models) -----------------------------------------------------------------
@pytest.mark.slow
def test_the_controls_in_the_fast_run(fast_run):
    tables, figures = fast_run.dir / "tables", fast_run.dir / "figures"
    for stem in ("misalignment_baselines", "attack_location"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000, stem
    location = pd.read_csv(tables / "attack_location.csv")
    pixels = location.groupby("model").mask_pixels.unique().map(list).to_dict()
    assert pixels == {"lite0": [892], "lite1": [956]}  # the 1-pixel frame of 224 and 240 px
    # the frame's rows are notebook 03's reference attack at e = 1 (8-bit), read back from its PNGs
    metrics = pd.read_csv(tables / "attack_metrics.csv")
    ref = metrics[(metrics.setting == "attack") & (metrics.e == 1) & metrics.quantized.astype(bool)
                  & (metrics["mode"] == "flip") & (metrics.n_iter == metrics.n_iter.max())]
    frame = location[(location.location == "frame") & (location.optimizer == "sign")].merge(ref, on=["model", "image"], suffixes=("", "_03"))
    assert len(frame) == len(location[(location.location == "frame") & (location.optimizer == "sign")]) > 0
    assert (frame.fooled == frame.fooled_03).all()
    assert frame.cam_cosine.to_numpy() == pytest.approx(frame.cam_cosine_03.to_numpy(), abs=1e-4)
    verdicts = pd.read_csv(tables / "transfer_verdicts.csv")
    assert {"eigencam-signed", "occlusion"} <= set(verdicts.method)
    assert set(verdicts[verdicts.method == "occlusion"].e) == {1}  # the occlusion map at the smallest e only
    base = pd.read_csv(tables / "misalignment_baselines.csv").set_index(["model", "measure"])
    assert base.loc[("lite0", "uniform"), "value"] == pytest.approx(1 - 5476 / 50176)
    per_area = pd.read_csv(tables / "occlusion_per_area.csv")
    assert set(per_area.cell_kind) == {"centre", "edge", "corner"} and (per_area.irf_share < 0.2).all()
    report = (fast_run.dir / "REPORT.md").read_text()
    assert "Is the margin special?" in report and "Per pixel the IRF still matters more" in report
    assert "for a flat ERF" in report and "bicubic-corners" in report
