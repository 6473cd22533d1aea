"""Regression tests of the replay's input, CLI, report and cache bugs of issue #19 (each failed before its fix)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, ScoreCache, replay_exposure, write_report
from redone_sdk.replay.arms import decide_actions, default_cache_dir
from redone_sdk.replay.cli import main
from redone_sdk.replay.exposure_sweep import _sweep_policy, _SweepActions, threshold_grid
from redone_sdk.replay.impressions import iter_impressions
from redone_sdk.replay.labels import read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.sessions import read_judgments, read_sessions

CATS = ("offensive", "hate", "sexism")


pytestmark = pytest.mark.usefixtures("replay_log_per_test")


def _corrupt_pages(path: Path) -> None:
    """Scramble bytes inside the first column chunk's data pages (the footer stays readable)."""
    data = bytearray(path.read_bytes())
    for i in range(200, min(3000, len(data) - 2000)):
        data[i] = (data[i] * 7 + 13) % 256
    path.write_bytes(bytes(data))


def _big_impressions(path: Path, n: int = 60_000) -> Path:
    table = pa.table(
        {
            "timestamp": pa.array(np.full(n, 1736121600), type=pa.int64()),
            "user": [f"user-{i}" for i in range(n)],
            "note": [f"n{i % 4}" for i in range(n)],
            "surface": ["homefeed"] * n,
            "position": np.arange(n) % 10 + 1,
            "click": np.zeros(n, dtype=np.int8),
        }
    )
    pq.write_table(table, path, compression="snappy")
    return path


def _one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err


# ------------------------------------------------------------------ corrupt Parquet: a clear error, exit 2


def test_corrupt_parquet_page_is_a_clear_error_exit_2(hand_log: dict[str, Path], tmp_path: Path, capsys) -> None:
    log = _corrupt_pages(_big_impressions(tmp_path / "impressions.parquet")) or tmp_path / "impressions.parquet"
    args = ["exposure", "--impressions", str(log), "--notes", str(hand_log["notes"]), "--arm", "c=none"]
    status = main([*args, "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert status == 2
    _one_line_error(err)
    assert "impressions.parquet" in err and "corrupt" in err


def test_corrupt_parquet_notes_and_labels_are_input_errors(tmp_path: Path) -> None:
    n = 60_000
    notes = tmp_path / "notes.parquet"
    pq.write_table(
        pa.table({"note_id": [f"n{i}" for i in range(n)], "content": [f"text {i}" for i in range(n)]}), notes
    )
    _corrupt_pages(notes)
    with pytest.raises(ReplayInputError, match="corrupt"):
        read_notes(notes)
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"note_id": [f"n{i}" for i in range(n)], "label": ["safe"] * n}), labels)
    _corrupt_pages(labels)
    with pytest.raises(ReplayInputError, match="corrupt"):
        read_labels(labels)


# ------------------------------------------------------------------ bad options: one line, exit 2


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--confidence", "1.5"),
        ("--confidence", "0"),
        ("--user-buckets", "0"),
        ("--bootstrap", "-1"),
        ("--batch-rows", "0"),
        ("--sweep-points", "-2"),
        ("--period", "2026-02-01..2026-01-01"),
        ("--period", "last week"),
    ],
)
def test_bad_exposure_options_are_one_line_errors(
    hand_log: dict[str, Path], tmp_path: Path, capsys, option: str, value: str
) -> None:
    args = ["exposure", "--impressions", str(hand_log["impressions"]), "--notes", str(hand_log["notes"])]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--arm", "c=none", "--out", str(tmp_path / "out"), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    _one_line_error(err)
    assert option in err


