"""Map comparisons and the attack's metrics table, on hand-made maps with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ama.kernels import metrics


def _maps(seed=0, b=3, h=6, w=6):
    return torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed))


def test_cosine_and_spearman():
    a = _maps()
    assert torch.allclose(metrics.cosine(a, a), torch.ones(3))
    assert torch.allclose(metrics.cosine(a, 3 * a), torch.ones(3))
    assert torch.allclose(metrics.spearman(a, a ** 3), torch.ones(3))  # monotone transform: rank-identical
    assert torch.allclose(metrics.spearman(a, 1 - a), -torch.ones(3))
    b = _maps(1)
    ref = pd.DataFrame({"a": a[0].flatten().numpy(), "b": b[0].flatten().numpy()}).corr("spearman").iloc[0, 1]
    assert metrics.spearman(a, b)[0].item() == pytest.approx(ref, abs=1e-6)
    ties = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert metrics.spearman(ties, ties).item() == pytest.approx(1.0)
    assert math.isnan(metrics.spearman(torch.zeros(1, 2, 2), ties).item())
    assert metrics.cosine(torch.zeros(1, 2, 2), ties).item() == 0.0


def test_threshold_and_top_iou_and_pointing():
    a = torch.tensor([[[1.0, 0.8, 0.0, 0.0, 0.1]]])
    b = torch.tensor([[[0.2, 0.9, 0.6, 0.0, 0.0]]])
    assert metrics.threshold_iou(a, b, 0.5).item() == pytest.approx(1 / 3)  # {0,1} vs {1,2}
    assert metrics.threshold_iou(a, b, 0.95).item() == 0.0
    assert metrics.threshold_iou(a * 0, b * 0, 0.5).item() == 1.0  # both empty: identical
    assert metrics.top_iou(a, b, share=0.2).item() == 0.0  # top cell 0 vs top cell 1
    assert metrics.top_iou(a, b, share=0.4).item() == pytest.approx(1 / 3)
    assert metrics.top_iou(a, a).item() == 1.0
    assert not metrics.pointing_game(a, b, share=0.2).item()
    assert metrics.pointing_game(a, b, share=0.4).item()
    with pytest.raises(ValueError, match=r"maps must both have shape \(B, h, w\)"):
        metrics.cosine(torch.rand(2, 3, 3), torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match=r"share must lie in \(0, 1\]"):
        metrics.top_iou(a, b, share=0)


def test_pixels_and_linf():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0, 1, 0, 0] = 0.5
    y[0, :, 3, 3] = 0.25
    assert metrics.changed_pixels(x, y).tolist() == [2, 0]
    assert metrics.linf(x, y).tolist() == [0.5, 0.0]


def test_attack_metrics_table_and_summary(tiny_model, images32):
    import ama
    from ama.attack.marginal import random_frame

    r = ama.marginal_attack(tiny_model, images32, e=1, n_iter=4, names=list("abcd"))
    df = r.metrics
    assert len(df) == 8 and df.quantized.tolist() == [False] * 4 + [True] * 4
    assert df.image.tolist() == list("abcd") * 2
    assert set(metrics.METRIC_COLUMNS) <= set(df.columns)
    assert (df.changed_pixels <= 4 * 31).all() and (df.changed_share == df.changed_pixels / 1024).all()
    assert np.allclose(df.cam_cosine[:4], metrics.cosine(r.clean_cam, r.adv_cam).numpy())
    assert (df.fooled == (df.adv_class != df.clean_class)).all()
    assert df.linf.max() <= 1 and df.target_cosine.isna().all()
    base = random_frame(tiny_model, images32, e=1, names=list("abcd")).metrics.assign(setting="random_frame")
    both = pd.concat([df.assign(setting="attack"), base])
    s = metrics.summarize(both)
    assert len(s) == 4 and {"fooling_rate", "cam_cosine", "n_images"} <= set(s.columns)
    row = s[(s.setting == "attack") & (~s.quantized)].iloc[0]
    assert row.n_images == 4 and row.fooling_rate == pytest.approx(df.fooled[:4].mean())
    assert row.cam_cosine == pytest.approx(df.cam_cosine[:4].mean())
