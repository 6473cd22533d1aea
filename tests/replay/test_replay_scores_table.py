"""`redone replay score` and `exposure --scores TABLE`: an arm reads a scores table made by its bundle instead of
scoring, with the same results; a table of another bundle, a table missing notes of the log, or a file that is
not a scores table is refused with one line (exit 2). The Spark engine's tables: tests/spark."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redone_sdk.replay.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def cold_texts(count: int) -> list[tuple[str, str]]:
    """(text, label) of the first COLD dev rows: offensive (1) and not (0) notes of the fixture data."""
    with open(FIXTURES / "cold" / "dev.csv", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    return [(r["TEXT"], "offensive" if r["label"] == "1" else "safe") for r in rows[:count]]


@pytest.fixture
def log(write_rows) -> dict[str, Path]:
    """24 notes of real COLD texts, each seen by two users."""
    texts = cold_texts(24)
    notes = [
        {"note_id": f"n{i}", "content": t, "created_at": "2025-01-06T00:00:00+00:00"} for i, (t, _) in enumerate(texts)
    ]
    impressions = [
        {
            "timestamp": f"2025-01-06T{1 + i % 20:02d}:00:00Z",
            "user": u,
            "note": f"n{i}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for u in ("u0", "u1")
        for i in range(len(texts))
    ]
    labels = [{"note_id": f"n{i}", "label": label} for i, (_, label) in enumerate(texts)]
    return {
        "impressions": write_rows("impressions.jsonl", impressions),
        "notes": write_rows("notes.parquet", notes),
        "labels": write_rows("labels.jsonl", labels),
    }


def exposure_args(log: dict[str, Path], out: Path, bundle: Path) -> list[str]:
    return [
        "exposure",
        "--impressions",
        str(log["impressions"]),
        "--notes",
        str(log["notes"]),
        "--labels",
        str(log["labels"]),
        "--arm",
        f"redone={bundle}",
        "--out",
        str(out),
        "--bootstrap",
        "0",
        "--no-cache",
    ]


def arm_results(out: Path) -> dict[str, dict]:
    result = json.loads((out / "exposure.json").read_text(encoding="utf-8"))
    return {a["name"]: {k: v for k, v in a.items() if k != "description"} for a in result["arms"]}


def test_exposure_with_a_scores_table_equals_scoring(log, tmp_path: Path, default_bundle: Path, capsys) -> None:
    table = tmp_path / "scores.parquet"
    assert main(["score", "--notes", str(log["notes"]), "--out", str(table), "--bundle", str(default_bundle)]) == 0
    written = pq.read_table(table)
    assert written.num_rows == 24
    assert set(written.column("bundle_name").to_pylist()) == {"redone-base"}

    assert main(exposure_args(log, tmp_path / "scored", default_bundle)) == 0
    assert main([*exposure_args(log, tmp_path / "from-table", default_bundle), "--scores", str(table)]) == 0
    scored, from_table = arm_results(tmp_path / "scored"), arm_results(tmp_path / "from-table")
    assert from_table == scored
    assert scored["redone"]["notes_actioned"] > 0  # the texts include offensive ones: the comparison means something
    described = json.loads((tmp_path / "from-table" / "exposure.json").read_text(encoding="utf-8"))
    assert "precomputed scores" in next(a["description"] for a in described["arms"] if a["name"] == "redone")


def _rewrite(table: Path, target: Path, **changes) -> Path:
    data = pq.read_table(table)
    for name, values in changes.items():
        i = data.column_names.index(name)
        data = data.set_column(i, name, pa.array(values(data.column(name).to_pylist())))
    pq.write_table(data, target)
    return target


def test_a_table_of_another_bundle_or_missing_notes_is_refused(log, tmp_path: Path, default_bundle: Path, capsys):
    table = tmp_path / "scores.parquet"
    assert main(["score", "--notes", str(log["notes"]), "--out", str(table), "--bundle", str(default_bundle)]) == 0
    capsys.readouterr()

    other = _rewrite(table, tmp_path / "other.parquet", bundle_digest=lambda v: ["0" * 64] * len(v))
    assert main([*exposure_args(log, tmp_path / "a", default_bundle), "--scores", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"scores table {other} was made by redone-base" in err and "0" * 64 in err and "no arm runs" in err
    assert len(err.strip().splitlines()) == 1

    short = tmp_path / "short.parquet"
    pq.write_table(pq.read_table(table).slice(0, 20), short)
    assert main([*exposure_args(log, tmp_path / "b", default_bundle), "--scores", str(short)]) == 2
    err = capsys.readouterr().err
    assert "4 notes of the log have no precomputed scores" in err and "n20" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PAR1 not really parquet", "cannot read scores table"),
        (None, "lacks bundle_name, bundle_version, bundle_digest"),
    ],
)
def test_not_a_scores_table(log, tmp_path: Path, default_bundle: Path, capsys, content, message) -> None:
    bad = tmp_path / "bad.parquet"
    if content is None:
        pq.write_table(pa.table({"note_id": ["n0"], "score_offensive": [0.5]}), bad)
    else:
        bad.write_bytes(content)
    assert main([*exposure_args(log, tmp_path / "out", default_bundle), "--scores", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_score_refuses_an_existing_output_unless_overwrite(log, tmp_path: Path, default_bundle: Path, capsys):
    table = tmp_path / "scores.parquet"
    table.write_bytes(b"old")
    args = ["score", "--notes", str(log["notes"]), "--out", str(table), "--bundle", str(default_bundle)]
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert pq.read_table(table).num_rows == 24


@pytest.fixture
def search_log(write_rows) -> dict[str, Path]:
    """60 page views of 6 COLD notes each over 10 queries, clicks drawn with a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(0)
    texts = cold_texts(60)
    notes = [{"note_id": f"n{i}", "content": t} for i, (t, _) in enumerate(texts)]
    sessions = []
    for s in range(60):
        q = s % 10
        shown = [f"n{(q * 6 + k) % 60}" for k in rng.permutation(6)]
        clicks = (rng.random(6) < 0.3 / np.arange(1, 7)).astype(int).tolist()
        sessions.append({"session_id": f"s{s}", "query": f"查询 {q}", "notes": shown, "clicks": clicks})
    return {"sessions": write_rows("sessions.parquet", sessions), "notes": write_rows("notes.parquet", notes)}


