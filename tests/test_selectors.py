"""The attack tables' selections, and flags read back as bool."""
from __future__ import annotations

import pandas as pd
import pytest

from ama.stats import rows as selectors
from ama.store import tables as results

TABLE = pd.DataFrame(dict(
    setting=["attack"] * 6 + ["random_frame"] * 2,
    mode=["flip", "flip", "flip", "flip", "keep", "keep", "random", "random"],
    quantized=[True, False, True, True, True, False, True, False],
    n_iter=[100, 100, 10, 100, 100, 100, 0, 0],
    e=[1, 1, 1, 2, 1, 1, 1, 1]))


def test_selections_take_the_rows_they_name():
    assert selectors.eight_bit(TABLE).index.tolist() == [0, 2, 3, 4, 6]
    assert selectors.attack_rows(TABLE).index.tolist() == [0, 2, 3]
    assert selectors.attack_rows(TABLE, "keep").index.tolist() == [4]
    assert selectors.original_attack(TABLE).index.tolist() == [0, 3]  # flip, 8-bit, the largest n_iter, every e


def test_a_table_is_read_back_with_its_flags_as_bool(tmp_path):
    TABLE.to_csv(tmp_path / "attack_metrics.csv", index=False)
    back = results.read_table(tmp_path, "attack_metrics")
    assert back.quantized.dtype == bool and selectors.original_attack(back).index.tolist() == [0, 3]
    assert results.read_table(tmp_path, "absent") is None
    rates = pd.DataFrame(dict(model=["a", "b"], top1=[0.8, None]))  # a rate, not a flag, may be empty
    rates.to_csv(tmp_path / "clean_accuracy.csv", index=False)
    assert results.read_table(tmp_path, "clean_accuracy").top1.isna().sum() == 1


def test_a_damaged_flag_is_refused_not_read_as_true(tmp_path):
    damaged = TABLE.astype({"quantized": object})
    damaged.loc[1, "quantized"] = None  # an empty cell: astype(bool) would take the row as 8-bit
    damaged.to_csv(tmp_path / "attack_metrics.csv", index=False)
    with pytest.raises(ValueError, match="column quantized is True/False with empty cells.*run the notebook"):
        results.read_table(tmp_path, "attack_metrics")
