"""The attack's optimisers on a tiny seeded model: the reference unchanged, the frame contract, the budget, the best
iterate, determinism, the ablation table."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import ama
from ama.attack import marginal as attack, optimizers
from ama.attack.marginal import quantize, start_noise
from ama.attack.result import OptimizerKey
from ama.geometry import frame_mask
from ama.kernels.cam import compute_cam
from ama.studies import ablation

OPTIMIZERS = optimizers.NAMES


@pytest.fixture
def x8(images32):
    """The seeded images on the 8-bit grid (as loaded from a file)."""
    return quantize(images32)


def reference_loop(model, x, e, n_iter, lamb, seed):
    """The reference algorithm written out plainly for a batch (SCIENCE.md section 4), default memory layout: the
    unclipped iterate enters the image clamped (``tests/original_loop.py`` is the 2021 code itself, one image)."""
    B, _, H, W = x.shape
    m = torch.zeros(H, W, dtype=torch.bool)
    m[:e], m[-e:], m[:, :e], m[:, -e:] = True, True, True, True
    with torch.no_grad():
        clean = compute_cam(model, x)
    c, M_x = clean.target, clean.cam
    n = torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(seed)).expand_as(x).clone()
    for _ in range(n_iter):
        n.requires_grad_(True)
        out = compute_cam(model, torch.where(m, n.clamp(0, 1), x), target=c)
        held = out.logits.argmax(1) == c
        loss = F.cross_entropy(out.logits, c, reduction="none") * held + lamb * (
            1 - F.cosine_similarity(out.cam.flatten(1), M_x.flatten(1), dim=1, eps=1e-8))
        (g,) = torch.autograd.grad(loss.sum(), n)
        with torch.no_grad():
            n = n.detach() + g.sign() / n_iter
    return torch.where(m, n.clamp(0, 1), x)


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_default_optimizer_is_the_reference_bit_for_bit(tiny_model, x8, seed, monkeypatch):
    monkeypatch.setattr(attack, "CPU_LAYOUT", torch.contiguous_format)  # the plain loop's layout
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=7, seed=seed)
    assert r.params.optimizer == "sign" and r.params.select == "last"
    assert torch.equal(r.adv, reference_loop(tiny_model, x8, 2, 7, 100.0, seed))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_frame_only_change_in_range(tiny_model, x8, optimizer):
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=8, optimizer=optimizer, restarts=1, select="best")
    off = ~frame_mask(32, 2)
    for adv in (r.adv, r.adv_q):
        assert torch.equal(adv[:, :, off], x8[:, :, off])
        assert adv.min() >= 0 and adv.max() <= 1
    assert (r.adv[:, :, ~off] != x8[:, :, ~off]).float().mean() > 0.5
    assert torch.equal(r.adv_q, quantize(r.adv_q))


def count_passes(model):
    """Wrap ``model.features``: record ``(batch, grad enabled)`` per forward call."""
    calls = []
    features = model.features
    model.features = lambda z: (calls.append((z.shape[0], torch.is_grad_enabled())), features(z))[1]
    return calls


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("restarts", [0, 2])
def test_budget_counts_forward_backward_passes_restarts_included(tiny_model, x8, optimizer, restarts):
    if optimizer == "sign" and restarts:
        kwargs = dict(select="best")
    else:
        kwargs = {}
    calls = count_passes(tiny_model)
    ama.marginal_attack(tiny_model, x8, e=1, n_iter=10, optimizer=optimizer, restarts=restarts, **kwargs)
    with_grad = [b for b, g in calls if g]
    assert with_grad == [4] * 10  # n_iter passes of the whole batch: 10 forward+backward passes per image
    assert len(calls) == 10 + 1 + 2  # plus the clean pass and the two evaluations (float, 8-bit), no grad


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_same_seed_same_result_per_optimizer(tiny_model, x8, optimizer):
    a = ama.marginal_attack(tiny_model, x8, e=1, n_iter=6, seed=3, optimizer=optimizer)
    b = ama.marginal_attack(tiny_model, x8, e=1, n_iter=6, seed=3, optimizer=optimizer)
    c = ama.marginal_attack(tiny_model, x8, e=1, n_iter=6, seed=4, optimizer=optimizer)
    assert torch.equal(a.adv, b.adv) and torch.equal(a.adv_q_logits, b.adv_q_logits)
    assert not torch.equal(a.adv, c.adv)
    single = ama.marginal_attack(tiny_model, x8[1:2], e=1, n_iter=6, seed=3, optimizer=optimizer)
    if optimizer == "adam":  # no sign(): a batch's other rounding of the gradient moves the frame by float noise
        assert torch.allclose(single.adv[0], a.adv[1], atol=1e-4)
    else:  # an image's result does not depend on its batch
        assert torch.equal(single.adv[0], a.adv[1])


def rank(success, loss):
    """Sortable key of the attack's judgement: success first, then the objective."""
    return success.float() * 1e6 + loss


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("mode", ["flip", "keep"])
def test_best_iterate_never_worse_than_the_last(tiny_model, x8, optimizer, mode):
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=12, optimizer=optimizer, mode=mode, select="best",
                            restarts=1, return_history=True)
    h = r.history
    assert h["loss"].shape == (13, 4)
    held = h["clean_class_held"]
    success = ~held if mode == "flip" else held
    key = rank(success, h["loss"])
    returned, passes = key[-1], key[:-1]
    assert (returned >= passes[-1] - 1e-4).all()          # never worse than the last iterate
    assert torch.allclose(returned, passes.max(0).values, atol=1e-4)  # the best one seen (8-bit, as judged)
    kept = r.adv_q_class == r.clean_class  # the last row is the returned 8-bit image, as judged
    assert torch.equal(held[-1], kept)


