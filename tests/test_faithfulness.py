"""Deletion and insertion AUC (Petsiuk et al. 2018) on tiny models with a known answer."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ama.kernels.metrics import deletion_auc, insertion_auc


class MeanBrightness(nn.Module):
    """Two classes; logit_0 = a * mean(x), logit_1 = 0, so p_0 = sigmoid(a * mean(x))."""

    def __init__(self, a: float = 6.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a), requires_grad=False)

    def forward(self, x):
        m = self.a * x.mean((1, 2, 3))
        return torch.stack([m, torch.zeros_like(m)], 1)


class TopLeftPixel(nn.Module):
    """p_0 = sigmoid(10 * (x[0, 0] - 0.5)): only the top-left pixel counts."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(10.0), requires_grad=False)

    def forward(self, x):
        m = self.k * (x[:, :, 0, 0].mean(1) - 0.5)
        return torch.stack([m, torch.zeros_like(m)], 1)


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_deletion_to_black_of_a_white_image_by_hand():
    x = torch.ones(1, 3, 2, 2)
    sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    auc, curve = deletion_auc(MeanBrightness(), x, sal, target=0, steps=4, baseline="black", return_curve=True)
    expected = [sigmoid(6 * (1 - t / 4)) for t in range(5)]  # t of 4 pixels black at step t
    assert curve[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert auc.item() == pytest.approx(sum(expected) / 5, abs=1e-6)


def test_insertion_from_black_counts_revealed_pixels():
    x = torch.ones(2, 3, 4, 4)
    sal = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    auc = insertion_auc(MeanBrightness(), x, sal, target=[0, 0], steps=8, baseline=torch.zeros_like(x))
    expected = sum(sigmoid(6 * ((t * 16 // 8) / 16)) for t in range(9)) / 9  # floor(t N / steps) pixels revealed
    assert auc.tolist() == pytest.approx([expected, expected], abs=1e-6)


def test_order_matters_a_faithful_map_deletes_the_evidence_first():
    x = torch.ones(1, 3, 8, 8)
    good = torch.zeros(1, 8, 8)
    good[0, 0, 0] = 1.0  # the pixel the model looks at, first
    bad = 1.0 - good     # the same pixel last
    model = TopLeftPixel()
    d_good, d_bad = (deletion_auc(model, x, s, target=0, steps=4, baseline="black").item() for s in (good, bad))
    # good: p drops at step 1 and stays low; bad: p stays high until the last step
    assert d_good == pytest.approx((sigmoid(5) + 4 * sigmoid(-5)) / 5, abs=1e-6)
    assert d_bad == pytest.approx((4 * sigmoid(5) + sigmoid(-5)) / 5, abs=1e-6)
    i_good = insertion_auc(model, x, good, target=0, steps=4, baseline="black").item()
    assert i_good == pytest.approx((sigmoid(-5) + 4 * sigmoid(5)) / 5, abs=1e-6)


def test_chunking_and_default_target_do_not_change_the_answer():
    g = torch.Generator().manual_seed(1)
    x, sal = torch.rand(3, 3, 6, 6, generator=g), torch.rand(3, 6, 6, generator=g)
    model = MeanBrightness(-4.0)
    a = deletion_auc(model, x, sal, steps=5, batch_size=1)
    b = deletion_auc(model, x, sal, target=model(x).argmax(1), steps=5, batch_size=100)
    assert torch.allclose(a, b)
    mean_colour = deletion_auc(model, x, sal, steps=5, baseline=x.mean((2, 3), keepdim=True).expand_as(x).clone())
    assert torch.allclose(deletion_auc(model, x, sal, steps=5), mean_colour)  # "mean": each image's channel means
    ins = insertion_auc(model, x, sal, steps=5)  # blurred start
    assert ins.shape == (3,) and ((ins >= 0) & (ins <= 1)).all()


def test_bad_input():
    x = torch.ones(1, 3, 4, 4)
    with pytest.raises(ValueError, match="saliency must have shape"):
        deletion_auc(MeanBrightness(), x, torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        insertion_auc(MeanBrightness(), x, torch.rand(1, 4, 4), steps=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        deletion_auc(MeanBrightness(), x, torch.rand(1, 4, 4), baseline="grey")
