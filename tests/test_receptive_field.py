"""Receptive fields: exact IRFs, ERFs against a slow per-cell reference, theoretical RF, misalignment."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import ama
from ama import geometry
from ama.kernels import receptive_field as rf
from ama.kernels.cam_model import wrap_model


def test_irf_is_the_upsampling_of_one_hot_maps():
    irf = rf.implicit_receptive_field((7, 7), (224, 224))
    assert irf.shape == (49, 224, 224)
    maps = torch.rand(2, 7, 7)
    # S = sum_ij M(i, j) IRF_ij: the IRFs are the exact derivative dS/dM
    assert torch.allclose(torch.einsum("bk,khw->bhw", maps.flatten(1), irf), ama.upsample(maps, 224), atol=1e-5)


@pytest.mark.parametrize("mode, corners", [("bilinear", True), ("bilinear", False), ("nearest", None), ("bicubic", True)])
def test_irfs_sum_to_partition_of_unity(mode, corners):
    irf = rf.implicit_receptive_field((7, 7), (224, 224), mode, corners)
    assert torch.allclose(irf.sum(0), torch.ones(224, 224), atol=1e-5)


def test_irf_support_widths():
    """Bilinear with corners aligned: a tent 2 (H - 1) / (h - 1) px wide about the cell, cut at the image border."""
    irf = rf.implicit_receptive_field((7, 7), (224, 224))
    support = rf.irf_support(irf)
    spacing = 223 / 6  # 37.17 px between cell positions
    centre_width = int(support[24].any(0).sum())  # the centre cell (3, 3)
    assert abs(centre_width - 2 * spacing) <= 2
    corner = support[0]
    assert corner[0, 0] and int(corner.any(0).sum()) == int(corner.any(1).sum())
    assert abs(int(corner.any(0).sum()) - spacing) <= 1
    assert torch.equal(support[24].any(0), support[24].any(1))  # square, symmetric about the centre
    nearest = rf.irf_support(rf.implicit_receptive_field((7, 7), (224, 224), "nearest", None))
    assert int(nearest[24].sum()) == 32 * 32  # nearest: exactly the cell's 32 x 32 block


def test_cell_kinds_and_centres():
    kinds = geometry.cell_kinds((7, 7))
    assert kinds.count("corner") == 4 and kinds.count("edge") == 20 and kinds.count("centre") == 1
    assert kinds[24] == "centre" and kinds[0] == "corner" and kinds[3] == "edge"
    c = geometry.cell_centres((7, 7), (224, 224))
    assert torch.allclose(c[0], torch.tensor([0.0, 0.0])) and torch.allclose(c[48], torch.tensor([223.0, 223.0]))
    c_free = geometry.cell_centres((7, 7), (224, 224), align_corners=False)
    assert torch.allclose(c_free[0], torch.tensor([15.5, 15.5]))


def _slow_erf(model, x, cell):
    """Reference: one backward pass per cell."""
    target = model(x).argmax(1)
    out = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        raw = ama.raw_cam(model, xb, target[b:b + 1])
        (g,) = torch.autograd.grad(raw.flatten()[cell], xb)
        m = g.abs().sum(1)[0]
        out.append(m / m.sum() if m.sum() > 0 else m)
    return torch.stack(out)


def test_erf_matches_per_cell_reference(tiny_model, images32):
    erf = rf.effective_receptive_field(tiny_model, images32)
    assert erf.shape == (4, 64, 32, 32)
    for cell in (0, 9, 27, 63):
        assert torch.allclose(erf[:, cell], _slow_erf(tiny_model, images32, cell), atol=1e-5)
    sums = erf.sum((-2, -1))
    assert torch.allclose(sums[sums > 0], torch.ones_like(sums[sums > 0]), atol=1e-5)


def test_erf_chunking_and_batching_give_identical_maps(resnet18_64):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    whole = rf.effective_receptive_field(resnet18_64, x)
    chunked = rf.effective_receptive_field(resnet18_64, x, batch_size=3)
    alone = rf.effective_receptive_field(resnet18_64, x[1:])
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(whole[1], alone[0], atol=1e-6)
    assert all(p.grad is None for p in resnet18_64.parameters())


def test_erf_inside_no_grad_and_dead_cells():
    """A cell no pixel moves (zero weights) gives an all-zero map, not NaN; works inside torch.no_grad()."""
    backbone = nn.Sequential(nn.Conv2d(3, 2, 4, stride=4), nn.ReLU())
    with torch.no_grad():
        backbone[0].weight.fill_(0.1)
        backbone[0].bias.fill_(-1e3)  # every cell dead
    model = wrap_model(backbone, nn.Linear(2, 3), input_size=16)
    with torch.no_grad():
        erf = rf.effective_receptive_field(model, torch.rand(1, 3, 16, 16))
    assert not erf.isnan().any() and erf.abs().sum() == 0


def test_erf_bad_arguments(tiny_model, images32):
    with pytest.raises(ValueError, match="cells must be indices in \\[0, 63\\]"):
        rf.effective_receptive_field(tiny_model, images32, cells=[64])
    with pytest.raises(ValueError, match="batch_size must be positive"):
        rf.effective_receptive_field(tiny_model, images32, batch_size=-1)


def gradient_receptive_field(net: nn.Module, size: int = 512) -> int:
    """The theoretical field measured, not computed: the extent of the input pixels that reach the centre cell of a
    copy of ``net`` whose convolutions all average with positive weights and whose max-poolings average (so every path
    counts), in float64. ``size`` must exceed the field."""
    probe = copy.deepcopy(net).double().eval()
    for parent in list(probe.modules()):  # max-pooling passes gradient to one pixel a window: average instead
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                         ceil_mode=child.ceil_mode))
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
                m.running_var.fill_(1.0)
    # a small positive input keeps every activation in the linear part of ReLU/ReLU6
    x = torch.full((1, 3, size, size), 1e-3, dtype=torch.float64, requires_grad=True)
    y = probe(x)
    (g,) = torch.autograd.grad(y[0, :, y.shape[-2] // 2, y.shape[-1] // 2].sum(), x)
    cols = torch.nonzero(g[0].abs().sum(0).amax(0) > 0).flatten()
    assert 0 < cols[0] and cols[-1] < size - 1, "the field reaches the probe's border: use a larger size"
    return int(cols[-1] - cols[0] + 1)


def test_theoretical_rf_matches_a_gradient_probe(tiny_model, resnet18_64):
    assert rf.theoretical_receptive_field(tiny_model) == 7  # 3x3 s2 then 3x3 s2: 1 + 2 + 2 * 2
    assert gradient_receptive_field(tiny_model.backbone, 64) == 7
    assert rf.theoretical_receptive_field(resnet18_64) == gradient_receptive_field(resnet18_64.backbone, 512) == 435


def test_resnet50_theoretical_rf():
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    backbone = nn.Sequential(*[m for k, m in net.named_children() if k not in ("avgpool", "fc")])
    assert rf.theoretical_receptive_field(backbone) == 427  # larger than the 224 px image


def _patch_model(k=8, size=32):
    """Each cell sees exactly its own k x k patch: a strided conv with kernel = stride."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, k, stride=k))
    return wrap_model(backbone, nn.Linear(4, 2), input_size=size)


