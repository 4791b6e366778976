"""Occlusion experiments: fills, masks, one row per unit, and changes that can be checked by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ama import criteria
from ama.geometry import frame_mask
from ama.kernels import occlusion
from ama.kernels.cam_model import wrap_model


@pytest.mark.parametrize("fill", occlusion.FILLS)
def test_fills_keep_the_valid_range(fill, images32, tiny_model):
    f = occlusion.fill_images(images32, fill, tiny_model, seed=0)
    assert f.shape == images32.shape and f.min() >= 0 and f.max() <= 1
    if fill == "mean":
        assert torch.allclose(tiny_model.normalize(f), torch.zeros_like(f), atol=1e-6)  # zero after normalisation
    if fill == "noise":
        assert torch.equal(f, occlusion.fill_images(images32, fill, tiny_model, seed=0))
        assert not torch.equal(f, occlusion.fill_images(images32, fill, tiny_model, seed=1))
    if fill == "blur":
        assert f.std() < images32.std()


def test_unknown_fill(tiny_model, images32):
    with pytest.raises(ValueError, match="unknown fill 'grey'"):
        occlusion.keep_irf(tiny_model, images32, fills=["grey"])


def test_frame_mask_touches_only_the_border():
    m = frame_mask((32, 32), 2)
    assert m[:2].all() and m[-2:].all() and m[:, :2].all() and m[:, -2:].all()
    assert not m[2:-2, 2:-2].any() and int(m.sum()) == 32 * 32 - 28 * 28


def test_irf_experiments_one_row_per_unit(tiny_model, images32):
    keep = occlusion.keep_irf(tiny_model, images32, ["a", "b", "c", "d"], fills=["mean", "black"], cells=[0, 27])
    assert len(keep) == 4 * 2 * 2
    assert set(keep.image) == {"a", "b", "c", "d"} and set(keep.experiment) == {"keep_irf"}
    assert not keep.duplicated(["image", "fill", "cell"]).any()
    occl = occlusion.occlude_irf(tiny_model, images32, fills=["noise"])
    assert len(occl) == 4 * 64
    # the two experiments fill complementary pixel sets
    k = occlusion.keep_irf(tiny_model, images32, fills=["noise"])
    assert ((k.occluded_share.values + occl.occluded_share.values) == 1).all()


def test_keep_irf_changes_nothing_when_cells_see_only_their_patch():
    """A strided conv whose cells see exactly their own block: keeping the (nearest) IRF keeps the cell's value,
    and occluding it changes no other cell."""
    torch.manual_seed(0)
    model = wrap_model(nn.Sequential(nn.Conv2d(3, 4, 8, stride=8)), nn.Linear(4, 3), input_size=32)
    x = torch.rand(2, 3, 32, 32)
    keep = occlusion.keep_irf(model, x, fills=["black", "noise"], mode="nearest", align_corners=None)
    assert keep.rel_change.abs().max() < 1e-5
    occl = occlusion.occlude_irf(model, x, fills=["black"], mode="nearest", align_corners=None)
    assert occl.others_mean_abs_rel_change.abs().max() < 1e-5 and occl.rel_change.abs().max() > 1e-3


def test_rel_change_by_hand(tiny_model, images32):
    from ama import raw_cam
    from ama.kernels.receptive_field import implicit_receptive_field, irf_support

    row = occlusion.keep_irf(tiny_model, images32[:1], fills=["black"], cells=[27]).iloc[0]
    support = irf_support(implicit_receptive_field((8, 8), (32, 32)))[27]
    R = raw_cam(tiny_model, images32[:1])
    occluded = torch.where(support, images32[:1], torch.zeros(1))
    R_occ = raw_cam(tiny_model, occluded, R.new_tensor([int(tiny_model(images32[:1]).argmax())]).long())
    expected = (R_occ.flatten()[27] - R.flatten()[27]) / (R.max() - R.min())
    assert row.rel_change == pytest.approx(expected.item(), abs=1e-5)


def test_margin_experiment(tiny_model, images32):
    rows, cells = occlusion.margin_experiment(tiny_model, images32, e=[1, 2], fills=["mean", "blur"])
    assert len(rows) == 4 * 2 * 2 and len(cells) == 4 * 2 * 2 * 64
    assert rows.cam_cosine.between(-1, 1 + 1e-6).all()
    e1 = cells[(cells.e == 1)]
    # with 8 x 8 cells on 32 px and aligned corners, the outer ring of cells' IRFs touch a 1-px margin
    assert e1.groupby("cell").irf_touches_margin.first().sum() == 28
    assert (rows[rows.e == 1].n_interior_cells == 64 - 28).all()


def test_sliding_patch(tiny_model, images32):
    rows = occlusion.sliding_patch(tiny_model, images32[:2], patch=8, stride=8)
    assert len(rows) == 2 * 16 and list(rows.top[:5]) == [0, 0, 0, 0, 8] and list(rows.left[:5]) == [0, 8, 16, 24, 0]
    from ama import raw_cam  # one position by hand: image 1, the patch at (8, 16) filled with the mean colour
    x = images32[1:2]
    clean = raw_cam(tiny_model, x)
    occluded = x.clone()
    occluded[:, :, 8:16, 16:24] = tiny_model.mean.view(1, 3, 1, 1)
    change = (raw_cam(tiny_model, occluded, tiny_model(x).argmax(1)) - clean).abs()
    rel = change / (clean.max() - clean.min())
    row = rows[(rows.image == "1") & (rows.top == 8) & (rows.left == 16)].iloc[0]
    assert row.n_cells_moved == int((rel > criteria.CELL_MOVED).sum())
    assert row.max_abs_rel_change == pytest.approx(rel.max().item(), rel=1e-5)
    with pytest.raises(ValueError, match="patch must be in 1..32"):
        occlusion.sliding_patch(tiny_model, images32, patch=40)


def test_chunking_gives_identical_rows(tiny_model, images32):
    a = occlusion.keep_irf(tiny_model, images32[:2], fills=["mean"], batch_size=64)
    b = occlusion.keep_irf(tiny_model, images32[:2], fills=["mean"], batch_size=5)
    assert (a.rel_change - b.rel_change).abs().max() < 1e-6