def test_apgd_beats_the_reference_on_the_tiny_model(tiny_model, x8):
    ref = ama.marginal_attack(tiny_model, x8, e=2, n_iter=20).metrics.query("quantized").cam_cosine.mean()
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=20, optimizer="apgd")
    assert r.metrics.query("quantized").cam_cosine.mean() < ref


@pytest.mark.parametrize("cam_loss, label_loss", [("normalized", "ce"), ("raw", "ce"), ("normalized", "margin"),
                                                   ("raw", "margin")])
@pytest.mark.parametrize("mode", ["flip", "keep"])
def test_first_pass_objective_is_the_written_formula(tiny_model, x8, cam_loss, label_loss, mode):
    """The objective of the first pass (the seeded start seen through 8-bit, select="best") computed by hand:
    label term (CE or logit margin, zeroed once the label flipped; keep: negated) + lamb (1 - cos) of the chosen CAM
    view (normalised maps, or the ReLU'd raw ones)."""
    lamb = 3.0
    r = ama.marginal_attack(tiny_model, x8, e=2, n_iter=2, lamb=lamb, mode=mode, optimizer="apgd", cam_loss=cam_loss,
                            label_loss=label_loss, select="best", return_history=True)
    with torch.no_grad():
        clean = compute_cam(tiny_model, x8)
        z = torch.where(frame_mask(32, 2), quantize(start_noise(x8, 0)), x8)
        out = compute_cam(tiny_model, z, target=clean.target)
    c, logits = clean.target, out.logits
    held = logits.argmax(1) == c
    if label_loss == "ce":
        label = F.cross_entropy(logits, c, reduction="none")
        label = label * held if mode == "flip" else -label
    else:
        z_c = logits[torch.arange(4), c]
        other = torch.stack([torch.cat([row[:k], row[k + 1:]]).max() for row, k in zip(logits, c)])
        label = (other - z_c) * held if mode == "flip" else -torch.relu(other - z_c)
    view = (lambda o: o.cam) if cam_loss == "normalized" else (lambda o: torch.relu(o.raw))
    cos = F.cosine_similarity(view(out).flatten(1), view(clean).flatten(1), dim=1)
    torch.testing.assert_close(r.history["loss"][0], label + lamb * (1 - cos), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(r.history["cam_cosine"][0], cos, atol=1e-5, rtol=1e-5)
    assert torch.equal(r.history["clean_class_held"][0], held)
    assert (r.params.cam_loss, r.params.label_loss) == (cam_loss, label_loss)


def test_apgd_checkpoints_follow_the_schedule():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (SCIENCE.md section 6) of 100 iterations
    assert optimizers.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_evaluations_describe_each_image_set_once(tiny_model, x8):
    r = ama.marginal_attack(tiny_model, x8, e=1, n_iter=2)
    assert set(r.evaluations) == {"clean", "adv", "adv_q"}
    q = r.evaluations["adv_q"]
    assert r.adv_q is q.images and r.adv_q_cam is q.cam and torch.equal(r.adv_q_class, q.logits.argmax(1))
    assert r.clean_names == [tiny_model.class_name(int(k)) for k in r.clean_class]
    assert r.evaluated(quantized=False) is r.evaluations["adv"]
    with pytest.raises(AttributeError, match="no attribute 'adv_q_colour'"):
        r.adv_q_colour
    assert torch.equal(copy.deepcopy(r).adv, r.adv)


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="lbfgs"), r"unknown optimizer 'lbfgs'; use one of sign, apgd, adam"),
    (dict(optimizer="apgd", restarts=-1), r"restarts must be a non-negative integer, got -1"),
    (dict(restarts=1), r"restarts need select='best'"),
    (dict(optimizer="adam", cam_loss="l2"), r"unknown cam_loss 'l2'; use one of normalized, raw"),
    (dict(optimizer="adam", label_loss="hinge"), r"unknown label_loss 'hinge'; use one of ce, margin"),
    (dict(optimizer="apgd", restarts=3, n_iter=3), r"restarts=3 leave fewer than one pass per run"),
])
def test_invalid_optimizer_settings(tiny_model, x8, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ama.marginal_attack(tiny_model, x8, **{"n_iter": 2, **kwargs})


def test_ablation_table_has_every_setting_once(tiny_model, x8):
    names = list("abcd")
    table = ablation.run_ablation(tiny_model, x8, names, e=(1,), budgets=(3, 5),
                                            optimizer_names=("sign", "apgd"), progress=False)
    runs = table[["optimizer", "variant", "e", "n_iter", "mode"]].drop_duplicates()
    assert len(table) == len(runs) * 4 * 2  # images x quantized per run
    assert sorted(runs[runs.variant == "default"].n_iter) == [3, 3, 5, 5]
    assert set(runs[runs.variant != "default"].n_iter) == {5}  # ingredients at the largest budget only
    assert set(runs[runs.optimizer == "sign"].variant) == {"default", "select=best", "restarts=1", "cam_loss=raw",
                                                            "label_loss=margin"}
    assert set(runs[runs.optimizer == "apgd"].variant) == {"default", "select=last", "restarts=1", "cam_loss=raw",
                                                            "label_loss=ce"}
    ref = ama.marginal_attack(tiny_model, x8, e=1, n_iter=5, names=names).metrics
    row = table[(table.optimizer == "sign") & (table.variant == "default") & (table.n_iter == 5)]
    assert row.cam_cosine.tolist() == ref.cam_cosine.tolist()
    s = ablation.ablation_summary(table)
    one = s[(s.optimizer == "sign") & (s.variant == "default") & (s.n_iter == 5) & s.quantized].iloc[0]
    q = ref[ref.quantized]
    assert one.fooling_rate == q.fooled.mean() and abs(one.cam_cosine - q.cam_cosine.mean()) < 1e-6
    assert one.n_images == 4
    with pytest.raises(ValueError, match="unknown ingredient 'momentum'"):
        ablation.ingredient_variants(["apgd"], ["momentum"])


def test_report_states_the_strongest_result_beside_the_reference(tmp_path):
    import pandas as pd

    from ama.report.findings import strength_finding

    rows = []
    for opt, fooled, cos in (("sign", [True, False], [0.9, 0.8]), ("apgd", [True, True], [0.4, 0.5])):
        for i in range(2):
            rows.append(dict(image=str(i), model="m", mode="flip", optimizer=opt, variant="default", e=1, n_iter=100,
                             quantized=True, fooled=fooled[i], cam_cosine=cos[i]))
            rows.append(dict(image=str(i), model="m", mode="keep", optimizer=opt, variant="default", e=1, n_iter=100,
                             quantized=True, fooled=not fooled[i], cam_cosine=cos[i] + 0.2))
    (tmp_path / "tables").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "tables" / "attack_ablation.csv", index=False)
    found = strength_finding(tmp_path)
    assert "APGD fools the most at e = 1: 100% against 50% for the paper's sign steps" in found.sentence
    rows = found.table.set_index(["goal", "optimiser"])["e = 1: fooled / CAM cosine"]
    assert rows[("change the label", "APGD")] == "100% / 0.45"
    assert rows[("change the label", "sign (the paper's)")] == "50% / 0.85"
    assert rows[("keep the label", "APGD")] == "0% / 0.65"
    assert strength_finding(tmp_path / "nothing") is None