@pytest.mark.parametrize(("option", "value"), [("--relevance-bins", "0"), ("--prior-strength", "-1")])
def test_bad_search_options_are_one_line_errors(tmp_path: Path, capsys, option: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--sessions", "s.jsonl", "--notes", "n.jsonl", "--out", str(tmp_path), option, value])
    assert exit_info.value.code == 2
    _one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ a UTF-8 BOM keeps the first row


def test_jsonl_with_byte_order_mark_keeps_its_first_row(hand_log: dict[str, Path], tmp_path: Path) -> None:
    for name in ("impressions", "notes", "labels"):
        path = hand_log[name]
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    notes = read_notes(hand_log["notes"])
    assert len(notes) == 4 and notes.issues.bad_rows == 0
    labels = read_labels(hand_log["labels"], notes=notes)
    assert len(labels) == 4 and labels.issues.bad_rows == 0
    issues = TableIssues(table="impressions")
    used = sum(len(b) for b in iter_impressions(hand_log["impressions"], notes, issues))
    assert used == 15 and issues.bad_rows == 0


# ------------------------------------------------------------------ CSV inputs


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_impressions_same_checks_and_accounting_as_json_lines(tmp_path: Path, write_rows) -> None:
    notes = read_notes(write_rows("notes.jsonl", [{"note_id": f"n{i}", "content": f"content {i}"} for i in range(3)]))
    header = ["timestamp", "user", "note", "surface", "position", "click", "extra"]
    rows = [
        ["2025-01-06T08:00:00+08:00", "a", "n0", "feed", 1, "true", "x"],
        ["2025-01-06 00:00:00", 7, "n1", "feed", "2.0", 0, "x"],
        [1736121600, "c", "n2", "feed", 3, 1, "x"],
        ["yesterday", "d", "n0", "feed", 1, 0, "x"],  # unparseable timestamp
        [1736121600, None, "n0", "feed", 1, 0, "x"],  # missing user
        [1736121600, "e", "n0", "feed", "first", 0, "x"],  # position not an integer
        [1736121600, "f", "n0", "feed", 0, 0, "x"],  # position not positive
        [1736121600, "g", "n0", "feed", 1, "yes", "x"],  # click not 0/1
        [1736121600, "h", "zz", "feed", 1, 0, "x"],  # note not in notes table
        [1736121600000, "i", "n0", "feed", 1, 0, "x"],  # milliseconds
    ]
    path = _csv(tmp_path / "log.csv", header, rows)
    path.write_text(path.read_text() + "1736121600,j,n0\n\n")  # a row with too few fields, a blank line
    issues = TableIssues(table="impressions")
    batches = list(iter_impressions(path, notes, issues, batch_rows=4))
    assert np.concatenate([b.timestamp for b in batches]).tolist() == [1736121600] * 3
    assert np.concatenate([b.click for b in batches]).tolist() == [True, False, True]
    assert np.concatenate([b.position for b in batches]).tolist() == [1, 2, 3]
    assert issues.rows_read == 11 and issues.rows_used == 3
    assert issues.reasons == {
        "unparseable timestamp": 1,
        "missing user": 1,
        "position not a positive integer": 2,
        "click not 0/1": 1,
        "note not in notes table": 1,
        "timestamp out of range (2000-2100, epoch seconds)": 1,
        "CSV row with the wrong number of fields": 1,
    }
    rows_of = {e.reason: e.row for e in issues.examples}
    assert rows_of["unparseable timestamp"] == 5  # 1-based lines; line 1 is the header
    assert rows_of["CSV row with the wrong number of fields"] == 12
    assert issues.ignored_columns == ["extra"]


def test_csv_replay_equals_json_lines_replay(hand_log: dict[str, Path], tmp_path: Path) -> None:
    """The hand log as CSV (gzipped impressions, a BOM on the notes) gives the same results as JSON lines."""
    import gzip

    def to_csv(path: Path, name: str) -> Path:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        header = list(records[0])
        out = _csv(tmp_path / f"{name}.csv", header, [[r[k] for k in header] for r in records])
        return out

    impressions = to_csv(hand_log["impressions"], "impressions")
    gz = tmp_path / "impressions.csv.gz"
    gz.write_bytes(gzip.compress(impressions.read_bytes()))
    notes = to_csv(hand_log["notes"], "notes")
    notes.write_bytes(b"\xef\xbb\xbf" + notes.read_bytes())
    labels = to_csv(hand_log["labels"], "labels")
    policy = Policy(name="p", default=CategoryRule(review=0.5, block=0.9))
    scores = NoteScores.from_mapping(
        {f"n{i}": {"offensive": v, "hate": 0.0, "sexism": 0.0} for i, v in enumerate([0.1, 0.95, 0.6, 0.7])}, CATS
    )
    arms = [Arm.control("logged"), Arm("t", policy=policy, scores=scores)]
    settings = ExposureSettings(review_delay=timedelta(hours=2), bootstrap=50)
    from_csv = replay_exposure(gz, notes, arms, labels=labels, settings=settings)
    from_jsonl = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings
    )
    assert from_csv.arms == from_jsonl.arms and from_csv.sweeps == from_jsonl.sweeps
    assert all(i.bad_rows == 0 for i in from_csv.inputs.values())


