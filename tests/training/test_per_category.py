"""Per-category precision / recall / F1 / support in the dev evaluation: hand-computed cases, and the tiny
pipeline's `redone train eval` and `eval-bundle` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redone_sdk.training.evaluate import harm_set_metrics, per_category_rows, per_category_table

BUNDLE_LABELS = ("safe", "offensive", "hate", "sexism")


def test_cold_scored_harmful_vs_safe_and_per_bundle_category() -> None:
    gold = ["safe", "safe", "safe", "offensive", "offensive", "offensive", "offensive"]
    pred = ["safe", "offensive", "safe", "offensive", "hate", "safe", "offensive"]
    m = harm_set_metrics("cold_dev", gold, pred, BUNDLE_LABELS)
    # harmful vs safe: harmful tp 3 (offensive, hate, offensive), predicted harmful 4, gold harmful 4
    assert m["precision/harmful"] == pytest.approx(3 / 4) and m["recall/harmful"] == pytest.approx(3 / 4)
    assert m["precision/safe"] == pytest.approx(2 / 3) and m["recall/safe"] == pytest.approx(2 / 3)
    assert (m["support/safe"], m["support/harmful"]) == (3.0, 4.0)
    assert m["accuracy"] == pytest.approx(5 / 7) and m["macro_f1"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    # the bundle's own category: `hate` on a gold `offensive` is wrong there
    assert m["category/precision/offensive"] == pytest.approx(2 / 3)
    assert m["category/recall/offensive"] == pytest.approx(2 / 4)
    assert m["category/f1/offensive"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert m["category/support/offensive"] == 4.0
    assert not any(k.startswith("category/") and k.endswith(("/safe", "/hate", "/sexism")) for k in m)


def test_davidson_three_classes_and_grades_have_no_second_view() -> None:
    gold = ["hate", "hate", "offensive", "offensive", "offensive", "safe"]
    pred = ["hate", "offensive", "offensive", "offensive", "sexism", "hate"]
    m = harm_set_metrics("davidson_dev", gold, pred, BUNDLE_LABELS)
    assert m["precision/hate"] == pytest.approx(1 / 2) and m["recall/hate"] == pytest.approx(1 / 2)
    assert m["precision/offensive"] == pytest.approx(2 / 3) and m["recall/offensive"] == pytest.approx(2 / 3)
    assert m["precision/safe"] == 0.0 and m["recall/safe"] == 0.0
    assert (m["support/hate"], m["support/offensive"], m["support/safe"]) == (2.0, 3.0, 1.0)
    assert not any(k.startswith("category/") for k in m)
    grades = harm_set_metrics("querycorr_dev", ["1", "2"], ["1", "3"], ("-1", "0", "1", "2", "3"))
    assert grades["support/2"] == 1.0 and grades["support/-1"] == 0.0
    assert not any(k.startswith("category/") for k in grades)


def test_swsr_without_the_bundle_labels_uses_the_gold_categories() -> None:
    m = harm_set_metrics("swsr_dev", ["sexism", "sexism", "safe"], ["sexism", "safe", "safe"])
    assert m["category/recall/sexism"] == 0.5 and m["category/precision/sexism"] == 1.0
    rows = per_category_rows({"swsr_dev": m})
    assert ("swsr_dev", "category", "sexism", 1.0, 0.5, pytest.approx(2 / 3), 2) in rows
    assert [r[:3] for r in rows] == [
        ("swsr_dev", "scored", "safe"),
        ("swsr_dev", "scored", "harmful"),
        ("swsr_dev", "category", "sexism"),
    ]
    assert "| swsr_dev | category | sexism | 1.000 | 0.500 | 0.667 | 2 |" in per_category_table({"swsr_dev": m})


def test_tiny_pipeline_eval_writes_per_category_figures(tiny_run: Path) -> None:
    scoring = json.loads((tiny_run / "eval" / "metrics.json").read_text())["scoring"]
    for set_name, labels in (("cold_dev", ("safe", "harmful")), ("davidson_dev", ("safe", "offensive", "hate"))):
        values = scoring[set_name]
        assert {"accuracy", "macro_f1"} <= set(values)
        for label in labels:
            assert 0 <= values[f"precision/{label}"] <= 1 and 0 <= values[f"recall/{label}"] <= 1
        assert sum(values[f"support/{label}"] for label in labels) == values["n"]
    assert scoring["cold_dev"]["category/support/offensive"] == scoring["cold_dev"]["support/harmful"]
    assert scoring["swsr_dev"]["category/support/sexism"] == scoring["swsr_dev"]["support/harmful"]
    table = (tiny_run / "eval" / "per_category.md").read_text(encoding="utf-8")
    assert "| cold_dev | category | offensive |" in table and "| davidson_dev | scored | hate |" in table


def test_eval_bundle_prints_the_table(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from redone_sdk.training.cli import main

    bundle = tiny_run / "bundle"
    argv = ["train", "eval-bundle", "--bundle", str(bundle), "--output-dir", str(tiny_run), "--table"]
    assert main(argv) == 0  # the dev sets of the run's data stage
    out = capsys.readouterr().out
    assert "| set | view | category | precision | recall | F1 | support |" in out
    assert "| swsr_dev | category | sexism |" in out and "| querycorr_dev | scored | 3 |" in out