@pytest.mark.slow
def test_notebook_03_fast_writes_the_ablation(fast_run):
    """The ablation cells of notebook 03 in `make reproduce FAST=1` (2 images, 5 passes)."""
    import pandas as pd

    rows = pd.read_csv(fast_run.dir / "tables" / "attack_ablation.csv")
    assert set(rows.optimizer) == set(optimizers.NAMES) and set(rows.n_iter) == {5}
    assert rows.image.nunique() == 2 and set(rows.e) == {1}
    assert {"default", "cam_loss=raw", "label_loss=margin", "restarts=1"} <= set(rows.variant)
    assert (fast_run.dir / "figures" / "attack_ablation.png").stat().st_size > 10_000
    assert "## The stronger optimisers at the same budget" in (fast_run.dir / "REPORT.md").read_text()


# --- the optimiser's passes on a BatchNorm-folded copy --------------------------------------
def test_folded_passes_report_the_models_own_outputs(x8):
    from conftest import make_bn_model

    model = make_bn_model()
    a = ama.marginal_attack(model, x8, e=2, n_iter=6, fold_bn=True)
    b = ama.marginal_attack(model, x8, e=2, n_iter=6, fold_bn=False)
    assert torch.equal(a.clean_logits, b.clean_logits)  # clean outputs: the model itself, in both
    changed = (a.adv_q != b.adv_q).float().mean()
    assert changed < 0.01  # the same optimisation, float rounding aside
    with torch.no_grad():  # the reported adversarial outputs are the model's, not the folded copy's
        logits = model(a.adv_q.contiguous(memory_format=torch.channels_last))
    assert torch.equal(logits, a.adv_q_logits)