def test_csv_notes_and_labels(tmp_path: Path) -> None:
    notes_path = tmp_path / "notes.csv"
    notes_path.write_text(
        "note_id,title,content,tags,created_at\n"
        'a,Hello,"a note, with a comma","[""x"", ""y""]",2025-01-06T00:00:00Z\n'
        "b,,,,\n"  # no text: not a valid Note
        "c,Only a title,,,\n",
        encoding="utf-8",
    )
    notes = read_notes(notes_path)
    assert notes.ids.to_pylist() == ["a", "c"] and notes.created_at[0] == 1736121600
    assert notes.issues.bad_rows == 1 and notes.issues.examples[0].row == 3
    labels_path = _csv(tmp_path / "labels.csv", ["note_id", "label"], [["a", "safe"], ["c", "hate"], ["a", "x"]])
    labels = read_labels(labels_path, notes=notes)
    assert labels.by_note == {"a": "safe", "c": "hate"} and labels.issues.reasons == {"unknown label": 1}
    with pytest.raises(ReplayInputError, match=r"lacks column\(s\) \['label'\]"):
        read_labels(_csv(tmp_path / "l2.csv", ["note_id"], [["a"]]))


def test_csv_sessions_and_judgments(tmp_path: Path) -> None:
    notes_path = _csv(tmp_path / "notes.csv", ["note_id", "content"], [["n0", "first note"], ["n1", "second note"]])
    notes = read_notes(notes_path)
    sessions_path = tmp_path / "sessions.csv"
    sessions_path.write_text(
        "session_id,query,notes,clicks\n"
        's1,q,"[""n0"", ""n1""]","[0, 1]"\n'
        's2,q,"[""n0""]","[0, 1]"\n'  # clicks not one per note
        "s3,q,n0,0\n",  # not JSON arrays
        encoding="utf-8",
    )
    sessions = read_sessions(sessions_path, notes=notes)
    assert sessions.notes == [["n0", "n1"]] and sessions.clicks == [[0, 1]]
    assert sessions.issues.reasons == {"clicks not one per note shown": 1, "no notes shown": 1}
    grades, issues = read_judgments(
        _csv(tmp_path / "judgments.csv", ["query", "note_id", "grade"], [["q", "n0", 3], ["q", "n1", "x"]])
    )
    assert grades == {("q", "n0"): 3} and issues.reasons == {"grade not an integer in -1..3": 1}


# ------------------------------------------------------------------ arm named like the automatic control


