"""Padding variants: the same tensors bit for bit, only the padding changed, and the names that say so."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame

from ama.inputs import padding as pad
from ama.inputs.models import PADDING_VARIANTS, load_model, published_top1
from ama.kernels.cam_model import ModelError, fold_batchnorm


def test_variant_names_round_trip_and_bad_names_are_refused_with_the_valid_ones():
    assert pad.variant_name("lite0", "reflect") == "lite0-reflect-pad"
    assert pad.variant_name("lite0", pad.AS_TRAINED) == "lite0"
    assert pad.parse_variant("lite2-replicate-pad") == ("lite2", "replicate")
    assert pad.parse_variant("lite0") is None and pad.padding_of("lite0") == pad.AS_TRAINED
    assert pad.base_of("lite1-zero-pad") == "lite1" and pad.padding_of("lite1-zero-pad") == "zero"
    assert set(PADDING_VARIANTS) >= {"lite0-zero-pad", "lite0-reflect-pad", "lite0-replicate-pad", "lite2-zero-pad"}
    with pytest.raises(ModelError, match="use lite0-zero-pad, lite0-reflect-pad, lite0-replicate-pad"):
        pad.parse_variant("lite0-circular-pad")
    with pytest.raises(ModelError, match="resnet50 is zero padded already"):
        load_model("resnet50-reflect-pad")
    with pytest.raises(ModelError, match="padding variants exist for lite0, lite1, lite2 only"):
        load_model("mynet-zero-pad")


def _tiny_tf_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Conv2dSame(3, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False), nn.Conv2d(4, 2, 1)).eval()


@pytest.mark.parametrize("mode", ["zero", "reflect", "replicate"])
def test_repad_keeps_every_tensor_and_pads_each_convolution_symmetrically_with_its_mode(mode):
    net = _tiny_tf_net()
    before = {k: v for k, v in net.state_dict().items()}
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert pad.repad(net, mode) == 2                                   # the 3 x 3 and the 5 x 5, not the 1 x 1
    after = net.state_dict()
    assert list(after) == list(before) and all(after[k].data_ptr() == before[k].data_ptr() for k in before)
    w0, bn, w1, last = net[0].weight, net[1], net[3].weight, net[4]
    fill = dict(zero="constant", reflect="reflect", replicate="replicate")[mode]
    h = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=fill), w0, stride=2)
    h = F.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
    h = last(F.conv2d(F.pad(h, (2, 2, 2, 2), mode=fill), w1, groups=4))
    with torch.no_grad():
        assert torch.allclose(net(x), h, atol=1e-6)


def test_tf_same_pads_the_stride_two_layer_on_the_right_and_bottom_only_and_a_net_without_padding_is_refused():
    net = _tiny_tf_net()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the as-trained layer: 0 px left / top, 1 px right / bottom at an even size
        assert torch.allclose(net[0](x), F.conv2d(F.pad(x, (0, 1, 0, 1)), net[0].weight, stride=2), atol=1e-6)
    with pytest.raises(ModelError, match="no padded convolution"):
        pad.repad(nn.Sequential(nn.Conv2d(3, 3, 1)), "zero")
    with pytest.raises(ModelError, match="repad needs one of zero, reflect, replicate"):
        pad.repad(net, pad.AS_TRAINED)


def test_each_lite0_variant_is_lite0s_checkpoint_bit_for_bit_with_only_its_padding_changed(lite0):
    ref = lite0.state_dict()
    for name in ("lite0-zero-pad", "lite0-reflect-pad", "lite0-replicate-pad"):
        variant = load_model(name, device="cpu")
        got = variant.state_dict()
        assert list(got) == list(ref) and all(torch.equal(got[k], ref[k]) for k in ref)  # weights and BatchNorm stats
        assert not variant.training and not any(p.requires_grad for p in variant.parameters())
        convs = [m for m in variant.backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        assert len(convs) == 17 and not any(isinstance(m, Conv2dSame) for m in convs)
        mode = pad.padding_of(name)
        assert {m.padding_mode for m in convs} == {"zeros" if mode == "zero" else mode}
        assert all(m.padding == (m.kernel_size[0] // 2,) * 2 for m in convs)
        assert published_top1(name) is None
    assert published_top1("lite0") is not None


def test_a_variant_computes_another_function_on_the_same_grid_and_the_attacks_folded_copy_keeps_its_padding(lite0):
    variant = load_model("lite0-reflect-pad", device="cpu")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert variant.feature_size((224, 224)) == lite0.feature_size((224, 224))
        assert (variant(x) - lite0(x)).abs().max() > 1e-3                # the padding is in effect
        folded, n = fold_batchnorm(variant)
        assert n > 0 and torch.allclose(folded(x), variant(x), atol=1e-3, rtol=1e-3)


def test_a_run_with_an_unknown_padding_variant_fails_before_anything_is_written():
    from ama.runs.pipeline import check_run_params

    with pytest.raises(ModelError, match="unknown padding variant 'lite0-circular-pad'"):
        check_run_params(dict(device="cpu", images="data/imagenet", models=["lite0", "lite0-circular-pad"], e=[1]))
