"""The kit's reference optimiser ``sign`` is the 2021 code's loop, bit for bit (``tests/original_loop.py``).

Both run in the default memory layout (``ama.attack.marginal.CPU_LAYOUT`` patched: channels-last sums in another order)
and, on lite0, on the model itself (``fold_bn=False``). The tiny model's case is chosen so that frame values do cross a
bound, where the original differs from a projected step (shown below).
"""
from __future__ import annotations

import pytest
import torch

import ama
from ama.attack import marginal as attack
from ama.attack.marginal import quantize, start_noise

from original_loop import original_loop


def kit_and_port(model, x, e, n_iter, seed, lamb=100.0):
    """The kit's ``sign`` result and the port's, image by image (batches of one, as the original script)."""
    out = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        r = ama.marginal_attack(model, xb, e=e, n_iter=n_iter, lamb=lamb, seed=seed, fold_bn=False)
        z, n = original_loop(model, xb, e, n_iter, lamb, start_noise(xb, seed))
        out.append((r, z, n))
    return out


@pytest.fixture
def contiguous(monkeypatch):
    monkeypatch.setattr(attack, "CPU_LAYOUT", torch.contiguous_format)


@pytest.mark.parametrize("seed", [0, 3])
def test_sign_is_the_original_loop_on_a_tiny_model(tiny_model, images32, seed, contiguous):
    x = quantize(images32[:4])
    crossed = 0
    for r, z, n in kit_and_port(tiny_model, x, e=2, n_iter=6, seed=seed):
        assert torch.equal(r.adv, z)
        assert torch.equal(r.adv_q, torch.where(r.mask.unsqueeze(1), quantize(z), r.clean))
        crossed += int(((n < 0) | (n > 1)).sum())
    assert crossed > 0  # frame values went past a bound: the case where clipping the iterate would differ


def test_a_projected_step_is_not_the_original_loop(tiny_model, images32, contiguous, monkeypatch):
    """The kit's former step, ``n <- clip(n + sign(g) / n_iter, 0, 1)``, lets a value come back from a bound; the
    original does not. The test above would catch that form."""
    x = quantize(images32[:4])
    original = [z for _, z, _ in kit_and_port(tiny_model, x, e=2, n_iter=6, seed=0)]

    class Projected(ama.attack.optimizers.Sign):
        def point(self):
            return self.n

        def step(self, grad, loss):
            self.n = (self.n.detach() + grad.sign() / self.n_steps).clamp(0, 1)

    monkeypatch.setitem(ama.attack.optimizers.OPTIMIZERS, "sign", Projected)
    projected = [r.adv for r, _, _ in kit_and_port(tiny_model, x, e=2, n_iter=6, seed=0)]
    assert any(not torch.equal(a, b) for a, b in zip(projected, original))


@pytest.mark.slow
def test_sign_is_the_original_loop_on_lite0(contiguous):
    model = ama.load_model("lite0")
    files = ["n01440764_tench.jpg", "n01484850_great_white_shark.jpg", "n01443537_goldfish.jpg"]
    x = torch.stack([ama.load_image(ama.paths.ROOT / "data" / "imagenet" / f, model)[0] for f in files])
    crossed = 0
    for r, z, n in kit_and_port(model, x, e=1, n_iter=40, seed=0):
        assert torch.equal(r.adv, z)
        crossed += int(((n < 0) | (n > 1)).sum())
    assert crossed > 0
