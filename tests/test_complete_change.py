"""Claim 3's calibrated "completely changed": the null of unrelated CAMs, the joint event and its two verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from ama.kernels.cam import cam
from ama.stats.intervals import clopper_pearson
from ama.studies import complete_change as cc


def test_null_pairs_are_distinct_ordered_and_seeded():
    assert cc.null_pairs(4, n_pairs=10).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]  # all 6
    p = cc.null_pairs(50, n_pairs=100, seed=3)
    assert p.shape == (100, 2) and (p[:, 0] < p[:, 1]).all() and len({tuple(r) for r in p.tolist()}) == 100
    assert (p == cc.null_pairs(50, n_pairs=100, seed=3)).all() and not (p == cc.null_pairs(50, 100, seed=4)).all()


def test_null_cosines_are_the_clean_cams_cosines_of_each_images_predicted_class(tiny_model, images32):
    null = cc.null_cosines(tiny_model, images32, list("abcd"), batch_size=3)
    assert len(null) == 6 and set(zip(null.image_a, null.image_b)) >= {("a", "b"), ("c", "d")}
    with torch.no_grad():
        maps, classes = cam(tiny_model, images32), tiny_model(images32).argmax(1)
    row = null[(null.image_a == "b") & (null.image_b == "d")].iloc[0]
    assert row.cosine == pytest.approx(F.cosine_similarity(maps[1].flatten(), maps[3].flatten(), 0).item(), abs=1e-6)
    assert (row.class_a, row.class_b) == (int(classes[1]), int(classes[3]))
    assert cc.thresholds(null) == {"tiny": pytest.approx(float(np.median(null.cosine)))}


def _metrics(cos, fooled, random_cos, random_fooled, e=1):
    n = len(cos)
    base = dict(model="m", image=[f"i{k}" for k in range(n)], e=e, n_iter=100, quantized=True)
    attack = pd.DataFrame({**base, "setting": "attack", "mode": "flip", "optimizer": "sign", "cam_cosine": cos,
                           "fooled": fooled})
    random = pd.DataFrame({**base, "setting": "random_frame", "mode": "random", "optimizer": "none",
                           "cam_cosine": random_cos, "fooled": random_fooled})
    return pd.concat([attack, random], ignore_index=True)


def test_joint_event_capability_and_prevalence_on_known_numbers():
    null = pd.DataFrame(dict(model="m", cosine=[0.2, 0.4, 0.5, 0.9]))  # tau = 0.45
    cos = [0.1, 0.3, 0.45, 0.8, 0.2, 0.9, 0.3, 0.95]
    fooled = [True, True, True, True, False, False, True, False]
    rows = cc.joint_rows(_metrics(cos, fooled, [0.99] * 7 + [0.4], [False] * 7 + [True]), null)
    attack = rows[rows.optimizer == "sign"]
    assert attack.tau.iloc[0] == pytest.approx(0.45)
    assert attack.completely_changed.tolist() == [1, 1, 1, 0, 1, 0, 1, 0]   # cosine <= tau: 0.45 counts
    assert attack.joint.tolist() == [1, 1, 1, 0, 0, 0, 1, 0]
    prev = cc.prevalence(rows, 1, "sign")
    assert (prev.value, (prev.low, prev.high)) == (0.5, pytest.approx(clopper_pearson(4, 8)))
    cap = cc.capability(rows, 1, "sign")
    assert cap.discordant == (4, 1) and cap.value == pytest.approx(3 / 8)  # the random frame's last image: joint
    assert cap.p_values(0.0)[0] == pytest.approx(binomtest(4, 5, 0.5, alternative="greater").pvalue)
    s = cc.joint_summary(rows).set_index("optimizer")
    assert s.loc["sign", "joint"] == 0.5 and s.loc[cc.RANDOM_FRAME, "joint"] == 1 / 8
    assert (s.loc["sign", "attack_only"], s.loc["sign", "random_only"]) == (4, 1)
    assert s.loc["sign", "p_value"] == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert s.loc["sign", "prevalence_p_fails"] == pytest.approx(binomtest(4, 8, 0.5, alternative="less").pvalue)
    assert "sign changed 62%, fooled and changed 50%" in cc.joint_lines(cc.joint_summary(rows))[0]


def test_the_tau_curve_states_the_joint_share_at_each_null_quantile():
    """At the criterion's quantile the curve is the joint summary; a stricter tau never counts more images."""
    null = pd.DataFrame(dict(model="m", cosine=[0.2, 0.4, 0.5, 0.9]))
    cos = [0.1, 0.3, 0.45, 0.8, 0.2, 0.9, 0.3, 0.95]
    fooled = [True, True, True, True, False, False, True, False]
    rows = cc.joint_rows(_metrics(cos, fooled, [0.99] * 7 + [0.4], [False] * 7 + [True]), null)
    curve = cc.tau_curve(rows, null, quantiles=(0.25, 0.5, 0.75))
    sign = curve[curve.optimizer == "sign"].set_index("quantile")
    assert sign.tau.tolist() == pytest.approx(list(np.quantile(null.cosine, [0.25, 0.5, 0.75])))
    assert sign.loc[0.5, "joint"] == cc.joint_summary(rows).set_index("optimizer").loc["sign", "joint"]
    assert sign.loc[0.5, "declared"] and not sign.loc[0.25, "declared"]
    assert sign.joint.is_monotonic_increasing  # tau 0.35: 3 of 8 (the fooled images of cosine 0.1, 0.3, 0.3)
    assert sign.loc[0.25, "joint"] == 3 / 8 and sign.loc[0.75, "joint"] == 4 / 8
    assert (sign.loc[0.25, "joint_low"], sign.loc[0.25, "joint_high"]) == pytest.approx(clopper_pearson(3, 8))


def test_joint_rows_take_the_other_optimisers_defaults_from_the_ablation():
    null = pd.DataFrame(dict(model="m", cosine=[0.5]))
    metrics = _metrics([0.4, 0.6], [True, True], [0.9, 0.9], [False, False])
    abl = pd.concat([metrics[metrics.setting == "attack"].assign(optimizer=o, variant=v)
                     for o, v in (("sign", "default"), ("apgd", "default"), ("apgd", "restarts"))])
    abl.loc[abl.optimizer == "apgd", "cam_cosine"] = 0.1
    rows = cc.joint_rows(metrics, null, abl)
    assert sorted(rows.optimizer.unique()) == ["apgd", cc.RANDOM_FRAME, "sign"]
    assert rows[rows.optimizer == "apgd"].joint.tolist() == [1, 1] and len(rows) == 6
