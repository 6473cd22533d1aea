"""Per-segment breakdowns of the exposure replay: note language, ground-truth category and user cohort, each
checked against counts made by hand from the rows."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, ReplayInputError, replay_exposure
from redone_sdk.replay.segments import parse_segments

CATS = ("offensive", "hate", "sexism")
LANGS = ("en", "zh", "fr")


@pytest.fixture()
def log(write_rows):
    rng = np.random.default_rng(21)
    n_notes = 50
    lang = [LANGS[i % 3] for i in range(n_notes)]
    label = [
        ("safe", "offensive", "hate", "sexism")[int(rng.integers(0, 4))] if i % 10 else None for i in range(n_notes)
    ]
    notes = [{"note_id": f"n{i}", "content": f"text {i}", "lang": lang[i]} for i in range(n_notes)]
    labels = [{"note_id": f"n{i}", "label": label[i]} for i in range(n_notes) if label[i] is not None]
    picks = rng.integers(0, n_notes, 3000)
    rows = [
        {
            "timestamp": f"2025-01-{6 + int(rng.integers(0, 2)):02d}T{int(rng.integers(0, 24)):02d}:00:00Z",
            "user": f"u{int(rng.integers(0, 300))}",
            "note": f"n{n}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for n in picks
    ]
    scores = NoteScores.from_mapping(
        {f"n{i}": {c: (0.95 if i % 4 == 0 else 0.1) for c in CATS} for i in range(n_notes)}, CATS
    )
    paths = [write_rows("i.parquet", rows), write_rows("n.jsonl", notes), write_rows("l.jsonl", labels)]
    blocked = {f"n{i}" for i in range(n_notes) if i % 4 == 0}
    return paths, scores, picks, lang, label, blocked


def _run(log, **kw):
    paths, scores, *_ = log
    arm = Arm("strict", policy=Policy(default=CategoryRule(review=0.9, block=0.9)), scores=scores)
    settings = ExposureSettings(review_delay=timedelta(hours=2), bootstrap=200, note_buckets=8, **kw)
    return replay_exposure(*paths[:2], [Arm.control(), arm], labels=paths[2], settings=settings)


def test_language_and_category_breakdowns_match_hand_counts(log):
    _, _, picks, lang, label, blocked = log
    result = _run(log, segments=("lang", "category", "cohort"), cohorts=3)
    by = {(s.dimension, s.level): s for s in result.segments}
    assert {lv for d, lv in by if d == "lang"} == set(LANGS)
    for language in LANGS:
        shown = [n for n in picks if lang[n] == language]
        assert by[("lang", language)].logged_exposures == len(shown)
        for arm, kept in (("control", shown), ("strict", [n for n in shown if f"n{n}" not in blocked])):
            labeled = [n for n in kept if label[n] is not None]
            harmful = [n for n in labeled if label[n] != "safe"]
            got = by[("lang", language)].arms[arm].harmful_exposure_rate.value
            assert got == pytest.approx(len(harmful) / len(labeled))
    # Category rates split the overall rate: they add up to it, per arm.
    for arm in ("control", "strict"):
        total = sum(by[("category", c)].arms[arm].harmful_exposure_rate.value for c in CATS)
        assert total == pytest.approx(result.arm(arm).harmful_exposure_rate.value)
    counts = Counter(label[n] for n in picks)
    for c in CATS:
        assert by[("category", c)].logged_exposures == counts[c]
    # Cohorts partition the users: their exposures add up to the log's.
    cohorts = [s for s in result.segments if s.dimension == "cohort"]
    assert len(cohorts) == 3 and sum(s.logged_exposures for s in cohorts) == result.logged_exposures
    # Segment tests are listed and corrected as their own family.
    seg_tests = [c for c in result.comparisons if c.segment is not None]
    assert len(seg_tests) == 3 + 3 + 3
    assert all(c.p_adjusted is None or c.p_adjusted >= c.p_value for c in seg_tests)
    overall = [c for c in result.comparisons if c.segment is None]
    assert len(overall) == 1 + len(result.days)
    # Kish's effective number of notes, over labeled and over harmful notes' exposures.
    shown = Counter(int(n) for n in picks)
    for got, keep in ((result.effective_notes, {"safe", *CATS}), (result.effective_harmful_notes, set(CATS))):
        e = np.array([c for n, c in shown.items() if label[n] in keep], dtype=float)
        assert got == pytest.approx(e.sum() ** 2 / (e**2).sum())


def test_no_segments_by_default(log):
    result = _run(log)
    assert result.segments == [] and all(c.segment is None for c in result.comparisons)


def test_unknown_segment_is_a_clear_error():
    assert parse_segments("lang, cohort,lang") == ("lang", "cohort")
    with pytest.raises(ReplayInputError, match="surface"):
        parse_segments("lang,surface")
