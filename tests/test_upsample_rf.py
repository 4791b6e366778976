"""Receptive-field-aware upsampling: ama.upsample(mode="gaussian" | "erf") and fit_erf_gaussian."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model

import ama
from ama.geometry import cell_centres
from ama.kernels.upsampling import fit_erf_gaussian


def test_existing_modes_are_unchanged():
    m = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(m[:, None], size=(224, 224), mode="bilinear", align_corners=True)[:, 0]
    assert torch.equal(ama.upsample(m, 224), ref)


def test_gaussian_of_a_one_hot_map_is_that_cells_gaussian():
    m = torch.zeros(1, 7, 7)
    m[0, 2, 3] = 1.0
    out = ama.upsample(m, (224, 224), mode="gaussian", sigma=(10.0, 20.0))[0]
    cy, cx = 2.5 * 32 - 0.5, 3.5 * 32 - 0.5  # stride-32 receptive-field centre of cell (2, 3)
    y, x = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    expected = torch.exp(-(y - cy) ** 2 / 200 - (x - cx) ** 2 / 800)
    assert torch.allclose(out, expected, atol=1e-6)
    # its peak and its second moments: the right place and the right width (truncation is negligible here)
    p = out / out.sum()
    my, mx = (p * y).sum(), (p * x).sum()
    assert abs(my - cy) < 1e-3 and abs(mx - cx) < 1e-3
    assert abs(math.sqrt((p * (y - my) ** 2).sum()) - 10) < 1e-2 and abs(math.sqrt((p * (x - mx) ** 2).sum()) - 20) < 1e-2


def test_gaussian_is_linear_in_the_map_and_takes_centres():
    a, b = torch.rand(2, 3, 4, 4)
    up = lambda m: ama.upsample(m, (16, 16), mode="gaussian", sigma=3.0, centres=([1, 5, 9, 13], [0, 4, 8, 12]))  # noqa: E731
    assert torch.allclose(up(a + 2 * b), up(a) + 2 * up(b), atol=1e-5)
    one = torch.zeros(4, 4)
    one[0, 0] = 1
    out = up(one)
    assert out.shape == (16, 16) and out.argmax() == 1 * 16 + 0 and out.max() == pytest.approx(1.0)


def test_erf_mode_of_a_one_hot_map_returns_that_cells_erf():
    g = torch.Generator().manual_seed(1)
    erf = torch.rand(2, 9, 12, 12, generator=g)
    erf = erf / erf.sum((-2, -1), keepdim=True)
    m = torch.zeros(2, 3, 3)
    m[0, 1, 2] = 1.0
    m[1, 0, 0] = 0.5
    out = ama.upsample(m, (12, 12), mode="erf", erf=erf)
    assert out.shape == (2, 12, 12)
    assert torch.allclose(out[0], erf[0, 5]) and torch.allclose(out[1], 0.5 * erf[1, 0])


def test_rf_modes_gradients_are_their_kernels_mass():
    """d(sum S)/dM(i, j) is the mass of the kernel that paints cell (i, j): the Gaussian's (a product of two sums of
    1-D Gaussians at the cell's centre) and the cell's ERF map."""
    m = torch.rand(2, 4, 4, requires_grad=True)
    ama.upsample(m, 8, mode="gaussian", sigma=2.0).sum().backward()
    c = (torch.arange(4) + 0.5) * 2 - 0.5  # centres of a stride-2 grid, (i + 0.5) H / h - 0.5
    g = torch.exp(-(torch.arange(8)[None] - c[:, None]) ** 2 / 8).sum(1)  # (4,): sum over pixels of each 1-D Gaussian
    torch.testing.assert_close(m.grad, (g[:, None] * g[None, :]).expand(2, 4, 4))
    m.grad = None
    erf = torch.rand(2, 16, 8, 8)
    ama.upsample(m, 8, mode="erf", erf=erf).sum().backward()
    torch.testing.assert_close(m.grad, erf.sum((-2, -1)).view(2, 4, 4))


def test_rf_modes_reject_bad_input():
    m = torch.rand(1, 4, 4)
    with pytest.raises(ValueError, match="needs sigma"):
        ama.upsample(m, 8, mode="gaussian")
    with pytest.raises(ValueError, match="needs erf"):
        ama.upsample(m, 8, mode="erf")
    with pytest.raises(ValueError, match="erf must have shape"):
        ama.upsample(m, 8, mode="erf", erf=torch.rand(1, 9, 8, 8))
    with pytest.raises(ValueError, match="unknown upsampling mode"):
        ama.upsample(m, 8, mode="sinc")


def test_fit_recovers_the_gaussian_it_was_made_of():
    grid, size, sigma = (4, 4), (32, 32), (2.5, 3.0)
    erf = ama.upsample(torch.eye(16).view(16, 4, 4), size, mode="gaussian", sigma=sigma)
    erf = erf / erf.sum((-2, -1), keepdim=True)
    fit = fit_erf_gaussian(erf[None], grid)
    # the Gaussians are truncated by the image border, so the fit is close to, not exactly, sigma
    assert fit["sigma"][0] == pytest.approx(sigma[0], rel=0.1) and fit["sigma"][1] == pytest.approx(sigma[1], rel=0.1)
    ys = cell_centres(grid, size, align_corners=False).double().view(4, 4, 2)[:, 0, 0]
    assert torch.allclose(fit["centres"][0][1:3].double(), ys[1:3], atol=0.3)


def test_fit_on_measured_erfs_of_a_tiny_model():
    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    erf = ama.effective_receptive_field(model, x)
    fit = fit_erf_gaussian(erf, (8, 8))
    e = erf.double().numpy()  # the mean second moment over images and cells, and the centroids, by hand
    ys = np.arange(32)
    py = e.sum(-1)                       # (2, 64, 32) row marginals, each summing to 1
    my = (py * ys).sum(-1)               # (2, 64) centroid rows
    vy = (py * (ys - my[..., None]) ** 2).sum(-1)
    assert fit["sigma"][0] == pytest.approx(float(np.sqrt(vy.mean())), rel=1e-6)
    assert fit["centres"][0].numpy() == pytest.approx(my.reshape(2, 8, 8).mean((0, 2)), abs=1e-4)
    out = ama.upsample(ama.cam(model, x), (32, 32), mode="gaussian", **fit)
    assert out.shape == (2, 32, 32)
