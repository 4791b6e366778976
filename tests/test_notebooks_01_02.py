"""Notebooks 01 and 02 as `make reproduce FAST=1` ran them (the shared run of conftest)."""
from __future__ import annotations

import nbformat
import pandas as pd
import pytest
from conftest import FAST_MODELS

from ama.paths import ROOT


@pytest.mark.parametrize("name", ["01_occlusion", "02_receptive_field_misalignment", "03_adversarial_marginal_attack",
                                  "04_report"])
def test_notebooks_committed_clean_with_tagged_parameters(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "ama"
    for param in ("out_dir",) if name == "04_report" else ("params", "out_dir", "sharded"):
        assert f"{param} = " in code[0].source


@pytest.mark.slow
def test_notebook_01_tables_and_figures(fast_run):
    tables, figures = fast_run.dir / "tables", fast_run.dir / "figures"
    for stem in ("cam_pipeline", "occlusion_keep_occlude_irf", "occlusion_margin_similarity", "occlusion_margin_delta",
                 "occlusion_sliding_patch"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000 and (figures / f"{stem}.pdf").is_file(), stem
    keep_all = pd.read_csv(tables / "occlusion_keep_irf.csv")
    assert list(keep_all.model.unique()) == ["lite0", "lite1"]
    keep = keep_all[keep_all.model == "lite0"]
    assert keep.image.nunique() == 2 and set(keep.fill) == {"mean", "black"}
    assert set(keep.cell_kind) == {"centre", "edge", "corner"} and len(keep) == 2 * 2 * 3
    assert keep.occluded_share.between(0, 1).all() and keep.rel_change.abs().max() > 0
    margin = pd.read_csv(tables / "occlusion_margin.csv").query("model == 'lite0'")
    assert len(margin) == 2 * 2 * 2 and margin.cam_cosine.between(-1, 1 + 1e-6).all()
    cells = pd.read_csv(tables / "occlusion_margin_cells.csv")
    assert (cells.groupby("model").size() == len(margin) * pd.Series({"lite0": 49, "lite1": 64})).all()
    # one keep-IRF row again by hand: lite0, the first image, everything outside the centre cell's IRF filled black
    import torch

    import ama
    from ama.kernels import receptive_field as rf

    model = ama.load_model("lite0", device="cpu")
    row = keep[(keep.fill == "black") & (keep.cell_kind == "centre")].iloc[0]
    x = ama.load_images(f"data/imagenet/{row.image}.jpg", model).images  # the run's image, by its name
    outside = ~rf.irf_support(rf.implicit_receptive_field((7, 7), (224, 224)))[24]
    with torch.no_grad():
        clean = ama.compute_cam(model, x)
        raw = ama.raw_cam(model, torch.where(outside, torch.zeros_like(x), x), clean.target)
    span = clean.raw.max() - clean.raw.min()
    assert row.rel_change == pytest.approx(((raw - clean.raw)[0, 3, 3] / span).item(), abs=1e-4)


@pytest.mark.slow
def test_notebook_02_tables_and_figures(fast_run):
    tables, figures = fast_run.dir / "tables", fast_run.dir / "figures"
    for stem in ("erf_vs_irf", "misalignment_by_cell_kind", "margin_mass_ratio", "receptive_field_sizes"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000, stem
    table = pd.read_csv(tables / "misalignment.csv")
    assert table.groupby("model").size().to_dict() == {"lite0": 2 * 49, "lite1": 2 * 64}
    assert table.erf_mass_outside_irf.between(0, 1).all()
    assert {f"margin_mass_ratio_e{e}" for e in (1, 2)} <= set(table.columns)  # FAST: the two smallest e
    summary = pd.read_csv(tables / "misalignment_summary.csv")
    assert set(summary.cell_kind) == {"all", "centre", "corner", "edge", "interior"}
    sizes = pd.read_csv(tables / "receptive_field_sizes.csv")
    assert list(sizes.input_px) == [224, 240] and list(sizes.grid) == ["7 x 7", "8 x 8"]
    assert (sizes.theoretical_rf_px > sizes.input_px).all() and (sizes.irf_support_px < sizes.erf90_px).all()
    ups = pd.read_csv(tables / "misalignment_upsampling.csv")
    assert ups.upsampling.nunique() == 4 and ups.model.nunique() == len(FAST_MODELS)
