"""The report's sections beyond the three claims, from tables the experiments write."""
from __future__ import annotations

import numpy as np
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


def test_the_setting_names_the_images_a_recal_run_draws_from():
    """A run with a -recal variant draws its images from the 700 its BatchNorm statistics were not estimated on."""
    from ama.inputs.padding import RECAL_IMAGES

    plain = findings.setting_table({"models": ["lite0"], "n_iter": 100}, 8).set_index("")["this run"]["images"]
    recal = findings.setting_table({"models": ["lite0", "lite0-recal"], "n_iter": 100}, 60).set_index("")["this run"]
    assert plain.startswith("8 of the kit's 1000 labelled")
    assert recal["images"].startswith(f"60 of the {1000 - RECAL_IMAGES} labelled") and "-recal" in recal["images"]


def test_the_images_section_points_to_the_confidence_section_only_where_the_run_has_it(tmp_path):
    from ama.paths import ROOT

    source = ROOT / "results" / "reference" / "lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0" / "tables"
    (tmp_path / "tables").mkdir()
    accuracy = pd.read_csv(source / f"{TABLES.clean_accuracy}.csv")
    accuracy.to_csv(tmp_path / "tables" / f"{TABLES.clean_accuracy}.csv", index=False)
    assert "*Do confident images resist?*" not in findings.images_finding(tmp_path).sentence
    pd.read_csv(source / f"{TABLES.attack_by_confidence}.csv").to_csv(
        tmp_path / "tables" / f"{TABLES.attack_by_confidence}.csv", index=False)
    assert "*Do confident images resist?*" in findings.images_finding(tmp_path).sentence


def test_the_location_caption_gives_each_optimisers_range_apart(tmp_path):
    from ama.studies.location import _caption

    rows = pd.DataFrame(dict(model="lite0", e=1, n_images=60, optimizer=["sign", "sign", "apgd", "apgd"],
                             location=["ring8", "strip", "ring8", "strip"],
                             frame_minus_fooled=[-0.47, 0.05, -0.45, 0.15]))
    save_tables({TABLES.attack_location_summary: rows}, tmp_path)
    assert "in points: sign -47 to +5, apgd -45 to +15;" in _caption(tmp_path)


def test_claim_3s_location_sentence_counts_the_placements_holm_says_fool_more(tmp_path):
    """On the location reference: the paper's attack (sign) rows whose Holm verdict says the frame does not fool more,
    counted from verdicts.csv independently; None on a run without the location control."""
    from ama.paths import ROOT
    from ama.studies.location import location_sentence

    run = ROOT / "results" / "reference" / "lite0_imagenet_n60_e1_it100_lamb100_seed0"
    v = pd.read_csv(run / "tables" / f"{TABLES.verdicts}.csv")
    v = v[(v.table == TABLES.attack_location_summary) & v.verdict_of.str.contains(r"\(sign\)")]
    text = location_sentence(run)
    assert f"{(v.holm_verdict == 'does not hold').sum()} of {len(v)} other placements" in text
    assert "60 images" in text
    assert location_sentence(tmp_path) is None


def test_claim_2s_sensitivity_names_the_other_fill_closest_to_the_bar_and_its_interval_to_one_decimal():
    """On the evidence reference: the fill the claim is judged by (blur) is not repeated as what could change it; the
    other fill with the smallest median change is named, each bound to one decimal (10.3% is not printed as 10%)."""
    from ama.report.evidence import EVIDENCE_PROFILE, profile_reference
    from ama.stats.intervals import Estimate
    from ama.store.tables import read_table

    run = profile_reference(EVIDENCE_PROFILE)
    keep = read_table(run / "tables", TABLES.occlusion_keep_irf)
    fills, primary = claims.fill_changes(keep), claims.claim2_change(keep)[1]
    per_image = {f: keep[keep.fill == f].assign(c=lambda d: d.rel_change.abs()).groupby("image").c.median()
                 for f in fills}
    other = min((f for f in fills if f != primary), key=lambda f: per_image[f].median())
    claim = next(c for c in claims.collect_claims(run) if c.number == 2)
    text = findings._sensitivity(claim, run)
    e = Estimate.of(per_image[other], np.median)
    assert text == f"the fill: {other} gives {100 * e.value:.1f}% ({100 * e.low:.1f}% to {100 * e.high:.1f}%)"
    assert primary not in text