def test_misalignment_is_zero_when_each_cell_sees_its_own_patch():
    model = _patch_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    erf = rf.effective_receptive_field(model, x)
    irf = rf.implicit_receptive_field((4, 4), (32, 32), "nearest", None)
    table = rf.misalignment(erf, irf, e=1, align_corners=False)
    assert len(table) == 2 * 16
    assert table.erf_mass_outside_irf.max() < 1e-6
    assert table.top_q_iou.min() > 0.999
    assert table.centroid_distance_px.max() < 3  # the centroid of |W| over the patch, near the block's centre
    corners = table[table.cell_kind == "corner"]
    inner = table[table.cell_kind == "interior"]
    assert (corners.margin_mass_ratio > 1).all() and (inner.margin_mass_ratio == 0).all()
    # against bilinear upsampling with aligned corners the same ERFs are misaligned
    shifted = rf.misalignment(erf, rf.implicit_receptive_field((4, 4), (32, 32)), e=1)
    assert shifted.centroid_distance_px.mean() > 1


def test_misalignment_known_numbers():
    """One synthetic ERF: half its mass on the IRF, half in the top-left pixel (in the margin)."""
    irf = rf.implicit_receptive_field((2, 2), (8, 8), "nearest", None)  # 4 blocks of 4 x 4
    erf = torch.zeros(1, 4, 8, 8)
    erf[0, 3, 6, 6] = 0.5  # cell 3's block is rows/cols 4..7
    erf[0, 3, 0, 0] = 0.5
    row = rf.misalignment(erf, irf, e=1, align_corners=False, cells=None).iloc[3]
    assert row.erf_mass_outside_irf == pytest.approx(0.5)
    assert row.margin_mass_ratio == pytest.approx(0.5 / (28 / 64))  # half the mass in the margin (28 of 64 px)
    assert row.centroid_distance_px == pytest.approx(((3 - 5.5) ** 2 * 2) ** 0.5)  # centroid (3, 3), centre (5.5, 5.5)
    assert row.irf_support_px == 16
    empty = rf.misalignment(erf, irf, e=1, align_corners=False).iloc[0]
    assert empty.erf_mass_outside_irf != empty.erf_mass_outside_irf  # NaN for a cell with no ERF mass


