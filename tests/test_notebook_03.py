"""Notebook 03 runs under papermill in fast mode and writes sane tables and figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ama.paths import ROOT

NOTEBOOK = ROOT / "notebooks" / "03_adversarial_marginal_attack.ipynb"


def test_notebook_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    for name in ("params", "out_dir", "sharded"):
        assert f"{name} = " in code[0].source


@pytest.mark.slow
def test_notebook_03_fast(fast_run):
    """Notebook 03 as `make reproduce FAST=1` ran it under papermill (the shared run of conftest)."""
    tables, figures = fast_run.dir / "tables", fast_run.dir / "figures"
    for stem in ("attack_examples", "attack_examples_1", "attack_examples_by_e", "attack_metrics_vs_e",
                 "attack_history", "attack_keep_example", "attack_targeted_example", "attack_random_baseline"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000, stem
    # a figure resting on one image is not drawn: the ingredient study reports one image here, and no logistic fit
    assert not (figures / "attack_ingredients.png").exists() and not (figures / "attack_confidence.png").exists()
    # the ingredient study: each model's 2 images, one tunes and one reports; every variant once per image
    study = pd.read_csv(tables / "attack_ingredients.csv")
    assert study.groupby("model").image.nunique().eq(2).all() and set(study.half) == {"tune", "report"}
    assert not study.duplicated(["model", "image", "variant", "seed"]).any() and study.quantized.all()
    ingredients = pd.read_csv(tables / "attack_ingredients_summary.csv")
    assert ingredients.groupby("model").chosen.sum().eq(1).all() and ingredients.variant.nunique() == 7
    rows_all = pd.read_csv(tables / "attack_metrics.csv")
    assert list(rows_all.model.unique()) == ["lite0", "lite1"]
    rows = rows_all[rows_all.model == "lite0"]
    assert set(rows.setting) == {"attack", "random_frame"} and set(rows.e) == {1, 2}
    assert rows.image.nunique() == 2 and set(rows["mode"]) == {"flip", "keep", "random"}
    assert rows[["cam_cosine", "top20_iou", "changed_share"]].apply(lambda c: c.between(-1, 1)).all().all()
    e1 = rows[(rows.e == 1) & (rows.quantized)]
    assert (e1.changed_pixels <= 892).all() and (e1.changed_pixels > 800).all()  # only the 1-pixel frame
    summary = pd.read_csv(tables / "attack_summary.csv").query("model == 'lite0'")
    need = {"model", "e", "n_iter", "mode", "setting", "quantized", "n_images", "fooling_rate", "cam_cosine",
            "random_fooling_rate", "random_cam_cosine"}
    assert need <= set(summary.columns)
    assert len(summary) == 2 * 2 * 2 + 2  # e x quantized x (flip, random), and keep at e = 1 only
    flip = summary[(summary["mode"] == "flip") & summary.quantized]
    assert (flip.cam_cosine < flip.random_cam_cosine).all()  # even 5 iterations beat the random frame
    assert (tables / "attack_summary.md").read_text().count("\n") == 2 * len(summary) + 2  # two models
    hist = pd.read_csv(tables / "attack_history.csv").query("model == 'lite0'")
    assert set(hist.iteration) == set(range(6))
    targets = pd.read_csv(tables / "attack_targets.csv")
    assert len(targets) == 2 * 2 * 2 and set(targets.target) == {"glyph X", "glyph L"}  # models x images x glyphs
    targeted = pd.read_csv(tables / "attack_targeted.csv")
    assert targeted.target_cosine.notna().all() and set(targeted.e) == {1, 2}
    assert set(targeted.optimizer) == {"sign", "apgd", "random frame"}
    assert len(targeted) == targets.attacked.sum() * 2 * 3 * 2  # e x (sign, apgd, random frame) x quantised
    summary = pd.read_csv(tables / "attack_targeted_summary.csv")
    assert set(summary.model) == {"lite0", "lite1"} and summary.reached.between(0, 1).all()
    null = pd.read_csv(tables / "cam_null.csv")
    assert null.groupby("model").size().eq(190).all() and (null.image_a != null.image_b).all()  # FAST: 20 images
    joint = pd.read_csv(tables / "attack_complete_change.csv")
    assert set(joint.model) == {"lite0", "lite1"} and (joint.joint <= joint.completely_changed + 1e-9).all()
    assert np.allclose(joint.tau, joint.model.map(null.groupby("model").cosine.median()), atol=1e-5)  # CSV digits
    # the saved 8-bit image gives the table's 8-bit prediction again
    import torch

    import ama
    from ama.inputs.images import load_image
    from torchvision.transforms.functional import to_tensor

    model = ama.load_model("lite0", device="cpu")
    row = rows[(rows.e == 1) & rows.quantized & (rows.setting == "attack") & (rows["mode"] == "flip")].iloc[0]
    png = fast_run.dir / "adversarial" / "lite0" / "sign_e1_it5" / f"{row.image}.png"
    with torch.no_grad():
        logits = model(load_image(png, transform=to_tensor))
    assert int(logits.argmax()) == row.adv_class
    assert float(torch.softmax(logits, 1).max()) == pytest.approx(row.adv_conf, abs=1e-4)