def test_a_fold_that_changes_the_function_is_refused_with_a_warning(x8):
    from conftest import make_bn_model

    model = make_bn_model(pre_activation=True)
    with pytest.warns(UserWarning, match="folding BatchNorm changed the logits"):
        a = ama.marginal_attack(model, x8, e=2, n_iter=4)
    b = ama.marginal_attack(model, x8, e=2, n_iter=4, fold_bn=False)
    assert torch.equal(a.adv, b.adv)


def test_ablation_reuses_given_results_and_adds_keep_mode(tiny_model, x8):
    names = list("abcd")
    ref = ama.marginal_attack(tiny_model, x8, e=1, n_iter=5, names=names)
    results = {OptimizerKey.default("sign", 1, 5): ref}
    calls = []
    features = tiny_model.features
    tiny_model.features = lambda z: (calls.append(z.shape[0]), features(z))[1]
    table = ablation.run_ablation(tiny_model, x8, names, e=(1,), budgets=(5,),
                                            optimizer_names=("sign", "apgd"), ingredients=(), keep_e=[1],
                                            keep_optimizers=["apgd"], results=results, progress=False)
    runs = set(map(tuple, table[["optimizer", "mode"]].drop_duplicates().values))
    assert runs == {("sign", "flip"), ("apgd", "flip"), ("apgd", "keep")}
    assert len(calls) == 2 * (5 + 3)  # two new runs (passes, clean, two evaluations); the sign run was reused
    assert set(results) == {OptimizerKey.default("sign", 1, 5), OptimizerKey.default("apgd", 1, 5),
                            OptimizerKey.default("apgd", 1, 5, "keep")}
    sign = table[(table.optimizer == "sign")]
    assert sign.cam_cosine.tolist() == ref.metrics.cam_cosine.tolist()


def test_ablation_narrows_the_widths_per_optimizer(tiny_model, x8):
    table = ablation.run_ablation(tiny_model, x8, list("abcd"), e=(1, 2), budgets=(3,),
                                            optimizer_names=("sign", "adam"), ingredients=(),
                                            optimizer_e={"adam": [1]}, progress=False)
    widths = table.groupby("optimizer").e.unique()
    assert sorted(widths["sign"]) == [1, 2] and list(widths["adam"]) == [1]


def test_ieee_fp32_sets_and_restores_the_cuda_precision_knobs():
    from ama.kernels.cam_model import ieee_fp32

    knobs = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    before = [k.fp32_precision for k in knobs]
    with ieee_fp32():
        assert [k.fp32_precision for k in knobs] == ["ieee", "ieee"]
    assert [k.fp32_precision for k in knobs] == before
    with pytest.raises(KeyError, match="inside"), ieee_fp32():
        raise KeyError("inside")
    assert [k.fp32_precision for k in knobs] == before