def test_misalignment_shape_errors():
    irf = rf.implicit_receptive_field((2, 2), (8, 8))
    with pytest.raises(ValueError, match="erf maps are 9 x 9"):
        rf.misalignment(torch.zeros(4, 9, 9), irf)
    with pytest.raises(ValueError, match="3 cells were named"):
        rf.misalignment(torch.zeros(4, 8, 8), irf, cells=[0, 1, 2])
    with pytest.raises(ValueError, match=r"e \(the frame width in pixels\) must be a positive integer below half .*got 4"):
        geometry.frame_mask((8, 8), 4)


@pytest.mark.slow
def test_lite0_centre_cell_is_misaligned(lite0, samples):
    table = rf.misalignment_table(lite0, samples.images[:1], samples.names[:1], e=(1, 2))
    assert len(table) == 49 and set(table.columns) >= {"margin_mass_ratio_e1", "margin_mass_ratio_e2", "model"}
    centre = table[table.cell_kind == "centre"].iloc[0]
    assert centre.erf_mass_outside_irf > 0.5  # SCIENCE.md: about 0.8 on a pretrained model
    assert rf.theoretical_receptive_field(lite0) > 224


def test_erf_centroid_extent_and_irf_width_known_numbers():
    m = torch.zeros(2, 10, 10)
    m[0, 2, 3] = 0.25
    m[0, 6, 7] = 0.75                       # centroid (0.25*2 + 0.75*6, 0.25*3 + 0.75*7) = (5, 6)
    assert rf.erf_centroid(m)[0].tolist() == pytest.approx([5.0, 6.0])
    assert torch.isnan(rf.erf_centroid(m)[1]).all()  # an all-zero map has no centroid
    e = torch.zeros(1, 10, 10)
    e[0, 4:6, 4:6] = 0.2                    # 80% in the central 2 x 2 square around (5, 5)
    e[0, 0, 0] = 0.2                        # 20% in the corner
    assert rf.erf_extent(e, 0.8).tolist() == [2.0]
    assert rf.erf_extent(e, 0.9).tolist() == [10.0]  # only the whole image holds 90%
    # bilinear with corners aligned: a 7 x 7 map on 224 px, cells 223/6 = 37.17 px apart: the centre tent is 74 px wide
    assert rf.irf_width((7, 7), (224, 224)) == 74
    assert rf.irf_width((2, 2), (8, 8), cell=0) == 7  # corner cell of a 2 x 2 map reaches all but the last column


def test_the_aligned_nulls_centroid_is_pulled_inwards_at_the_border():
    """A Gaussian centred on the border and cut there is a half-Gaussian: its mean lies sd * sqrt(2 / pi) inside
    (less half a pixel: the border row counts whole); one centred inside the image keeps its centre."""
    import math

    from ama.kernels.receptive_field import gaussian_centroid

    centres = torch.tensor([[0.0, 111.5], [111.5, 111.5]])
    spread = torch.tensor([[20.0, 20.0], [20.0, 20.0]])
    c = gaussian_centroid((224, 224), centres, spread)
    assert c[0, 0].item() == pytest.approx(20 * math.sqrt(2 / math.pi), abs=0.6) and c[0, 1].item() == pytest.approx(111.5)
    assert c[1].tolist() == pytest.approx([111.5, 111.5])


def test_claim_1_is_judged_against_the_aligned_null_for_every_cell_kind():
    import pandas as pd

    from ama.studies.claims import aligned_null_gaps, misalignment_outcome

    rows = pd.DataFrame(dict(model="m", image=["a", "a", "b", "b"] * 2, cell_kind=["centre", "corner"] * 4,
                             erf_mass_outside_irf=[0.8, 0.9, 0.82, 0.93, 0.8, 0.9, 0.82, 0.93],
                             centred_gaussian_mass_outside_irf=[0.7, 0.8, 0.71, 0.85, 0.7, 0.8, 0.71, 0.85]))
    rows = pd.concat([rows.assign(image=rows.image + s) for s in "123"])  # 6 images: the t-test can decide
    gaps = aligned_null_gaps(rows)
    assert list(gaps) == ["corner", "centre"]  # ama.geometry.CELL_KINDS order
    assert gaps["centre"].value == pytest.approx((0.1 + 0.11) / 2) and gaps["corner"].value == pytest.approx(0.09)
    assert misalignment_outcome(gaps) == "holds"
    flat = rows.assign(centred_gaussian_mass_outside_irf=rows.erf_mass_outside_irf + [0.0, 0.01] * 12)
    assert misalignment_outcome(aligned_null_gaps(flat)) in ("inconclusive", "does not hold")  # corner: not above
