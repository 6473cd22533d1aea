"""Per-segment breakdowns of the exposure replay: note language, ground-truth category, user cohort and surface,
each checked against counts made by hand from the rows."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, ReplayInputError, replay_exposure
from redone_sdk.replay.segments import parse_segments

CATS = ("offensive", "hate", "sexism")
LANGS = ("en", "zh", "fr")
SURFACES = ("homefeed", "search", "profile")


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
            "surface": SURFACES[k % 3 if k % 7 else 1],  # uneven shares
            "position": 1,
            "click": 0,
        }
        for k, n in enumerate(picks)
    ]
    surface = [row["surface"] for row in rows]
    user = [row["user"] for row in rows]
    scores = NoteScores.from_mapping(
        {f"n{i}": {c: (0.95 if i % 4 == 0 else 0.1) for c in CATS} for i in range(n_notes)}, CATS
    )
    paths = [write_rows("i.parquet", rows), write_rows("n.jsonl", notes), write_rows("l.jsonl", labels)]
    write_rows("i.jsonl", rows)  # the same log as JSON lines (surfaces as text, not dictionary-encoded)
    blocked = {f"n{i}" for i in range(n_notes) if i % 4 == 0}
    return paths, scores, picks, lang, label, blocked, surface, user


def _run(log, **kw):
    paths, scores, *_ = log
    arm = Arm("strict", policy=Policy(default=CategoryRule(review=0.9, block=0.9)), scores=scores)
    settings = ExposureSettings(review_delay=timedelta(hours=2), bootstrap=200, note_buckets=8, **kw)
    return replay_exposure(*paths[:2], [Arm.control(), arm], labels=paths[2], settings=settings)


def test_language_and_category_breakdowns_match_hand_counts(log):
    _, _, picks, lang, label, blocked, *_ = log
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


def _hand_rate(rows: list[int], label: list, blocked: set[str]) -> tuple[float, float]:
    """(control, strict) harmful exposure rate of these impressions' notes, counted from the rows."""
    out = []
    for kept in (rows, [n for n in rows if f"n{n}" not in blocked]):
        labeled = [n for n in kept if label[n] is not None]
        out.append(sum(label[n] != "safe" for n in labeled) / len(labeled))
    return out[0], out[1]


@pytest.mark.parametrize("log_file", ["i.parquet", "i.jsonl"])
def test_surface_breakdown_matches_hand_counts(log, log_file):
    paths, _, picks, _, label, blocked, surface, _ = log
    log = ([paths[0].with_name(log_file), *paths[1:]], *log[1:])
    result = _run(log, segments=("surface", "lang"))
    by = {s.level: s for s in result.segments if s.dimension == "surface"}
    assert sorted(by) == sorted(SURFACES)  # levels named, sorted
    for name in SURFACES:
        shown = [n for n, s in zip(picks, surface, strict=True) if s == name]
        assert by[name].logged_exposures == len(shown)
        control, strict = _hand_rate(shown, label, blocked)
        assert by[name].arms["control"].harmful_exposure_rate.value == pytest.approx(control)
        assert by[name].arms["strict"].harmful_exposure_rate.value == pytest.approx(strict)
        assert by[name].arms["strict"].change_vs_control.value == pytest.approx(strict / control - 1)
        kept = sum(f"n{n}" not in blocked for n in shown)
        assert by[name].arms["strict"].exposures == kept
    assert sum(s.logged_exposures for s in by.values()) == result.logged_exposures
    assert {c.segment for c in result.comparisons if c.segment and c.segment.startswith("surface=")} == {
        f"surface={s}" for s in SURFACES
    }
    # The lang levels of the same run are unchanged by the surface segment beside them.
    alone = {s.level: s for s in _run(log, segments=("lang",)).segments}
    for s in result.segments:
        if s.dimension == "lang":
            assert s.arms["strict"].harmful_exposure_rate == alone[s.level].arms["strict"].harmful_exposure_rate


def test_surface_breakdown_with_a_surface_filter(log):
    _, _, picks, _, label, blocked, surface, _ = log
    result = _run(log, segments=("surface",), surfaces=("search", "profile"))
    by = {s.level: s for s in result.segments}
    assert sorted(by) == ["profile", "search"]
    shown = [n for n, s in zip(picks, surface, strict=True) if s == "profile"]
    assert by["profile"].logged_exposures == len(shown)
    assert by["profile"].arms["strict"].harmful_exposure_rate.value == pytest.approx(
        _hand_rate(shown, label, blocked)[1]
    )
    assert result.logged_exposures == sum(s != "homefeed" for s in surface)


def _write_table(write_rows, name: str, rows: list[dict]) -> Path:
    """`write_rows` for Parquet and JSON lines; CSV written here (empty cell for None)."""
    if not name.endswith(".csv"):
        return write_rows(name, rows)
    path = write_rows(name, [])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cohort_of(user: str) -> str | None:
    number = int(user[1:])
    return "A" if number < 100 else "B" if number < 250 else None  # u250… are not in the users table


@pytest.mark.parametrize("table", ["users.jsonl", "users.parquet", "users.csv"])
def test_cohorts_from_a_users_table_match_hand_counts(log, write_rows, table):
    _, _, picks, _, label, blocked, _, user = log
    rows = [{"user": f"u{i}", "cohort": _cohort_of(f"u{i}")} for i in range(250)]
    rows += [{"user": "u0", "cohort": "B"}, {"user": "u5", "cohort": None}, {"user": None, "cohort": "A"}]
    users = _write_table(write_rows, table, rows)
    result = _run(log, segments=("cohort",), users_table=str(users))
    by = {s.level: s for s in result.segments}
    assert list(by) == ["A", "B", "(none)"]
    for level, cohort in (("A", "A"), ("B", "B"), ("(none)", None)):
        shown = [n for n, u in zip(picks, user, strict=True) if _cohort_of(u) == cohort]
        assert by[level].logged_exposures == len(shown)
        control, strict = _hand_rate(shown, label, blocked)
        assert by[level].arms["control"].harmful_exposure_rate.value == pytest.approx(control)
        assert by[level].arms["strict"].harmful_exposure_rate.value == pytest.approx(strict)
    issues = result.inputs["users"]
    assert issues.rows_used == 250 and issues.bad_rows == 3  # u0 again (first row kept), no cohort, no user
    assert issues.reasons["user listed more than once (first row kept)"] == 1


def test_users_table_errors_are_one_line(log, write_rows, tmp_path, capsys):
    from redone_sdk.replay.cli import main
    from redone_sdk.replay.segments import read_user_cohorts

    with pytest.raises(ReplayInputError, match="lacks column"):
        read_user_cohorts(_write_table(write_rows, "u.csv", [{"user": "u1", "group": "A"}]))
    with pytest.raises(ReplayInputError, match="no valid row"):
        read_user_cohorts(write_rows("u.jsonl", [{"user": "u1", "cohort": ""}]))
    paths = log[0]
    common = ["exposure", "--impressions", str(paths[0]), "--notes", str(paths[1]), "--out", str(tmp_path / "o")]
    users = write_rows("users.jsonl", [{"user": "u1", "cohort": "A"}])
    assert main([*common, "--users", str(users)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --segment cohort" in err


def test_no_segments_by_default(log):
    result = _run(log)
    assert result.segments == [] and all(c.segment is None for c in result.comparisons)


def test_unknown_segment_is_a_clear_error():
    assert parse_segments("lang, cohort,lang,surface") == ("lang", "cohort", "surface")
    with pytest.raises(ReplayInputError, match="device"):
        parse_segments("lang,device")
