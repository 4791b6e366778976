"""Bad inputs a careless or unlucky user gives: each gets a one-line error or the right result (issue 13)."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import ama
from ama.attack import marginal as attack
from ama.geometry import frame_mask
from ama.inputs import images as data, devices, models
from ama.kernels.cam import resolve_target
from ama.kernels.receptive_field import effective_receptive_field
from ama.runs import pipeline



def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


# --- silent wrong results ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixel_is_refused(tiny_model, images32, bad):
    x = images32.clone()
    x[2, 1, 5, 7] = bad
    for call in (lambda: ama.cam(tiny_model, x), lambda: attack.marginal_attack(tiny_model, x, e=1, n_iter=1),
                 lambda: effective_receptive_field(tiny_model, x, cells=[0]), lambda: tiny_model(x)):
        with pytest.raises(ValueError, match=r"NaN or inf pixels \(batch index \[2\]\)") as err:
            call()
        one_line(err)


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(wide).save(path, exif=exif.tobytes(), quality=95)
    img = data.open_image(path)
    assert img.size == (40, 80)  # displayed upright: portrait
    arr = np.asarray(img).astype(float)
    assert arr[:20].mean() > 200 and arr[60:].mean() < 50  # the stored left half is now the top


def test_symlink_loop_in_a_folder_is_listed_as_skipped(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "good.png")
    os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    out = data.load_images(tmp_path)
    assert out.names == ["good"]
    reasons = dict(out.skipped)
    assert "symlink loop" in reasons["loop"] and "broken symlink" in reasons["broken"]


def test_symlink_loop_alone_is_one_line(tmp_path):
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    with pytest.raises(data.ImageLoadError, match="symlink loop") as err:
        data.load_images(loop)
    one_line(err)


@pytest.mark.parametrize("target, match", [(True, "not booleans"), (False, "not booleans"), ([True, False], "not booleans"),
                                           ("cat", "class index .* not the name 'cat'"), (1.0, "integer class")])
def test_bad_target_is_refused(target, match):
    with pytest.raises(ValueError, match=match) as err:
        resolve_target(target, torch.zeros(2, 10))
    one_line(err)


def test_numpy_target_is_accepted():
    assert resolve_target(np.int64(3), torch.zeros(2, 10)).tolist() == [3, 3]


# --- API: numpy numbers, dtypes, empty batches, seeds, inference mode --------------------------
def test_numpy_numbers_are_accepted(tiny_model, images32):
    ref = attack.marginal_attack(tiny_model, images32, e=2, n_iter=5, lamb=10.0, seed=1)
    got = attack.marginal_attack(tiny_model, images32, e=np.int64(2), n_iter=np.int64(5), lamb=np.float32(10),
                                 seed=np.int64(1))
    assert torch.equal(ref.adv, got.adv)
    assert got.params.e == 2 and type(got.params.n_iter) is int and type(got.params.lamb) is float
    rnd = attack.random_frame(tiny_model, images32, e=np.int32(2), seed=np.uint8(1))
    assert torch.equal(rnd.adv, attack.random_frame(tiny_model, images32, e=2, seed=1).adv)
    assert torch.equal(frame_mask((32, 32), np.int64(3)), frame_mask((32, 32), 3))
    assert torch.equal(frame_mask((32, 32), np.int16(3)), frame_mask((32, 32), 3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(e=True), r"e \(the frame width in pixels\) must be a positive integer"),
    (dict(e=np.float64(2)), r"e \(the frame width in pixels\) must be a positive integer"),
    (dict(n_iter=True), "n_iter must be a positive integer"), (dict(lamb=float("nan")), "lamb must be"),
    (dict(lamb=np.float32("inf")), "lamb must be"), (dict(lamb=True), "lamb must be"),
    (dict(seed=2 ** 70), r"seed must be an integer in \[0, 2\*\*63 - 1\]"), (dict(seed=-1), "seed must be"),
    (dict(seed=True), "seed must be")])
def test_bad_attack_parameters_are_one_line(tiny_model, images32, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        attack.marginal_attack(tiny_model, images32, **{"n_iter": 1, **kwargs})
    one_line(err)


def test_frame_mask_refuses_bool():
    with pytest.raises(ValueError, match=r"e \(the frame width in pixels\) must be a positive integer"):
        frame_mask((32, 32), True)


def test_float64_and_empty_batches_are_one_line(tiny_model, images32):
    with pytest.raises(ValueError, match=r"float32 .* got torch.float64; use x.float\(\)") as err:
        ama.cam(tiny_model, images32.double())
    one_line(err)
    for call in (lambda x: ama.cam(tiny_model, x), lambda x: attack.marginal_attack(tiny_model, x, n_iter=1)):
        with pytest.raises(ValueError, match="empty batch") as err:
            call(images32[:0])
        one_line(err)


def test_inference_mode_is_one_line(tiny_model, images32):
    with torch.inference_mode():
        for call in (lambda: attack.marginal_attack(tiny_model, images32, n_iter=1),
                     lambda: effective_receptive_field(tiny_model, images32, cells=[0])):
            with pytest.raises(RuntimeError, match=r"outside torch.inference_mode\(\)") as err:
                call()
            one_line(err)
        assert ama.cam(tiny_model, images32).shape == (4, 8, 8)  # no autograd needed: works
    with torch.no_grad():  # the kit enables grad itself where it needs it
        attack.marginal_attack(tiny_model, images32, n_iter=1)


# --- wrap_model probes the pair ---------------------------------------------------------------
def _backbone(k=8):
    return nn.Sequential(nn.Conv2d(3, k, 3, stride=2, padding=1), nn.ReLU())


@pytest.mark.parametrize("backbone, fc, match", [
    (_backbone(8), nn.Linear(16, 10), "gives K = 8 channels but fc takes 16 features"),
    (nn.Sequential(_backbone(8), nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(8, 10),
     r"must return a \(B, K, h, w\) feature map, got \(1, 8\)"),
    (nn.Conv2d(1, 8, 3), nn.Linear(8, 10), r"backbone fails on a \(1, 3, 32, 32\) image"),
    (_backbone(8), nn.Conv2d(8, 10, 1), "fc must be an nn.Linear"),
])
def test_wrap_model_says_what_does_not_fit(backbone, fc, match):
    with pytest.raises(models.ModelError, match=match) as err:
        ama.wrap_model(backbone, fc, input_size=32)
    one_line(err)


def test_wrap_model_probe_leaves_batchnorm_statistics(tmp_path):
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    ama.wrap_model(backbone, nn.Linear(8, 10), input_size=32)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


# --- devices --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "gpu", "meta", "cuda:99", "cpu:3", "banana"])
def test_bad_device_is_one_line(device):
    with pytest.raises(devices.DeviceError, match=r"device .* is not usable here.*use one of auto, cpu") as err:
        devices.resolve_device(device)
    one_line(err)


def test_good_devices():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert devices.resolve_device("auto").type in ("cpu", "cuda")


# --- timm models ------------------------------------------------------------------------------
def test_timm_non_cam_architecture_is_refused_at_once():
    # the head is checked on the meta device, before any weights are looked for (AMA_OFFLINE: no network)
    with pytest.raises(models.ModelError, match="CAM cannot explain timm:vit_tiny_patch16_224: its global pool is "
                       "'token'") as err:
        ama.load_model("timm:vit_tiny_patch16_224")
    assert not isinstance(err.value, models.WeightsNotFoundError)
    one_line(err)


def test_timm_offline_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(models.WeightsNotFoundError, match=r"timm:resnet18 weights are not on this machine and the kit is "
                       r"offline: get https://huggingface.co/timm/resnet18\.\S+/blob/main/model.safetensors .*"
                       r"checkpoint=") as err:
        ama.load_model("timm:resnet18")
    one_line(err)


def test_timm_checkpoint_is_used_offline(tmp_path):
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = ama.load_model("timm:resnet18", checkpoint=tmp_path / "r18.pth")
    assert torch.equal(model.fc.weight, net.fc.weight)


# --- notebooks killed mid-run -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_notebook_leaves_no_final_output(tmp_path, sig):
    from test_pipeline import _notebook

    nb = tmp_path / "01_killed.ipynb"
    _notebook(nb, f"import os, signal\nos.kill(os.getpid(), {int(sig)})")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"notebook 01_killed.ipynb failed.*log: ") as err:
        pipeline.run_notebook(nb, run, pipeline.make_params(), progress=False)
    one_line(err)
    assert not (run / "notebooks" / "01_killed.ipynb").exists()
    assert not (run / "notebooks" / "01_killed.running.ipynb").exists()
    assert (run / "logs" / "01_killed.log").is_file()


@pytest.mark.slow
def test_run_notebook_is_quiet_and_logs(tmp_path, capsys):
    from test_pipeline import _notebook

    nb = tmp_path / "01_quiet.ipynb"
    _notebook(nb, "import sys, warnings\nprint('chatter')\nprint(' 50%|#####     | 1/2 [00:01<00:01,  1.0s/it]',"
                  " file=sys.stderr)\nwarnings.warn('noise')")
    run = tmp_path / "run"
    out = pipeline.run_notebook(nb, run, pipeline.make_params(), progress=True)
    assert out == run / "notebooks" / "01_quiet.ipynb" and out.is_file()
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("== 01_quiet: running (log: ") and "done in" in lines[1]
    assert "50%|" in captured.err and "chatter" not in captured.err + captured.out
    assert "noise" not in captured.err + captured.out
    log = (run / "logs" / "01_quiet.log").read_text()
    assert "chatter" in log and "noise" in log
    assert "running over TCP" not in log  # the kernel talks over local IPC sockets (pipeline._ipc_kernel_manager)


def test_timm_weights_fail_fast_when_the_hub_is_unreachable(monkeypatch):
    """Not marked offline, but no network: one line at once, not the hub client's retries."""
    import time

    from ama.inputs import models

    monkeypatch.delenv("AMA_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)  # an empty local cache
    start = time.monotonic()
    with pytest.raises(models.WeightsNotFoundError, match="cannot be reached from here"):
        models.load_model("timm:resnet18", device="cpu")
    assert time.monotonic() - start < 20
