"""Labels from a stratified sample of notes: exposures of a labeled note count with its inverse-probability
weight in the rates (checked against the weighted ratio computed by hand from the rows)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from redone_sdk.replay import Arm, ExposureSettings, ReplayInputError, replay_exposure
from redone_sdk.replay.label_weights import parse_stratum_sizes

N_NOTES = 40


@pytest.fixture()
def log(write_rows):
    rng = np.random.default_rng(8)
    notes = [{"note_id": f"n{i}", "content": f"text {i}"} for i in range(N_NOTES)]
    harmful = [i % 3 == 0 for i in range(N_NOTES)]
    picks = rng.integers(0, N_NOTES, 1500)
    rows = [
        {
            "timestamp": f"2025-01-06T{int(rng.integers(0, 24)):02d}:00:00Z",
            "user": f"u{int(rng.integers(0, 200))}",
            "note": f"n{n}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for n in picks
    ]
    return write_rows("i.parquet", rows), write_rows("n.jsonl", notes), harmful, picks


def _label(i: int, harmful) -> str:
    return "hate" if harmful[i] else "safe"


def _hand_rate(picks, harmful, weight: dict[int, float]) -> float:
    num = sum(weight[n] for n in picks if n in weight and harmful[n])
    den = sum(weight[n] for n in picks if n in weight)
    return num / den


def _run(paths, labels, **kw):
    settings = ExposureSettings(review_delay=timedelta(hours=1), bootstrap=50, note_buckets=8, **kw)
    return replay_exposure(*paths, [Arm.control()], labels=labels, settings=settings)


def test_strata_weigh_each_labeled_note_by_population_over_sample(log, write_rows):
    impressions, notes, harmful, picks = log
    # Stratum "a": notes 0-19, 5 of them labeled, 20 in the population; "b": notes 20-39, 15 labeled of 20.
    sampled = list(range(5)) + list(range(20, 35))
    rows = [{"note_id": f"n{i}", "label": _label(i, harmful), "stratum": "a" if i < 20 else "b"} for i in sampled]
    labels = write_rows("l.jsonl", rows)
    result = _run((impressions, notes), labels, stratum_sizes={"a": 20, "b": 20})
    weight = {i: (20 / 5 if i < 20 else 20 / 15) for i in sampled}
    expected = _hand_rate(picks, harmful, weight)
    assert result.arm("control").harmful_exposure_rate.value == pytest.approx(expected)
    assert expected != pytest.approx(_hand_rate(picks, harmful, dict.fromkeys(sampled, 1.0)))
    assert "stratum" in result.label_weighting
    # Counts stay unweighted.
    assert result.labeled_exposures == sum(1 for n in picks if n in weight)


def test_weight_column_is_used_as_is(log, write_rows):
    impressions, notes, harmful, picks = log
    weight = {i: 1.0 + (i % 4) for i in range(0, N_NOTES, 2)}
    rows = [{"note_id": f"n{i}", "label": _label(i, harmful), "weight": w} for i, w in weight.items()]
    result = _run((impressions, notes), write_rows("l.parquet", rows))
    assert result.arm("control").harmful_exposure_rate.value == pytest.approx(_hand_rate(picks, harmful, weight))


def test_unweighted_labels_and_bad_weights(log, write_rows):
    impressions, notes, harmful, _ = log
    plain = write_rows("plain.jsonl", [{"note_id": f"n{i}", "label": _label(i, harmful)} for i in range(10)])
    assert _run((impressions, notes), plain).label_weighting is None
    strata = write_rows("s.jsonl", [{"note_id": "n1", "label": "safe", "stratum": "a"}])
    with pytest.raises(ReplayInputError, match="stratum-sizes"):
        _run((impressions, notes), strata)
    with pytest.raises(ReplayInputError, match="lacks the size"):
        _run((impressions, notes), strata, stratum_sizes={"b": 3})
    bad = write_rows("bad.jsonl", [{"note_id": "n1", "label": "safe", "weight": -2}])
    with pytest.raises(ReplayInputError, match="positive"):
        _run((impressions, notes), bad)
    assert parse_stratum_sizes("a=10, b=3") == {"a": 10, "b": 3}
    with pytest.raises(ReplayInputError):
        parse_stratum_sizes("a=0")
