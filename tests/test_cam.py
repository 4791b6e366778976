"""CAM: the logit identity, exact values, normalisation, targets, gradients, upsampling."""
from __future__ import annotations

import pytest
import torch

import ama
from ama.kernels.cam import normalize_maps, resolve_target


def test_raw_cam_identity_tiny_and_resnet(tiny_model, resnet18_64, images32):
    for model, x in ((tiny_model, images32), (resnet18_64, torch.rand(3, 3, 64, 64))):
        out = ama.compute_cam(model, x)
        logit = out.logits.gather(1, out.target[:, None])[:, 0]
        assert torch.allclose(out.raw.mean((1, 2)) + model.bias[out.target], logit, atol=1e-5)


def test_raw_cam_exact_values(tiny_model, images32):
    """R_c(i, j) = sum_k W[c, k] A_k(i, j), computed by hand cell by cell."""
    A = tiny_model.features(images32)
    target = torch.tensor([0, 3, 9, 3])
    R = ama.raw_cam(tiny_model, images32, target)
    W = tiny_model.weight
    for b in range(4):
        for i in (0, 3, 7):
            for j in (0, 5, 7):
                expected = sum(W[target[b], k] * A[b, k, i, j] for k in range(A.shape[1]))
                assert torch.isclose(R[b, i, j], expected, atol=1e-6)


def test_cam_is_normalised_relu_of_raw(tiny_model, images32):
    out = ama.compute_cam(tiny_model, images32)
    M = torch.relu(out.raw)
    lo, hi = M.amin((1, 2), keepdim=True), M.amax((1, 2), keepdim=True)
    assert torch.allclose(out.cam, (M - lo) / (hi - lo + 1e-8))
    assert torch.allclose(out.cam.amax((1, 2)), torch.ones(4), atol=1e-6)
    assert (out.cam.amin((1, 2)) == 0).all()
    unnormalised = ama.cam(tiny_model, images32, relu=False, normalize=False)
    assert torch.equal(unnormalised, out.raw)


def test_normalisation_never_nan():
    maps = torch.stack([torch.zeros(7, 7), torch.full((7, 7), 3.0), torch.arange(49.0).view(7, 7)])
    out = normalize_maps(maps)
    assert not out.isnan().any()
    assert torch.equal(out[0], torch.zeros(7, 7)) and torch.equal(out[1], torch.zeros(7, 7))
    assert out[2, 0, 0] == 0 and torch.isclose(out[2, -1, -1], torch.tensor(1.0))


def test_int_target_applies_to_every_image(tiny_model, images32):
    """A common bug: only the first image of the batch gets the requested class."""
    batch = ama.raw_cam(tiny_model, images32, target=7)
    for b in range(4):
        assert torch.allclose(batch[b], ama.raw_cam(tiny_model, images32[b:b + 1], target=7)[0], atol=1e-6)
    per_image = ama.raw_cam(tiny_model, images32, target=[7, 2, 7, 2])
    assert torch.allclose(per_image[1], ama.raw_cam(tiny_model, images32[1:2], target=2)[0], atol=1e-6)
    assert not torch.allclose(per_image[1], batch[1])


def test_default_target_is_prediction(tiny_model, images32):
    out = ama.compute_cam(tiny_model, images32)
    assert torch.equal(out.target, tiny_model(images32).argmax(1))


@pytest.mark.parametrize("target, message", [([1, 2], "2 classes for a batch of 4"), (10, "must lie in \\[0, 9\\]"),
                                             (-1, "must lie in"), (1.5, "integer class indices")])
def test_bad_targets(tiny_model, images32, target, message):
    with pytest.raises(ValueError, match=message):
        ama.cam(tiny_model, images32, target)


def test_cam_is_differentiable_through_inplace_relu(resnet18_64):
    """torchvision's ResNet uses in-place ReLUs; input gradients must still flow, also inside no_grad callers."""
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    ama.cam(resnet18_64, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in resnet18_64.parameters())


def test_grad_cam_equals_cam_for_gap_linear(tiny_model, images32):
    """Grad-CAM's channel weights are W[c] / (h * w) for GAP + linear, so its normalised map equals CAM's."""
    A = tiny_model.features(images32).detach().requires_grad_(True)
    logits = tiny_model.head(A)
    c = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, c[:, None]).sum(), A)
    h, w = A.shape[-2:]
    assert torch.allclose(grad, (tiny_model.weight[c] / (h * w))[:, :, None, None].expand_as(grad), atol=1e-7)
    alpha = grad.mean((2, 3))
    grad_cam = normalize_maps(torch.relu(torch.einsum("bkhw,bk->bhw", A, alpha)))
    assert torch.allclose(grad_cam, ama.cam(tiny_model, images32), atol=1e-5)


