"""Target shapes: where they are, what they hold, and the spec parser."""
from __future__ import annotations

import pytest
import torch

from ama.inputs import targets as shapes


def _centroid(m):
    h, w = m.shape
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return (m * ys).sum() / m.sum(), (m * xs).sum() / m.sum()


@pytest.mark.parametrize("size", [7, (8, 8), (14, 10), 224])
def test_shapes_range_and_place(size):
    for m in (shapes.disc(size), shapes.square(size), shapes.ring(size), shapes.glyph(size, "X")):
        h, w = (size, size) if isinstance(size, int) else size
        assert m.shape == (h, w) and m.min() >= 0 and m.max() == 1
        cy, cx = _centroid(m)  # symmetric shapes sit at the centre
        assert abs(cy - (h - 1) / 2) < 0.15 * h and abs(cx - (w - 1) / 2) < 0.15 * w
    corner = shapes.disc(size, center=(0.0, 1.0), radius=0.3)
    h, w = corner.shape
    assert corner[0, -1] == 1 and corner[-1, 0] == 0


def test_ring_is_hollow_and_square_is_full():
    r, s = shapes.ring(16, radius=0.45, width=0.15), shapes.square(16, half_side=0.2)
    assert r[7:9, 7:9].max() == 0 and r.sum() > 0
    assert s[6:10, 6:10].min() == 1 and s[0].max() == 0


def test_glyphs_differ():
    x, o = shapes.glyph(16, "X"), shapes.glyph(16, "O")
    assert x[7:9, 7:9].mean() > 0.5 > o[7:9, 7:9].mean()


def test_cam_transforms_and_specs(tiny_model, images32):
    cam = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shapes.flipped(cam)[:, :, 0], cam[:, :, -1])
    assert torch.equal(shapes.flipped(cam, "vertical")[:, 0], cam[:, -1])
    assert torch.allclose(shapes.inverted(cam) + cam, torch.ones_like(cam))
    assert torch.equal(shapes.make_target("flip", 7, cam), shapes.flipped(cam))
    assert torch.equal(shapes.make_target("text:X", 7), shapes.glyph(7, "X"))
    other = shapes.image_cam(tiny_model, images32[0])
    assert other.shape == (8, 8) and other.max() == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: shapes.disc(7, center=(1.5, 0.5)), r"center must be \(row, col\) with both in \[0, 1\]"),
    (lambda: shapes.disc(7, radius=0), r"radius must be positive"),
    (lambda: shapes.ring(7, radius=0.2, width=0.3), r"ring needs 0 < width <= radius"),
    (lambda: shapes.glyph(7, " "), r"text must hold at least one visible character"),
    (lambda: shapes.make_target("star", 7), r"unknown target 'star'; use one of disc, square"),
    (lambda: shapes.make_target("invert", 7), r"target 'invert' needs the clean CAM"),
    (lambda: shapes.flipped(torch.rand(7, 7), "diagonal"), r"unknown axis 'diagonal'"),
])
def test_shape_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
