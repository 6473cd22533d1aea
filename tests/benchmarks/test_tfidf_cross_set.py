"""benchmarks/tfidf_cross_set.py: the TF-IDF bar of each cross-set check, fitted on the fixture data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redone_sdk.benchmarks import tfidf_cross_set as bench
from redone_sdk.training.baselines import TfidfLogReg
from redone_sdk.training.datasets import harm_examples
from redone_sdk.training.evaluate import harm_set_metrics


def test_every_leave_one_out_in_both_label_styles_and_the_bar_is_the_higher(data_dir: Path, tmp_path: Path) -> None:
    out, figures = tmp_path / "t.md", tmp_path / "t.json"
    assert bench.main(["--data-dir", str(data_dir), "--out", str(out), "--json", str(figures)]) == 0
    result = json.loads(figures.read_text())
    rows = result["rows"]
    assert [(r["labels"], r["left_out"]) for r in rows] == [
        (style, left) for style in ("cold offensive", "cold topic labels") for left in ("", "cold", "swsr", "davidson")
    ]
    for row in rows:  # a left-out set is never trained on
        assert row["left_out"] not in row["trained_on"].split("+")
        assert row["examples"] == sum(len(harm_examples(data_dir, s, "train")) for s in row["trained_on"].split("+"))
    for source in bench.SOURCES:
        left = [r[f"{source}_dev"] for r in rows if r["left_out"] == source]
        assert len(left) == 2 and result["bars"][source] == max(left)
    # one figure re-derived by hand: SWSR left out, COLD labelled by topic
    train = [e for s in ("cold", "davidson") for e in harm_examples(data_dir, s, "train", cold_topics=True)]
    model = TfidfLogReg().fit([e.record["text"] for e in train], [e.label for e in train])
    dev = harm_examples(data_dir, "swsr", "dev")
    expected = harm_set_metrics("swsr_dev", [e.label for e in dev], model.predict([e.record["text"] for e in dev]))
    row = next(r for r in rows if r["labels"] == "cold topic labels" and r["left_out"] == "swsr")
    assert row["swsr_dev"] == round(expected["macro_f1"], 4)
    table = out.read_text()
    assert table.count("\n| cold ") == 8 and f"**{row['swsr_dev']:.3f}**" in table


def test_a_data_dir_without_the_sets_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--data-dir", str(tmp_path)])
    assert "has no cold/" in capsys.readouterr().err
