"""Transfer to other CAM methods computed by pytorch-grad-cam; CAM checked against two independent libraries."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

import ama
from ama.attack import marginal as attack
from ama.studies import explanations
from ama.studies.explanations import MapKey


@pytest.fixture
def tiny_batch():
    model = make_tiny_model()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, x


def test_one_map_per_image_at_the_cams_resolution(tiny_batch):
    model, x = tiny_batch
    target = torch.tensor([1, 4, 7])
    for method in ("gradcam++", "layercam", "eigencam"):
        maps = explanations.library_cam(model, x, target, method)
        assert maps.shape == (3, 8, 8) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        # each image is explained for its own class: the batch equals one call per image
        alone = torch.cat([explanations.library_cam(model, x[b:b + 1], target[b:b + 1], method) for b in range(3)])
        assert torch.allclose(maps, alone, atol=1e-5), method


def test_a_short_target_list_is_refused(tiny_batch):
    model, x = tiny_batch
    with pytest.raises(ValueError, match="one target class per image"):
        explanations.library_cam(model, x, [1, 2], "gradcam++")
    with pytest.raises(ValueError, match="unknown CAM method"):
        explanations.library_cam(model, x, [1, 2, 3], "gradcam+++")


def test_gradcam_hirescam_xgradcam_equal_cam_up_to_scale(tiny_batch):
    model, x = tiny_batch
    rows = explanations.scale_check(model, x, names=["a", "b", "c"])
    assert len(rows) == 3 * len(explanations.CHECK_METHODS) and list(rows.image[:3]) == ["a", "b", "c"]
    check = explanations.scale_check_summary(rows)
    assert list(check.method) == list(explanations.CHECK_METHODS) and (check.n_images == 3).all()
    assert (check.max_abs_diff < 1e-5).all() and (check.min_cosine > 1 - 1e-6).all()
    assert check.max_abs_diff.tolist() == rows.groupby("method", sort=False).max_abs_diff.max().tolist()


def test_scorecam_in_chunks_equals_scorecam_at_once(tiny_batch):
    """Score-CAM runs one forward pass per channel, chunked by ``batch_size``: the chunking must not change the map."""
    model, x = tiny_batch
    chunked = explanations.library_cam(model, x[:2], [0, 1], "scorecam", batch_size=3)   # 8 channels: 3 + 3 + 2
    whole = explanations.library_cam(model, x[:2], [0, 1], "scorecam", batch_size=64)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
    assert chunked.shape == (2, 8, 8) and torch.allclose(chunked.flatten(1).amax(1), torch.ones(2))


def test_transfer_table(tiny_batch):
    model, x = tiny_batch
    adv = attack.marginal_attack(model, x, e=1, n_iter=3, names=["a", "b", "c"])
    rand = attack.random_frame(model, x, e=1, names=["a", "b", "c"])
    cache = {}
    table = explanations.transfer_table(model, adv, rand, ("gradcam++", "scorecam"), optimizer="reference",
                                    image_limits={"scorecam": 1}, clean_maps=cache)
    assert list(table.columns) == ["image", "model", "e", "optimizer", "method", "fooled", "cam_cosine",
                                   "cam_spearman", "top20_iou", "random_cam_cosine", "random_cam_spearman",
                                   "random_top20_iou"]
    assert (table.method == "gradcam++").sum() == 3 and (table.method == "scorecam").sum() == 1
    assert set(cache) == {MapKey("gradcam++", 3), MapKey("scorecam", 1),  # the clean maps, the random frame's at e = 1
                          MapKey("gradcam++", 3, "random frame", 1), MapKey("scorecam", 1, "random frame", 1)}
    clean = explanations.library_cam(model, x, adv.clean_class, "gradcam++")  # the rows, computed by hand
    attacked = explanations.library_cam(model, adv.adv_q, adv.clean_class, "gradcam++")
    expected = torch.nn.functional.cosine_similarity(clean.flatten(1), attacked.flatten(1), dim=1)
    rows = table[table.method == "gradcam++"]
    torch.testing.assert_close(torch.tensor(rows.cam_cosine.to_numpy()), expected, atol=1e-5, rtol=1e-5)
    # "attacked" images equal to the clean ones: every map equals its clean map
    same = explanations.transfer_table(model, attack.evaluate_images(model, x, x, e=1, names=["a", "b", "c"]), rand,
                                   ("layercam",))
    assert same.cam_cosine.tolist() == pytest.approx([1.0] * 3, abs=1e-6) and (same.top20_iou == 1).all()
    s = explanations.summarize_transfer(table)
    assert set(s.method) == {"gradcam++", "scorecam"} and "n_images" in s
    other = attack.random_frame(model, torch.rand_like(x), e=1)
    with pytest.raises(ValueError, match="same images"):
        explanations.transfer_table(model, adv, other)


@pytest.mark.slow
def test_cam_equals_torchcam_and_gradcam_on_lite0(lite0, samples):
    from torchcam.methods import CAM

    x = samples.images[:2] if hasattr(samples, "images") else samples[:2]
    ours = ama.cam(lite0, x, relu=False)
    extractor = CAM(lite0, target_layer="backbone", fc_layer=lite0.fc, input_shape=(3, 224, 224))
    try:
        with torch.no_grad():
            logits = lite0(x)
        theirs = extractor(logits.argmax(1).tolist(), logits)[0]  # one class per image (an int would be for all)
    finally:
        extractor.remove_hooks()
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() < 1e-6
    check = explanations.scale_check(lite0, x)
    assert (check.max_abs_diff < 1e-5).all() and len(check) == 2 * len(explanations.CHECK_METHODS)
