"""The claims' criteria: each number once, and the report's sentences written from it."""
from __future__ import annotations

import pytest

from ama import criteria


def test_pct_writes_a_whole_percentage():
    assert criteria.pct(0.1) == "10%" and criteria.pct(0.5) == "50%" and criteria.pct(0.01) == "1%"


@pytest.mark.parametrize("name", ["KEEP_IRF_CHANGE", "MARGIN_MOVES_INTERIOR", "JOINT_RATE"])
def test_the_criteria_sentences_follow_the_constants(monkeypatch, name):
    """A claim's bar changed in one place changes the sentence the report states."""
    assert f"more than {criteria.pct(getattr(criteria, name))}" in criteria.CRITERIA
    monkeypatch.setattr(criteria, name, 0.37)
    assert "more than 37%" in criteria.criteria_text()
    assert "more than 37%" not in criteria.CRITERIA


def test_each_claim_has_a_bar_and_a_numbered_criterion():
    assert len(criteria.BARS) == 3
    assert [line[:2] for line in criteria.CRITERIA.splitlines()] == ["1.", "2.", "3."]