# --- upsampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode, corners", [("bilinear", True), ("bilinear", False), ("nearest", None),
                                           ("bicubic", True), ("area", None)])
def test_upsample_shapes_and_partition_of_unity(mode, corners):
    maps = torch.rand(3, 7, 7)
    out = ama.upsample(maps, (224, 200), mode=mode, align_corners=corners)
    assert out.shape == (3, 224, 200)
    ones = ama.upsample(torch.ones(1, 7, 7), 224, mode=mode, align_corners=corners)
    assert torch.allclose(ones, torch.ones(1, 224, 224), atol=1e-5)
    assert ama.upsample(maps[0], 32, mode=mode, align_corners=corners).shape == (32, 32)


def test_bilinear_align_corners_keeps_corner_cells():
    maps = torch.rand(2, 7, 7)
    s = ama.upsample(maps, 224)
    for (i, j), (p, q) in {(0, 0): (0, 0), (0, 6): (0, 223), (6, 0): (223, 0), (6, 6): (223, 223)}.items():
        assert torch.allclose(s[:, p, q], maps[:, i, j])
    # without aligned corners the cell centres sit at 32 * (i + 0.5) - 0.5: between pixels 15 and 16
    free = ama.upsample(maps, 224, align_corners=False)
    assert torch.allclose(0.5 * (free[:, 15, 15] + free[:, 16, 16]), maps[:, 0, 0], atol=0.05 * (maps.max() - maps.min()))
    assert not torch.allclose(free[:, 111, 111], s[:, 111, 111])


def test_nearest_paints_blocks():
    maps = torch.arange(4.0).view(1, 2, 2)
    s = ama.upsample(maps, 4, mode="nearest")
    assert torch.equal(s[0], torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))


def test_upsample_is_differentiable():
    maps = torch.rand(1, 3, 3, dtype=torch.double, requires_grad=True)
    for mode in ("bilinear", "bicubic", "nearest", "area"):
        assert torch.autograd.gradcheck(lambda m: ama.upsample(m, 8, mode=mode), (maps,))


def test_upsample_errors():
    with pytest.raises(ValueError, match="unknown upsampling mode 'linear'"):
        ama.upsample(torch.rand(1, 7, 7), 224, mode="linear")
    with pytest.raises(ValueError, match="\\(B, h, w\\)"):
        ama.upsample(torch.rand(1, 1, 7, 7), 224)


def test_resolve_target_values():
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.0, 0.5], [3.0, 0.0, 0.0, 0.0, 4.0]], requires_grad=True)
    t = resolve_target(None, logits)  # the prediction, cut from the graph
    assert t.tolist() == [1, 4] and t.dtype == torch.long and not t.requires_grad
    assert resolve_target(3, logits).tolist() == [3, 3] and resolve_target([4, 0], logits).tolist() == [4, 0]
    assert resolve_target(torch.tensor([2, 2]), logits).tolist() == [2, 2]


@pytest.mark.slow
def test_lite0_cam_on_photos(lite0, samples):
    """The intact lite0 on the staged photos (SCIENCE.md section 5: camera -> tripod 0.94, chelsea -> tiger cat 0.39,
    china -> palace 0.30), and its raw CAM against the timm network's own features and classifier."""
    x = samples.images[1:4]  # camera, chelsea, china
    assert samples.names[1:4] == ["camera", "chelsea", "china"]
    out = ama.compute_cam(lite0, x)
    prob = torch.softmax(out.logits, 1).amax(1)
    assert [lite0.class_name(c) for c in out.target] == ["tripod", "tiger cat", "palace"]
    assert prob.tolist() == pytest.approx([0.94, 0.39, 0.30], abs=0.01)
    net = lite0.backbone.net  # the timm model: features without the kit's split
    with torch.no_grad():
        feats = net.forward_features((x - 0.5) / 0.5)
        raw = torch.einsum("bkhw,bk->bhw", feats, net.get_classifier().weight[out.target])
    torch.testing.assert_close(out.raw, raw, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.raw.mean((1, 2)) + lite0.bias[out.target], out.logits.gather(1, out.target[:, None])[:, 0],
                               atol=1e-4, rtol=1e-5)
    assert out.cam.shape == (3, 7, 7) and torch.allclose(out.cam.amax((1, 2)), torch.ones(3))


def test_ama_cam_is_the_module_and_the_function(tiny_model, images32):
    import importlib

    import ama
    import ama.kernels.cam as cam_module

    assert cam_module is importlib.import_module("ama.kernels.cam") and cam_module.compute_cam is ama.compute_cam
    assert torch.equal(ama.cam(tiny_model, images32), cam_module.cam(tiny_model, images32))
