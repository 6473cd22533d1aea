"""`redone replay decisions`' arithmetic on given labels (no model): agreement per reviewers' category, McNemar's
exact test on the discordant notes, the paired-bootstrap interval; and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from redone_sdk.errors import RedOneError
from redone_sdk.replay.decisions import compare, read_rows


def _rows(labels: list[str]) -> list[dict[str, str]]:
    return [{"note_id": f"n{i}", "text": f"t{i}", "label": label} for i, label in enumerate(labels)]


def test_agreement_per_category_and_the_paired_test() -> None:
    gold = ["safe"] * 6 + ["hate"] * 4
    old = ["offensive"] * 6 + ["hate", "hate", "offensive", "offensive"]
    new = ["safe"] * 5 + ["offensive"] + ["hate", "offensive", "hate", "offensive"]
    result = compare(_rows(gold), old, new, bootstrap=500, seed=1)
    assert (result.total.notes, result.total.old, result.total.new) == (10, 2, 7)
    assert (result.by_category["safe"].old, result.by_category["safe"].new) == (0, 5)
    assert (result.by_category["hate"].old, result.by_category["hate"].new) == (2, 2)
    assert (result.only_old, result.only_new) == (1, 6)
    assert result.mcnemar_p == pytest.approx(binomtest(6, 7, 0.5).pvalue)
    low, high = result.difference_interval
    assert low <= 0.5 <= high and -1 <= low < high <= 1
    table = result.table()
    assert "| safe | 6 | 0 | 5 | 0.000 | 0.833 |" in table and "| all | 10 | 2 | 7 |" in table
    figures = result.to_dict()
    assert figures["total"]["new_rate"] == 0.7 and figures["only_new_agrees"] == 6
    # the same labels on both sides: no discordant note, p = 1, a zero-width interval
    same = compare(_rows(gold), old, old, bootstrap=200)
    assert same.mcnemar_p == 1.0 and same.difference_interval == (0.0, 0.0)


def test_feedback_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RedOneError, match="not a feedback folder"):
        read_rows(tmp_path, "holdout")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "holdout.jsonl").write_text("")
    (tmp_path / "sft.jsonl").write_text(json.dumps({"note_id": "a", "fields": {"text": "x"}, "label": "safe"}) + "\n")
    with pytest.raises(RedOneError, match="no holdout notes"):
        read_rows(tmp_path, "holdout")
    assert read_rows(tmp_path, "all") == [{"note_id": "a", "text": "x", "label": "safe"}]
