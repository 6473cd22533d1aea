import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from redone_sdk.replay.formats import detect_format
from redone_sdk.replay.hashing import string_hash64
from redone_sdk.replay.impressions import iter_impressions
from redone_sdk.replay.labels import read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.sessions import read_judgments, read_sessions


def _notes(write_rows, name: str = "notes.parquet", n: int = 3) -> Path:
    return write_rows(name, [{"note_id": f"n{i}", "content": f"content {i}"} for i in range(n)])


def _read_all(path: Path, notes_path: Path, **kw) -> tuple[list, TableIssues]:
    issues = TableIssues(table="impressions")
    batches = list(iter_impressions(path, read_notes(notes_path), issues, **kw))
    return batches, issues


def test_parquet_impressions_bad_rows_counted_by_first_reason(tmp_path: Path, write_rows) -> None:
    notes = _notes(write_rows)
    table = pa.table(
        {
            "timestamp": pa.array(
                [1736150400, None, 1736150400, 1736150400, 1736150400, 1736150400, 1736150400_000, 1736150400]
            ),
            "user": ["u1", "u2", None, "", "u5", "u6", "u7", "u8"],
            "note": ["n0", "n1", "n2", "n0", "zz", "n1", "n1", "n2"],
            "surface": ["feed"] * 8,
            "position": pa.array([1, 2, 3, 4, 5, 0, 1, 2], type=pa.int16()),
            "click": pa.array([0, 1, 0, 0, 0, 0, 0, 2], type=pa.int8()),
            "extra": list(range(8)),
        }
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    batches, issues = _read_all(path, notes)
    assert sum(len(b) for b in batches) == 1
    assert issues.rows_read == 8 and issues.rows_used == 1
    assert issues.reasons == {
        "missing timestamp": 1,
        "missing user": 2,  # null and empty
        "note not in notes table": 1,
        "position not a positive integer": 1,
        "timestamp out of range (2000-2100, epoch seconds)": 1,  # milliseconds in an integer column
        "click not 0/1": 1,
    }
    assert issues.bad_rows + issues.rows_used == issues.rows_read
    assert {e.row for e in issues.examples} == {1, 2, 4, 5, 6, 7}
    assert issues.ignored_columns == ["extra"]
    (batch,) = batches
    assert batch.timestamp.tolist() == [1736150400]
    assert batch.position.tolist() == [1] and batch.click.tolist() == [False]


def test_jsonl_impressions_types_and_timestamps(write_rows) -> None:
    notes = _notes(write_rows, "notes.jsonl")
    rows = [
        {
            "timestamp": "2025-01-06T08:00:00+08:00",
            "user": "a",
            "note": "n0",
            "surface": "f",
            "position": 1,
            "click": True,
        },
        {"timestamp": "2025-01-06 00:00:00", "user": 7, "note": "n0", "surface": "f", "position": 2.0, "click": 0},
        {"timestamp": 1736121600, "user": "c", "note": "n0", "surface": "f", "position": 1, "click": 1},
        {"timestamp": "yesterday", "user": "d", "note": "n0", "surface": "f", "position": 1, "click": 0},
        {"timestamp": 1736121600, "user": ["x"], "note": "n0", "surface": "f", "position": 1, "click": 0},
        {"timestamp": 1736121600, "user": "e", "note": "n0", "surface": "f", "position": "1", "click": 0},
        {"timestamp": 1736121600, "user": "f", "note": "n0", "surface": "f", "position": 1, "click": "yes"},
        {"timestamp": 1736121600, "user": "g", "surface": "f", "position": 1, "click": 0},
    ]
    path = write_rows("log.jsonl", rows)
    path.write_text(path.read_text() + "[1, 2]\n{broken\n\n")
    batches, issues = _read_all(path, notes)
    (batch,) = batches
    # All three timestamp spellings are 2025-01-06T00:00:00Z.
    assert batch.timestamp.tolist() == [1736121600] * 3
    assert batch.click.tolist() == [True, False, True]
    assert issues.rows_read == 10
    assert issues.reasons == {
        "unparseable timestamp": 1,
        "user not a string": 1,
        "position not a positive integer": 1,
        "click not 0/1": 1,
        "missing note": 1,
        "not a JSON object": 1,
        "not JSON": 1,
    }
    rows_of = {e.reason: e.row for e in issues.examples}
    assert rows_of["not JSON"] == 10 and rows_of["missing note"] == 8  # JSON lines count lines from 1


def test_missing_column_and_unknown_format_are_errors(tmp_path: Path, write_rows) -> None:
    notes = _notes(write_rows)
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"timestamp": [1736121600], "user": ["u"], "note": ["n0"]}), path)
    with pytest.raises(ReplayInputError, match=r"lacks column\(s\) \['surface', 'position', 'click'\]"):
        _read_all(path, notes)
    (tmp_path / "log.txt").write_text("a,b\n")
    with pytest.raises(ReplayInputError, match="cannot tell the format"):
        detect_format(tmp_path / "log.txt")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ReplayInputError, match="not a readable Parquet"):
        _read_all(bad, notes)


