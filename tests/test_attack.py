"""The adversarial marginal attack on a tiny seeded model: the frame contract, the variants, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ama
from ama.attack.marginal import evaluate_images, quantize, random_frame
from ama.attack.result import AttackParams
from ama.geometry import corner_mask, frame_mask, side_mask
from ama.store.tables import save_png


@pytest.fixture
def x8(images32):
    """The seeded images on the 8-bit grid (as loaded from a file)."""
    return quantize(images32)


def test_frame_mask_counts():
    m = frame_mask(224, 1)
    assert int(m.sum()) == 892  # the paper's count: 892 of 50,176 pixels
    assert int(frame_mask((32, 40), 2).sum()) == 32 * 40 - 28 * 36
    assert not m[1:-1, 1:-1].any()


def test_off_mask_pixels_bit_identical_range_and_png(tiny_model, x8, tmp_path):
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=5)
    off = ~frame_mask(32, 2)
    for adv in (r.adv, r.adv_q):
        assert torch.equal(adv[:, :, off], x8[:, :, off])
        assert adv.min() >= 0 and adv.max() <= 1
    assert (r.adv[:, :, ~off] != x8[:, :, ~off]).float().mean() > 0.9  # the frame did change
    assert torch.equal(r.adv_q, quantize(r.adv_q))  # on the 8-bit grid
    save_png(r.adv_q[0], tmp_path / "adv.png")
    back = torch.from_numpy(np.array(Image.open(tmp_path / "adv.png"))).permute(2, 0, 1).float() / 255
    assert torch.equal(back, r.adv_q[0])
    assert torch.equal(back[:, off], x8[0][:, off])


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_memory_layout_of_the_input_does_not_matter(tiny_model, x8, layout, monkeypatch):
    monkeypatch.setattr("ama.attack.marginal.CPU_LAYOUT", layout)
    r = ama.marginal_attack(tiny_model, x8, e=1, n_iter=4)
    off = ~frame_mask(32, 1)
    assert torch.equal(r.adv[:, :, off], x8[:, :, off]) and (r.adv[:, :, ~off] != x8[:, :, ~off]).any()
    r_cl = ama.marginal_attack(tiny_model, x8.contiguous(memory_format=torch.channels_last), e=1, n_iter=4)
    assert torch.equal(r.adv, r_cl.adv) and torch.equal(r.adv_logits, r_cl.adv_logits)
    assert all(t.is_contiguous() for t in (r.adv, r.adv_q, r.clean, r.adv_cam))  # default layout out


def test_custom_masks_change_only_their_pixels(tiny_model, x8):
    for mask in (side_mask(32, 3, "left"), corner_mask(32, 4)):
        r = ama.marginal_attack(tiny_model, x8, mask=mask, n_iter=3)
        assert torch.equal(r.adv[:, :, ~mask], x8[:, :, ~mask])
        assert int(r.metrics.changed_pixels.max()) <= int(mask.sum())
    per_image = torch.zeros(4, 32, 32, dtype=torch.bool)
    per_image[0, :1], per_image[1, :, :5], per_image[2:, -2:] = True, True, True
    r = ama.marginal_attack(tiny_model, x8, mask=per_image, n_iter=3)
    assert torch.equal(r.adv[~per_image.unsqueeze(1).expand_as(r.adv)], x8[~per_image.unsqueeze(1).expand_as(x8)])
    assert r.metrics.query("not quantized").changed_pixels.tolist() == [32, 160, 64, 64]


def test_untargeted_attack_beats_random_frame(tiny_model, x8):
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=20, return_history=True)
    base = random_frame(tiny_model, x8, e=2)
    cos, base_cos = r.metrics.groupby("quantized").cam_cosine.mean(), base.metrics.groupby("quantized").cam_cosine.mean()
    assert (cos < base_cos - 0.05).all(), (cos, base_cos)
    h = r.history["cam_cosine"]
    assert h.shape == (21, 4)
    assert torch.allclose(h[-1], torch.tensor(r.metrics.query("not quantized").cam_cosine.to_numpy()), atol=1e-5)
    assert (h[-1] < h[0]).all()
    assert torch.allclose(h[0], torch.tensor(base.metrics.query("not quantized").cam_cosine.to_numpy()), atol=1e-5)


def test_ce_alone_fools(tiny_model, x8):
    r = ama.marginal_attack(tiny_model, x8, e=3, n_iter=20, lamb=0)
    assert r.fooled.float().mean() >= 0.5
    assert r.adv_names[0] == tiny_model.class_name(r.adv_class[0])


def test_targeted_attack_raises_similarity_to_target(tiny_model, x8):
    from ama.inputs import targets as shapes

    target = shapes.disc((8, 8), center=(0.25, 0.75), radius=0.2)
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=20, target_map=target)
    base = random_frame(tiny_model, x8, e=2)
    from ama.kernels import metrics
    before = metrics.cosine(base.adv_cam, target.expand(4, 8, 8))
    after = torch.tensor(r.metrics.query("not quantized").target_cosine.to_numpy())
    assert (after > before + 0.05).all(), (before, after)
    assert torch.equal(r.target_map, target.expand(4, 8, 8))


def test_keep_mode_keeps_labels_where_it_succeeds(tiny_model, x8):
    flip = ama.marginal_attack(tiny_model, x8, e=3, n_iter=20, lamb=1.0)
    keep = ama.marginal_attack(tiny_model, x8, e=3, n_iter=20, lamb=1.0, mode="keep")
    ok = ~keep.fooled
    assert keep.fooled.sum() <= flip.fooled.sum() and ok.any()
    assert torch.equal(keep.adv_class[ok], keep.clean_class[ok])
    base = random_frame(tiny_model, x8, e=3)
    kc = torch.tensor(keep.metrics.query("not quantized").cam_cosine.to_numpy())[ok]
    bc = torch.tensor(base.metrics.query("not quantized").cam_cosine.to_numpy())[ok]
    assert (kc < bc).all()


def test_same_seed_same_result_and_batch_independence(tiny_model, x8):
    a = ama.marginal_attack(tiny_model, x8, e=1, n_iter=8, seed=3)
    b = ama.marginal_attack(tiny_model, x8, e=1, n_iter=8, seed=3)
    c = ama.marginal_attack(tiny_model, x8, e=1, n_iter=8, seed=4)
    assert torch.equal(a.adv, b.adv) and torch.equal(a.adv_cam, b.adv_cam)
    assert not torch.equal(a.adv, c.adv)
    single = ama.marginal_attack(tiny_model, x8[2:3], e=1, n_iter=8, seed=3)
    assert torch.equal(single.adv[0], a.adv[2])  # an image's result does not depend on its batch


def test_weights_frozen_clean_once_and_works_under_no_grad(tiny_model, x8):
    calls = []
    features = tiny_model.features
    tiny_model.features = lambda z: (calls.append(z.shape[0]), features(z))[1]
    with torch.no_grad():
        r = ama.marginal_attack(tiny_model, x8, e=1, n_iter=6)
    assert len(calls) == 6 + 1 + 2  # iterations, the clean pass, the two evaluations
    assert all(p.grad is None and not p.requires_grad for p in tiny_model.parameters())
    assert not torch.equal(r.adv, x8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(e=0), r"e \(the frame width in pixels\) must be a positive integer below half the smaller image side "
                r"\(32 px\), i.e. 1..15, got 0"),
    (dict(e=16), r"e \(the frame width in pixels\) must be a positive integer below half .*got 16"),
    (dict(e=1.5), r"e \(the frame width in pixels\) must be a positive integer.*got 1.5"),
    (dict(n_iter=0), r"n_iter must be a positive integer, got 0"),
    (dict(n_iter=2.0), r"n_iter must be a positive integer, got 2.0"),
    (dict(lamb=-1), r"lamb must be a non-negative finite number, got -1"),
    (dict(lamb=float("nan")), r"lamb must be a non-negative finite number, got nan"),
    (dict(mode="flipp"), r"unknown mode 'flipp'; use one of flip, keep"),
    (dict(target_map=torch.rand(7, 7)), r"target_map must have shape \(h, w\) = \(8, 8\) or \(B, h, w\) = \(4, 8, 8\)"),
    (dict(target_map=torch.zeros(8, 8)), r"target_map must be finite and not all zero"),
    (dict(mask=torch.ones(32, 31, dtype=torch.bool)), r"mask must have shape \(H, W\) = \(32, 32\)"),
    (dict(mask=torch.ones(32, 32)), r"mask must be boolean"),
    (dict(mask=torch.zeros(32, 32, dtype=torch.bool)), r"mask selects no pixel"),
])
def test_invalid_parameters(tiny_model, x8, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ama.marginal_attack(tiny_model, x8, **{"n_iter": 1, **kwargs})


def test_invalid_images(tiny_model, x8):
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        ama.marginal_attack(tiny_model, x8 * 2, n_iter=1)
    with pytest.raises(ValueError, match=r"names has 2 entries for a batch of 4 images"):
        ama.marginal_attack(tiny_model, x8, n_iter=1, names=["a", "b"])


def test_every_entry_point_fills_the_same_params_and_metrics(tiny_model, x8):
    """marginal_attack, random_frame and evaluate_images describe their settings by one record, and the metrics of
    the attack's own 8-bit images evaluated again equal the attack's 8-bit rows."""
    names = list("abcd")
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=4, names=names)
    base = random_frame(tiny_model, x8, e=2, names=names)
    again = evaluate_images(tiny_model, x8, r.adv_q, e=2, names=names,
                            params=dict(n_iter=4, lamb=r.params.lamb, optimizer="sign"))
    assert all(isinstance(t.params, AttackParams) for t in (r, base, again))
    assert (r.params.model, r.params.e, r.params.mask) == (base.params.model, base.params.e, base.params.mask) == \
        (again.params.model, again.params.e, again.params.mask) == ("tiny", 2, "frame")
    assert (base.params.mode, base.params.n_iter, base.params.optimizer) == ("random", 0, "none")
    columns = list(r.metrics.columns)
    for t in (base, again):
        assert list(t.metrics.columns) == columns and len(t.metrics) == 2 * len(names)
    attacked = r.metrics.query("quantized").reset_index(drop=True)
    for q in (False, True):  # evaluate_images' images are 8-bit already: both sets are the attack's 8-bit set
        rows = again.metrics[again.metrics.quantized == q].reset_index(drop=True)
        assert rows.fooled.tolist() == attacked.fooled.tolist()
        np.testing.assert_allclose(rows.cam_cosine, attacked.cam_cosine, atol=1e-6)
        assert rows.changed_pixels.tolist() == attacked.changed_pixels.tolist()
    assert (again.metrics.optimizer == "sign").all() and (again.metrics.n_iter == 4).all()
    assert (base.metrics.changed_pixels > 0).all() and base.metrics["mode"].eq("random").all()


def test_attack_batch_by_device_type():
    from ama.attack.marginal import ATTACK_BATCH, attack_batch

    assert attack_batch("cpu") == ATTACK_BATCH["cpu"] == 16
    assert attack_batch(torch.device("cuda", 1)) == attack_batch("cuda") == ATTACK_BATCH["cuda"] == 64
    assert attack_batch("meta") == 16  # another device type: the CPU's