def search_args(log: dict[str, Path], out: Path, bundle: Path) -> list[str]:
    return [
        "search",
        "--sessions",
        str(log["sessions"]),
        "--notes",
        str(log["notes"]),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--bootstrap",
        "0",
        "--no-cache",
        "--accept-unidentified",
    ]


def test_search_with_a_pair_scores_table_equals_scoring(search_log, tmp_path: Path, default_bundle: Path, capsys):
    table = tmp_path / "pairs.parquet"
    score = ["score", "--sessions", str(search_log["sessions"]), "--notes", str(search_log["notes"])]
    assert main([*score, "--out", str(table), "--bundle", str(default_bundle)]) == 0
    written = pq.read_table(table)
    assert written.num_rows == 60  # 10 queries x 6 notes, each pair once
    assert main(search_args(search_log, tmp_path / "scored", default_bundle)) in (0, 3)
    assert main([*search_args(search_log, tmp_path / "table", default_bundle), "--scores", str(table)]) in (0, 3)
    results = [json.loads((tmp_path / d / "search.json").read_text(encoding="utf-8")) for d in ("scored", "table")]
    for key in ("sessions_reordered", "model_cpr_new", "change", "ndcg_new"):
        if key in results[0]:
            assert results[1][key] == results[0][key], key
    assert results[0]["sessions_reordered"] > 0  # the matcher reorders pages: the comparison means something
    assert "scores table" in results[1]["matcher"]

    short = tmp_path / "short.parquet"
    pq.write_table(written.slice(0, 50), short)
    capsys.readouterr()
    assert main([*search_args(search_log, tmp_path / "short", default_bundle), "--scores", str(short)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("redone replay: error: ")]
    assert len(errors) == 1 and "10 (query, note) pairs of the log have no score" in errors[0]

    notes_table = tmp_path / "notes-table.parquet"
    assert main(["score", "--notes", str(search_log["notes"]), "--out", str(notes_table)]) == 0
    capsys.readouterr()
    assert main([*search_args(search_log, tmp_path / "wrong", default_bundle), "--scores", str(notes_table)]) == 2
    assert "is not a pair scores table" in capsys.readouterr().err
