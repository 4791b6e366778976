"""Shared fixtures: tiny seeded models for logic, the real default model for end-to-end checks."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.nn as nn

os.environ.setdefault("AMA_OFFLINE", "1")  # tests never try the network
os.environ.setdefault("MPLBACKEND", "Agg")
# cached clean predictions (ama.inputs.protocol.clean_predictions) go to a folder of this session, not the runs' shared one
os.environ.setdefault("AMA_CACHE", tempfile.mkdtemp(prefix="ama-test-cache-"))

import ama  # noqa: E402
from ama.kernels.cam_model import wrap_model  # noqa: E402


def make_tiny_model(seed: int = 0, channels: int = 8, classes: int = 10, size: int = 32) -> ama.CAMModel:
    """Seeded Conv(3->8, s2)-ReLU-Conv(8->K, s2)-ReLU -> GAP -> Linear; a 32 x 32 image gives an 8 x 8 CAM."""
    g = torch.Generator().manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(8, channels, 3, stride=2, padding=1), nn.ReLU())
    fc = nn.Linear(channels, classes)
    with torch.no_grad():
        for p in [*backbone.parameters(), *fc.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return wrap_model(backbone, fc, name="tiny", input_size=size, class_names=[f"class{i}" for i in range(classes)])


class _PreActivation(nn.Module):
    """BatchNorm registered after the convolution but applied before it: registration order lies."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.conv(self.bn(x)))


def make_bn_model(seed: int = 0, pre_activation: bool = False, size: int = 32) -> ama.CAMModel:
    """Seeded Conv-BN-ReLU6 x 2 (random BatchNorm statistics) -> GAP -> Linear(10); ``pre_activation``: a last
    block whose BatchNorm runs before its convolution, though registered after it."""
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
              nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)]
    if pre_activation:
        layers.append(_PreActivation(8))
    backbone, fc = nn.Sequential(*layers), nn.Linear(8, 10)
    with torch.no_grad():
        for p in [*backbone.parameters(), *fc.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for bn in (m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(8, generator=g) * 0.2)
            bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return wrap_model(backbone, fc, name="tiny-bn", input_size=size)


def make_resnet18(seed: int = 0, size: int = 64) -> ama.CAMModel:
    """Random-init torchvision ResNet-18 split for CAM, at ``size`` x ``size`` (64 -> a 2 x 2 CAM)."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    backbone = nn.Sequential(*[m for k, m in net.named_children() if k not in ("avgpool", "fc")])
    return wrap_model(backbone, net.fc, name="resnet18-random", input_size=size)


@pytest.fixture
def tiny_model() -> ama.CAMModel:
    return make_tiny_model()


@pytest.fixture
def resnet18_64() -> ama.CAMModel:
    return make_resnet18()


@pytest.fixture
def images32() -> torch.Tensor:
    """Four seeded images ``(4, 3, 32, 32)`` in ``[0, 1]``."""
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def lite0() -> ama.CAMModel:
    """The real offline default model (EfficientNet-Lite0, ImageNet), on CPU."""
    return ama.load_model("lite0", device="cpu")


@pytest.fixture(scope="session")
def samples(lite0):
    """The staged sample photos at lite0's input size."""
    return ama.sample_images(lite0)


FAST_MODELS = ("lite0", "lite1")  # two input sizes and grids (224 px 7 x 7, 240 px 8 x 8); lite2 adds time, not cases


class FastRun:
    """One ``make reproduce FAST=1`` into a temporary results folder, shared by the end-to-end tests."""

    def __init__(self, results, proc):
        self.results = results
        self.dir = results / "fast"
        self.proc = proc
        self.output = proc.stdout + proc.stderr

    @staticmethod
    def args(results) -> list[str]:
        """The make variables of the shared run (a rerun with the same ones must find everything up to date)."""
        return ["FAST=1", f"MODELS={' '.join(FAST_MODELS)}", "STUDIES=all", "DEVICE=cpu", "RUN=fast", f"RESULTS={results}"]


def stop_process_group(proc, grace: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started (a Jupyter server, its
    kernels): SIGTERM to the group, SIGKILL after ``grace`` seconds; a group already gone is fine."""
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def run_make(*args, timeout=900, env=None):
    """``make args`` in the project root; on a timeout the whole process group (make, papermill, the kernels) is
    killed, not make alone, and ``subprocess.TimeoutExpired`` is raised."""
    import signal
    import subprocess

    from ama.paths import ROOT

    full_env = {**os.environ, **(env or {})}
    full_env.pop("MAKEFLAGS", None)
    with subprocess.Popen(["make", "--no-print-directory", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=full_env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory) -> FastRun:
    """Run the whole pipeline once in fast mode (every notebook) on CPU, on two offline models (each at its own
    input size); tests assert on its artifacts."""
    results = tmp_path_factory.mktemp("results")
    proc = run_make("reproduce", *FastRun.args(results))
    run = FastRun(results, proc)
    assert proc.returncode == 0, f"make reproduce FAST=1 failed:\n{run.output[-6000:]}"
    return run