def test_arm_named_logged_does_not_collide_with_the_automatic_control(
    tiny_bundle: Path, hand_log: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("REDONE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["exposure", "--impressions", str(hand_log["impressions"]), "--notes", str(hand_log["notes"])]
    status = main([*args, "--arm", f"logged={tiny_bundle}", "--out", str(out), "--bootstrap", "20"])
    assert status == 0
    result = json.loads((out / "exposure.json").read_text())
    assert [a["name"] for a in result["arms"]] == ["logged-control", "logged"]
    assert result["control"] == "logged-control"


def test_duplicate_arm_names_and_unknown_control_fail_before_loading_models(
    hand_log: dict[str, Path], tmp_path: Path, capsys
) -> None:
    args = ["exposure", "--impressions", str(hand_log["impressions"]), "--notes", str(hand_log["notes"])]
    args += ["--out", str(tmp_path / "out")]
    assert main([*args, "--arm", "a=/no/such/bundle", "--arm", "a=none"]) == 2
    assert "given more than once: ['a']" in capsys.readouterr().err
    assert main([*args, "--arm", "a=/no/such/bundle", "--control", "b"]) == 2
    assert "--control 'b' is not one of" in capsys.readouterr().err


# ------------------------------------------------------------------ report: rate label, threshold sweep


def _spread_log(write_rows) -> tuple[dict[str, Path], NoteScores]:
    """Three popular benign notes with low scores, 60 rarely seen harmful notes with high scores."""
    notes = [{"note_id": f"b{i}", "content": f"benign note {i}"} for i in range(3)]
    notes += [{"note_id": f"h{i}", "content": f"harmful note {i}"} for i in range(60)]
    rows = []
    for i in range(3):
        rows += [
            {
                "timestamp": 1736121600 + k,
                "user": f"u{k % 40}",
                "note": f"b{i}",
                "surface": "f",
                "position": 1,
                "click": 0,
            }
            for k in range(100)
        ]
    rows += [
        {"timestamp": 1736125200, "user": f"u{i % 40}", "note": f"h{i}", "surface": "f", "position": 2, "click": 0}
        for i in range(60)
    ]
    labels = [{"note_id": f"b{i}", "label": "safe"} for i in range(3)]
    labels += [{"note_id": f"h{i}", "label": "hate"} for i in range(60)]
    values = {f"b{i}": 0.1 * (i + 1) for i in range(3)} | {f"h{i}": 0.4 + 0.01 * i for i in range(60)}
    scores = NoteScores.from_mapping({n: {"offensive": v, "hate": 0.0, "sexism": 0.0} for n, v in values.items()}, CATS)
    paths = {
        "impressions": write_rows("spread.jsonl", rows),
        "notes": write_rows("spread-notes.jsonl", notes),
        "labels": write_rows("spread-labels.jsonl", labels),
    }
    return paths, scores


def test_threshold_sweep_spreads_reaches_the_control_and_has_labels_and_intervals(write_rows, tmp_path: Path) -> None:
    paths, scores = _spread_log(write_rows)
    policy = Policy(name="p", default=CategoryRule(review=0.5, block=0.9))
    arms = [Arm.control("logged"), Arm("t", policy=policy, scores=scores)]
    result = replay_exposure(
        paths["impressions"],
        paths["notes"],
        arms,
        labels=paths["labels"],
        settings=ExposureSettings(bootstrap=200, sweep_points=25),
    )
    (sweep,) = result.sweeps
    shares = {round(p.benign_removed_share, 6) for p in sweep.points}
    # Blocking at 0.3, 0.2 and 0.1 removes a third, two thirds and all benign exposures: all on the curve.
    assert {0.0, round(1 / 3, 6), round(2 / 3, 6), 1.0} <= shares
    off = sweep.points[-1]
    assert off.threshold is None and off.notes_actioned == 0
    assert off.harmful_exposure_rate == pytest.approx(result.arm("logged").harmful_exposure_rate.value)
    rated = [p for p in sweep.points if p.harmful_exposure_rate is not None]
    assert all(p.harmful_exposure_rate_lo <= p.harmful_exposure_rate <= p.harmful_exposure_rate_hi for p in rated)
    assert any(p.harmful_exposure_rate_hi > p.harmful_exposure_rate_lo for p in rated)  # not all degenerate
    assert all(p.benign_removed_share_lo <= p.benign_removed_share <= p.benign_removed_share_hi for p in rated)
    out = tmp_path / "report"
    write_report(out, exposure=result)
    figure = json.loads((out / "figures" / "threshold_sweep_1.json").read_text())
    curve = figure["series"][0]
    assert curve["labels"][-1] == "off" and any(label.startswith("t=") for label in curve["labels"])
    assert curve["lo"] and curve["hi"] and figure["x_scale"] == "symlog"
    assert curve["x"][-1] == 0.0 and curve["y"][-1] == pytest.approx(off.harmful_exposure_rate)
    rate = json.loads((out / "figures" / "exposure_rate_by_arm.json").read_text())
    assert "labeled" in rate["y_label"]  # the rate is over labeled exposures, not all exposures
    assert "off (nothing actioned)" in (out / "report.md").read_text()


def test_threshold_grid_covers_benign_and_harmful_shares() -> None:
    top = np.array([0.1, 0.2, 0.3] + [0.4 + 0.01 * i for i in range(60)])
    exposures = np.array([100, 100, 100] + [1] * 60)
    truth = np.array([0] * 3 + [1] * 60)
    grid = threshold_grid(top, exposures, truth, 25)
    assert grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    assert {0.1, 0.2, 0.3} <= set(np.round(grid, 6).tolist())
    assert threshold_grid(top, exposures, truth, 0).tolist() == [1.0]


def test_sweep_actions_equal_decide_actions_of_the_sweep_policy() -> None:
    rng = np.random.default_rng(7)
    matrix = np.round(rng.random((2_000, 3)), 2).astype(np.float32)  # coarse: many scores equal a threshold
    base = Policy(
        name="b",
        rules={
            "offensive": CategoryRule(review=0.3, block=0.9),
            "hate": CategoryRule(review=0.6, block=0.95),
            "sexism": CategoryRule(review=0.45, block=None),
        },
    )
    fast = _SweepActions(base, CATS, matrix)
    for t in [0.0, 0.1, 0.3, 0.31, 0.45, 0.5, 0.6, 0.75, 0.99, 1.0, *np.unique(matrix).tolist()[::7]]:
        exact = decide_actions(_sweep_policy(base, CATS, float(t)), CATS, matrix)
        assert (fast(float(t)) == exact).all(), t
    with_nan = matrix.copy()
    with_nan[5, 1] = np.nan
    slow = _SweepActions(
        Policy(name="r", default=CategoryRule(review=0.5, block=0.9), on_invalid_output="review"), CATS, with_nan
    )
    assert slow(0.7)[5] == 1  # a non-finite score fails closed to review, as decide_actions does


# ------------------------------------------------------------------ the score cache is shared across --out


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDONE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "replay-scores"
    monkeypatch.delenv("REDONE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "redone-sdk" / "replay-scores"


def test_new_output_folder_reuses_the_scores(
    tiny_bundle: Path, hand_log: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("REDONE_CACHE_DIR", str(tmp_path / "cache"))
    args = ["exposure", "--impressions", str(hand_log["impressions"]), "--notes", str(hand_log["notes"])]
    args += ["--arm", f"redone={tiny_bundle}", "--bootstrap", "0"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    first = json.loads((tmp_path / "first" / "exposure.json").read_text())
    second = json.loads((tmp_path / "second" / "exposure.json").read_text())
    (scored_first,) = first["scoring"].values()
    (scored_second,) = second["scoring"].values()
    assert scored_first["notes_scored_by_model"] == 4
    assert scored_second["notes_scored_by_model"] == 0 and scored_second["notes_from_cache"] == 4
    assert not (tmp_path / "second" / "score-cache").exists()
    assert list((tmp_path / "cache" / "replay-scores").glob("scores-*.parquet"))


def test_cache_files_are_per_category_set_merge_concurrent_runs_and_survive_corruption(tmp_path: Path, caplog) -> None:
    def compute_with(value: float, calls: list):
        def compute(positions: np.ndarray) -> np.ndarray:
            calls.append(len(positions))
            return np.full((len(positions), 1), value)

        return compute

    keys_a, keys_b = pa.array(["a1", "a2"]), pa.array(["b1"])
    one, two = ScoreCache(tmp_path), ScoreCache(tmp_path)  # two runs that started together
    one.scores("fp", ("x",), keys_a, compute_with(0.5, []))
    two.scores("fp", ("x",), keys_b, compute_with(0.7, []))  # saving merges what `one` wrote meanwhile
    calls: list = []
    fresh = ScoreCache(tmp_path).scores("fp", ("x",), pa.array(["a1", "b1", "a2"]), compute_with(0.0, calls))
    assert calls == [] and fresh[:, 0].tolist() == pytest.approx([0.5, 0.7, 0.5])
    # Another set of columns for the same fingerprint is another file: neither is served the other's scores.
    other: list = []
    ScoreCache(tmp_path).scores("fp", ("y",), keys_a, compute_with(0.1, other))
    assert other == [2] and len(list(tmp_path.glob("scores-*.parquet"))) == 2
    # A damaged file is warned about and rebuilt, never a failed run.
    for path in tmp_path.glob("scores-*.parquet"):
        path.write_bytes(b"garbage")
    again: list = []
    with caplog.at_level(logging.WARNING, logger="redone_sdk.replay.arms"):
        ScoreCache(tmp_path).scores("fp", ("x",), keys_a, compute_with(0.5, again))
    assert again == [2] and "unreadable" in caplog.text
    assert ScoreCache(tmp_path).scores("fp", ("x",), keys_a, compute_with(0.0, []))[:, 0].tolist() == [0.5, 0.5]