def test_parquet_folder_and_dictionary_columns(tmp_path: Path, write_rows) -> None:
    notes = _notes(write_rows)
    folder = tmp_path / "log"
    folder.mkdir()
    for part in range(2):
        table = pa.table(
            {
                "timestamp": pa.array([(1736121600 + part) * 1000] * 3, type=pa.timestamp("ms", tz="UTC")),
                "user": pa.array(["u1", "u2", "u1"]).dictionary_encode(),
                "note": pa.array(["n0", "n1", "n2"]).dictionary_encode(),
                "surface": ["feed"] * 3,
                "position": [1, 2, 3],
                "click": [True, False, False],
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")
    batches, issues = _read_all(folder, notes, batch_rows=2)
    assert issues.rows_used == 6
    note = np.concatenate([b.note for b in batches])
    assert note.tolist() == [0, 1, 2, 0, 1, 2]
    users = np.concatenate([b.user_hash for b in batches])
    assert users[0] == users[2] == users[3] != users[1]
    assert np.concatenate([b.timestamp for b in batches]).tolist() == [1736121600] * 3 + [1736121601] * 3


def test_string_hash_is_stable_across_encodings() -> None:
    values = ["u1", "", "héllo wörld", "u1", None, "x" * 300]
    plain = string_hash64(pa.array(values))
    assert plain[0] == plain[3] and plain[4] == 0 and len(set(plain.tolist())) == 5
    assert (string_hash64(pa.array(values).dictionary_encode()) == plain).all()
    assert (string_hash64(pa.array(values, type=pa.large_string())) == plain).all()
    assert (string_hash64(pa.array(values).slice(2, 3)) == plain[2:5]).all()
    assert (string_hash64(pa.chunked_array([values[:2], values[2:]])) == plain).all()


def test_string_hash_matches_reference_fnv() -> None:
    """The value is fixed (FNV-1a of the UTF-8 bytes, xor length, then splitmix64): the same on every machine."""

    def fnv1a(data: bytes) -> int:
        h = 0xCBF29CE484222325
        for byte in data:
            h = ((h ^ byte) * 0x100000001B3) % 2**64
        return h

    def splitmix64(x: int) -> int:  # Steele, Lea and Flood's finalizer, in plain integers
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
        return x ^ (x >> 31)

    words = ["u1", "note-123", "中文", "a" * 70]
    expected = [splitmix64(fnv1a(w.encode()) ^ len(w.encode())) for w in words]
    assert string_hash64(pa.array(words)).tolist() == expected


def test_notes_rows_of_equals_exact_lookup(write_rows) -> None:
    index = read_notes(_notes(write_rows, n=50))
    probe = pa.array(["n3", "zz", "n49", None, "n0", "n5"])
    exact = index.index_of(probe).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    assert index.rows_of(probe).tolist() == exact.tolist() == [3, -1, 49, -1, 0, 5]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_notes_validation_same_for_both_formats(write_rows, suffix: str) -> None:
    rows = [
        {"note_id": "a", "title": "title only", "content": None, "created_at": "2025-01-06T00:00:00+00:00"},
        {"note_id": "b", "title": "", "content": "   "},  # empty text
        {"note_id": "", "title": "", "content": "no id"},
        {"note_id": "a", "title": "", "content": "duplicate id"},
        {"note_id": "c" * 300, "title": "", "content": "id too long"},
        {"note_id": "d", "title": "", "content": "ok", "lang": "zh"},
        {"note_id": "e", "title": "", "content": "long enough to pass", "lang": "x" * 20},
    ]
    index = read_notes(write_rows("notes" + suffix, rows))
    assert index.ids.to_pylist() == ["a", "d"]
    assert index.created_at[0] == 1736121600
    reasons = index.issues.reasons
    assert reasons["duplicate note_id"] == 1
    assert sum(reasons.values()) == 5
    assert any("non-empty title or content" in r for r in reasons)
    assert any(r.startswith("note_id:") and "at least 1" in r for r in reasons)
    assert any(r.startswith("note_id:") and "at most 256" in r for r in reasons)
    assert any(r.startswith("lang:") for r in reasons)


def test_labels_checks(write_rows) -> None:
    notes = read_notes(_notes(write_rows, n=4))
    rows = [
        {"note_id": "n0", "label": "safe"},
        {"note_id": "n1", "label": "hate"},
        {"note_id": "n1", "label": "hate"},
        {"note_id": "n1", "label": "safe"},
        {"note_id": "n2", "label": "Safe"},
        {"note_id": "zz", "label": "safe"},
        {"note_id": None, "label": "safe"},
        {"note_id": "n3", "label": None},
    ]
    for suffix in (".parquet", ".jsonl"):
        labels = read_labels(write_rows("labels" + suffix, rows), notes=notes)
        assert labels.by_note == {"n0": "safe", "n1": "hate"}
        assert labels.harmful("n1") is True and labels.harmful("n0") is False and labels.harmful("n3") is None
        assert labels.issues.reasons == {
            "duplicate label": 1,
            "conflicting duplicate label": 1,
            "unknown label": 1,
            "note not in notes table": 1,
            "missing note_id": 1,
            "missing label": 1,
        }
        assert labels.issues.rows_used == 2


def test_sessions_and_judgments(write_rows) -> None:
    notes = read_notes(_notes(write_rows, n=4))
    rows = [
        {"session_id": "s1", "query": "q", "notes": ["n0", "n1"], "clicks": [0, 1]},
        {"session_id": "s2", "query": "q", "notes": ["n0", "n1"], "clicks": [0]},
        {"session_id": "s3", "query": "q", "notes": ["n0", "n0"], "clicks": [0, 0]},
        {"session_id": "s4", "query": "q", "notes": ["n0", "zz"], "clicks": [0, 0]},
        {"session_id": "s5", "query": " ", "notes": ["n0"], "clicks": [0]},
        {"session_id": "s1", "query": "q", "notes": ["n2"], "clicks": [1]},
        {"session_id": "s6", "query": "q", "notes": ["n2"], "clicks": [3]},
        {"session_id": "s7", "query": "q", "notes": [], "clicks": []},
    ]
    sessions = read_sessions(write_rows("sessions.jsonl", rows), notes=notes)
    assert sessions.session_ids == ["s1"] and sessions.clicks == [[0, 1]]
    assert sessions.issues.reasons == {
        "clicks not one per note shown": 1,
        "note shown twice in one session": 1,
        "note not in notes table": 1,
        "missing query": 1,
        "duplicate session_id": 1,
        "click not 0/1": 1,
        "no notes shown": 1,
    }
    grades, issues = read_judgments(
        write_rows(
            "judgments.jsonl",
            [
                {"query": "q", "note_id": "n0", "grade": 3},
                {"query": "q", "note_id": "n1", "grade": 7},
                {"query": "q", "note_id": "n0", "grade": 1},
            ],
        )
    )
    assert grades == {("q", "n0"): 3}
    assert issues.reasons == {"grade not an integer in -1..3": 1, "duplicate judgment": 1}


def test_issue_summary_line() -> None:
    issues = TableIssues(table="impressions", rows_read=10, rows_used=7)
    issues.add("missing user", 2, row=3, value={"user": None})
    issues.add("not JSON", 1, row=9)
    assert issues.summary() == "impressions: 10 rows read, 7 used, 3 bad (missing user: 2, not JSON: 1)"
    assert json.loads(issues.model_dump_json())["reasons"] == {"missing user": 2, "not JSON": 1}
    assert pc.sum(pa.array([e.row for e in issues.examples])).as_py() == 12
