"""The documents' generated blocks (ama.report.evidence) on small hand-made runs: the optimiser table's rates, intervals
and paired gain against a hand computation, the wall times' wording."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from scipy.stats import beta, binomtest

from ama.report import evidence


def ablation_rows(fooled: dict, cosine: dict, n_iter=100) -> pd.DataFrame:
    """``attack_ablation`` rows (flip, default variant, float and 8-bit) for ``{(optimizer, e): [0/1 per image]}``."""
    rows = []
    for (opt, e), outcomes in fooled.items():
        for k, (f, c) in enumerate(zip(outcomes, cosine[opt, e])):
            for quantized in (False, True):
                rows.append(dict(image=f"i{k}", model="tiny", e=e, mode="flip", optimizer=opt, variant="default",
                                 n_iter=n_iter, quantized=quantized, fooled=bool(f) if quantized else True,
                                 cam_cosine=c if quantized else 0.0))
    return pd.DataFrame(rows)


def test_the_optimizer_table_is_the_8_bit_rates_with_exact_intervals_and_the_paired_gain(tmp_path):
    fooled = {("sign", 1): [1, 0, 0, 0], ("apgd", 1): [1, 1, 1, 0]}
    cosine = {("sign", 1): [0.9, 0.8, 0.7, 0.6], ("apgd", 1): [0.5, 0.5, 0.5, 0.5]}
    (tmp_path / "tables").mkdir()
    ablation_rows(fooled, cosine).to_csv(tmp_path / "tables" / "attack_ablation.csv", index=False)
    table = evidence.optimizer_table(tmp_path)
    low, high = beta.ppf(0.025, 1, 4), beta.ppf(0.975, 2, 3)  # Clopper-Pearson of 1 of 4, by hand
    assert f"| `sign` (the reference) | 25% ({100 * low:.0f}-{100 * high:.0f}%) / 0.75 (" in table
    assert "| `apgd` | 75% (" in table and "/ 0.50 (0.50-0.50)" in table
    p = binomtest(2, 2).pvalue  # the images where only apgd fools: 2 vs 0
    assert f"+50 points (" in table and f"2 vs 0 images, exact p = {p:.2g})" in table
    assert table.endswith("4 images, 100 passes per image.")


def test_the_optimizer_table_reads_the_runs_largest_budget(tmp_path):
    rows = pd.concat([ablation_rows({("sign", 1): [0, 0], ("apgd", 1): [0, 0]},
                                    {("sign", 1): [0.9, 0.9], ("apgd", 1): [0.9, 0.9]}, n_iter=25),
                      ablation_rows({("sign", 1): [1, 1], ("apgd", 1): [1, 1]},
                                    {("sign", 1): [0.1, 0.1], ("apgd", 1): [0.1, 0.1]})])
    (tmp_path / "tables").mkdir()
    rows.to_csv(tmp_path / "tables" / "attack_ablation.csv", index=False)
    assert "| `sign` (the reference) | 100% (" in evidence.optimizer_table(tmp_path)


def test_wall_times_in_minutes_and_their_sum(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": {
        "01_occlusion": {"wall_s": 317.2}, "03_adversarial_marginal_attack": {"wall_s": 3300.0},
        "04_report": {"wall_s": 22.4}, "05_beyond_the_paper": {"wall_s": None}}}))
    assert evidence.wall_times(tmp_path) == ("01_occlusion 5 min 17 s, 03_adversarial_marginal_attack 55 min 0 s, "
                                             "04_report 22 s (together 1 h 0 min 40 s)")


def test_a_page_without_the_blocks_markers_is_refused():
    with pytest.raises(ValueError, match="no '<!-- evidence-run: start -->' line"):
        evidence.replace_block("no markers here", "evidence-run", "x")


def test_every_block_names_a_page_of_the_kit():
    assert all((evidence.ROOT / page).is_file() for page, _ in evidence.BLOCKS)
