"""The report's sections beyond the three claims, from tables the experiments write."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from ama import criteria
from ama.artifacts import TABLES
from ama.params import RunParams
from ama.report import findings, markdown as report
from ama.store.tables import save_tables
from ama.studies import claims, complete_change, experiments


def test_across_models_section_for_any_cnns(tmp_path, tiny_model, resnet18_64):
    """Two CNNs (random weights, as the paper's torchvision models are tested offline), each at its own input
    size: the section has one row per model and judges each claim per model from the tables (per image first, then
    over images)."""
    tiny_model.name, resnet18_64.name = "resnet50", "resnext50_32x4d"
    params = RunParams(models=("resnet50", "resnext50_32x4d"), e=(1, 2), n_iter=3, fast=True)
    per_model = []
    for model, size in ((tiny_model, 32), (resnet18_64, 64)):
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        tables = {}
        for name in ("occlusion", "receptive_fields", "attack"):  # the tables the section reads
            tables.update(experiments.run(name, model, x, ["a", "b"], params))
        tables[TABLES.cam_null] = complete_change.null_cosines(model, x, ["a", "b"])
        per_model.append(tables)
    tables = {k: pd.concat([t[k] for t in per_model], ignore_index=True) for k in per_model[0]}
    tables.update(experiments.summaries(tables))
    save_tables(tables, tmp_path)
    section = findings.across_models_finding(tmp_path)
    assert list(section.table.model) == ["resnet50", "resnext50_32x4d"]
    assert list(section.table["input, px"]) == ["32", "64"]
    assert section.sentence.startswith("2 models, each at its own input size: claim 1 holds for ")
    assert "nan" not in section.table.to_string()
    assert report.across_models_figure(tmp_path) == "figures/attack_across_models.png"
    assert (tmp_path / "figures" / "attack_across_models.png").is_file()
    table = claims.model_table(tmp_path)
    keep = tables["occlusion_keep_irf"]
    per_image = keep[keep.model == "resnet50"].assign(a=keep.rel_change.abs()).groupby("image").a.median()
    assert table.set_index("model").keep_irf_median_change["resnet50"] == pytest.approx(per_image.median())
    for model, row in table.set_index("model").iterrows():  # the verdict follows the interval and the threshold
        lo, hi = map(float, row.keep_irf_median_change_ci.split(" to "))
        expected = ("holds" if lo > criteria.KEEP_IRF_CHANGE else "does not hold" if hi < criteria.KEEP_IRF_CHANGE
                    else "inconclusive")
        assert row.claim2 == expected, model


def test_no_across_models_section_for_one_model(tmp_path, tiny_model, images32):
    tables = experiments.run("receptive_fields", tiny_model, images32[:1], ["a"], RunParams(e=(1,)))
    tables.update(experiments.summaries(tables))
    save_tables(tables, tmp_path)
    assert findings.across_models_finding(tmp_path) is None and report.across_models_figure(tmp_path) is None
