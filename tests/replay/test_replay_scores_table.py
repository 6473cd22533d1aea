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
