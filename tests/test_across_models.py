"""The study across_models: the first network against each other, paired per image (McNemar exact), its family and
its power plan."""
from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from ama.params import RunParams
from ama.studies.across_models import STUDY, model_tests, networks


def _ablation(fooled: dict[tuple[str, str], list[int]], e: int = 1) -> pd.DataFrame:
    """Rows of ``attack_ablation`` as the grid writes them: ``fooled[model, optimizer]`` per image, 8-bit and float,
    flip, default, 100 passes; a 50-pass row and a keep-mode row that must be ignored."""
    rows = []
    for (model, optimizer), outcomes in fooled.items():
        for k, f in enumerate(outcomes):
            for quantized in (True, False):
                base = dict(image=f"im{k}", model=model, optimizer=optimizer, e=e, variant="default",
                            quantized=quantized, fooled=bool(f))
                rows.append({**base, "mode": "flip", "n_iter": 100})
                rows.append({**base, "mode": "flip", "n_iter": 50, "fooled": not f})
                rows.append({**base, "mode": "keep", "n_iter": 100, "fooled": not f})
    return pd.DataFrame(rows)


def test_the_first_network_against_each_other_paired_per_image_with_mcnemars_exact_test():
    a = [1] * 12 + [0] * 28
    b = [0] * 12 + [0] * 28
    c = [1] * 10 + [0, 0] + [1, 1] + [0] * 26
    table = _ablation({("lite0", "apgd"): a, ("lite2", "apgd"): b, ("lite1", "apgd"): c,
                       ("lite0", "sign"): b, ("lite2", "sign"): b, ("lite1", "sign"): b})
    tests = model_tests(table, ["lite0", "lite1", "lite2"]).set_index(["other", "optimizer"])
    assert set(tests.index) == {("lite1", "apgd"), ("lite1", "sign"), ("lite2", "apgd"), ("lite2", "sign")}
    row = tests.loc[("lite2", "apgd")]
    assert (row.first_only, row.other_only, row.n_images) == (12, 0, 40)
    assert row.p_value == pytest.approx(binomtest(12, 12, 0.5).pvalue)
    assert row.first_minus_other == pytest.approx(12 / 40) and row.low > 0 and row.verdict == "holds"
    row = tests.loc[("lite1", "apgd")]
    assert (row.first_only, row.other_only) == (2, 2) and row.verdict == "inconclusive"
    assert tests.loc[("lite2", "sign")].p_holds == 1.0  # no image differs: no evidence either way


def test_padding_variants_and_recalibrated_models_are_another_question():
    assert networks(["lite0", "lite0-zero-pad", "lite1", "lite0-recal", "lite0-reflect-pad-recal"]) == ["lite0", "lite1"]
    one = _ablation({("lite0", "apgd"): [1, 0], ("lite0-zero-pad", "apgd"): [0, 0]})
    assert model_tests(one, ["lite0", "lite0-zero-pad"]).empty


def test_the_models_profile_gives_the_study_the_images_its_power_plan_asks():
    assert STUDY.power.n_images() == 40 and STUDY.always
    assert RunParams.from_strings("models").n_images >= STUDY.power.n_images()
    assert len(networks(RunParams.from_strings("models").models)) == 3  # 2 others x 2 optimisers: the plan's family
    assert STUDY.power.family == 2 * 2


def test_an_undecided_comparison_says_how_many_images_its_observed_effect_needs(tmp_path):
    """The finding names the undecided comparison with the smallest p and the images its observed discordant shares
    need for 80% power at Holm's strictest level in the family (checked against ama.stats.power directly)."""
    from ama.artifacts import TABLES
    from ama.stats.power import mcnemar_n
    from ama.store.tables import save_tables
    from ama.studies.across_models import across_models_finding

    a, b = [1] * 5 + [0] * 35, [0] * 5 + [1] + [0] * 34
    table = _ablation({("lite0", "apgd"): a, ("lite2", "apgd"): b, ("lite0", "sign"): b, ("lite2", "sign"): b})
    save_tables({TABLES.attack_models_tests: model_tests(table, ["lite0", "lite2"])}, tmp_path)
    sentence = across_models_finding(tmp_path).sentence
    assert "Holm decides none of lite0's 2 comparisons" in sentence
    need = mcnemar_n(5 / 40, 1 / 40, 0.05 / 2)
    assert (f"lite0 vs lite2 with apgd (5 images fooled only on lite0, 1 only on lite2); 80% power needs about {need} "
            "such images") in sentence
