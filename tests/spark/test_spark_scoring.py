"""Scoring on Spark (`redone moderate --engine spark`) on local[2]: the same verdicts and scores as the local
engine (`redone replay score`), bundles verified on the executors, bad input refused with one line (exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redone_sdk.adapters.spark.job import DUPLICATE_ID
from redone_sdk.cli import main as redone
from redone_sdk.replay.cli import main as replay

pytestmark = pytest.mark.spark

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TOLERANCE = 1e-5  # the same int8 graph on both sides; measured: 0.0 (see benchmarks/results/spark.md)


def _notes(count: int) -> list[dict]:
    with open(FIXTURES / "cold" / "dev.csv", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))[:count]
    notes = []
    for i, row in enumerate(rows):
        text = row["TEXT"]
        if i % 5 == 0:  # title only
            notes.append({"note_id": f"n{i}", "title": text, "content": None})
        elif i % 5 == 1:  # title and content
            notes.append({"note_id": f"n{i}", "title": f"标题 {i}", "content": text})
        else:
            notes.append({"note_id": f"n{i}", "title": None, "content": text})
    return notes


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory, default_bundle: Path) -> dict[str, Path]:
    """40 notes in two Parquet files (two partitions) scored by Spark through the CLI and by the local engine."""
    root = tmp_path_factory.mktemp("spark-scoring")
    notes = root / "notes"
    notes.mkdir()
    rows = _notes(40)
    for part, chunk in enumerate((rows[:20], rows[20:])):
        pq.write_table(pa.Table.from_pylist(chunk), notes / f"part-{part}.parquet")
    spark_table = root / "spark-scores"
    assert redone(["moderate", "--engine", "spark", str(notes), str(spark_table), "--bundle", str(default_bundle)]) == 0
    local_table = root / "local-scores.parquet"
    assert replay(["score", "--notes", str(notes), "--out", str(local_table), "--bundle", str(default_bundle)]) == 0
    return {"notes": notes, "spark": spark_table, "local": local_table, "root": root}


def _by_id(path: Path) -> dict[str, dict]:
    return {row["note_id"]: row for row in pq.read_table(path).to_pylist()}


def test_spark_verdicts_and_scores_equal_the_local_engine(scored, default_bundle: Path) -> None:
    from redone_sdk.bundle import Bundle

    on_spark, local = _by_id(scored["spark"]), _by_id(scored["local"])
    assert len(list(scored["spark"].glob("part-*.parquet"))) >= 2  # two partitions: two Python workers' output
    assert sorted(on_spark) == sorted(local) == sorted(f"n{i}" for i in range(40))
    score_columns = [c for c in next(iter(local.values())) if c.startswith("score_")]
    assert score_columns == ["score_offensive", "score_hate", "score_sexism"]
    for note_id, row in local.items():
        other = on_spark[note_id]
        assert (other["action"], other["label"]) == (row["action"], row["label"]), note_id
        for column in score_columns:
            assert abs(other[column] - row[column]) <= TOLERANCE, (note_id, column)
    assert {r["action"] for r in local.values()} - {"allow"}  # some notes are actioned: verdicts really compared
    digest = Bundle.load(default_bundle).digest
    assert {(r["bundle_name"], r["bundle_version"], r["bundle_digest"]) for r in on_spark.values()} == {
        ("redone-base", Bundle.load(default_bundle).version, digest)
    }


def test_exposure_reads_the_spark_table(scored, tmp_path: Path, default_bundle: Path) -> None:
    impressions = [
        {
            "timestamp": "2025-01-06T01:00:00Z",
            "user": f"u{i % 3}",
            "note": f"n{i}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for i in range(40)
    ]
    log = tmp_path / "impressions.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in impressions), encoding="utf-8")
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"note_id": f"n{i}", "label": "safe"}) + "\n" for i in range(40)))
    common = ["--impressions", str(log), "--notes", str(scored["notes"]), "--arm", f"redone={default_bundle}"]
    common += ["--labels", str(labels)]
    common += ["--bootstrap", "0", "--no-cache"]
    assert replay(["exposure", *common, "--out", str(tmp_path / "a"), "--scores", str(scored["spark"])]) == 0
    assert replay(["exposure", *common, "--out", str(tmp_path / "b")]) == 0
    arms = [json.loads((tmp_path / d / "exposure.json").read_text(encoding="utf-8"))["arms"] for d in "ab"]
    actioned = [{a["name"]: a["notes_actioned"] for a in result} for result in arms]
    assert actioned[0] == actioned[1]
    assert actioned[0]["redone"] > 0


def test_a_worker_refuses_a_bundle_of_another_digest(spark, scored, default_bundle: Path) -> None:
    from redone_sdk.adapters.spark.job import SparkScoringError, score_with_spec
    from redone_sdk.adapters.spark.worker import spec_for
    from redone_sdk.moderator import Moderator

    spec = spec_for(Moderator.load(default_bundle), str(default_bundle), shipped=False, options={"workers": 1})
    forged = spec.__class__(**{**spec.__dict__, "digest": "0" * 64})
    with pytest.raises(SparkScoringError) as caught:
        score_with_spec(spark, scored["notes"], scored["root"] / "forged", forged)
    message = str(caught.value)
    assert "on executor" in message and f"expected {'0' * 64}" in message and spec.digest in message
    assert len(message.splitlines()) == 1


def test_a_worker_loads_its_bundle_once(default_bundle: Path) -> None:
    from redone_sdk.adapters.spark.worker import load_moderator, spec_for
    from redone_sdk.moderator import Moderator

    spec = spec_for(Moderator.load(default_bundle), str(default_bundle), shipped=False, options={"workers": 1})
    assert load_moderator(spec) is load_moderator(spec)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: pq.write_table(pa.table({"id": ["a"], "content": ["x"]}), p), "has no 'note_id' column"),
        (lambda p: pq.write_table(pa.table({"note_id": ["a"], "lang": ["zh"]}), p), "neither 'title' nor 'content'"),
        (lambda p: p.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1"), "cannot read notes dataset"),
        (lambda p: None, "no such notes dataset"),
    ],
    ids=["missing-note-id", "no-text", "corrupt", "missing-file"],
)
def test_bad_input_is_one_line_and_exit_2(spark, tmp_path: Path, default_bundle: Path, capsys, make, message):
    notes = tmp_path / "notes.parquet"
    make(notes)
    code = redone(["moderate", "--engine", "spark", str(notes), str(tmp_path / "out"), "--bundle", str(default_bundle)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_engine_usage_errors(tmp_path: Path, capsys) -> None:
    assert redone(["moderate", str(tmp_path / "notes.jsonl"), str(tmp_path / "out")]) == 2
    assert "OUTPUT goes with --engine spark" in capsys.readouterr().err
    assert redone(["moderate", "--engine", "spark", "-"]) == 2
    assert "OUTPUT goes with --engine spark" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the local engine still wants a JSON-lines file
        redone(["moderate", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is a directory; give a JSON-lines file" in capsys.readouterr().err


def test_spark_pair_scores_equal_the_local_engine(scored, default_bundle: Path) -> None:
    """`redone replay score --engine spark --sessions`: the matcher's (query, note) scores, as the local engine's."""
    root = scored["root"]
    sessions = [
        {"session_id": f"s{s}", "query": f"查询 {s % 4}", "notes": [f"n{(s * 3 + k) % 40}" for k in range(5)]}
        for s in range(12)
    ]
    sessions[0]["notes"].append("not-a-note")  # a logged id the notes table lacks: no pair for it
    pq.write_table(pa.Table.from_pylist(sessions), root / "sessions.parquet")
    common = ["score", "--sessions", str(root / "sessions.parquet"), "--notes", str(scored["notes"])]
    common += ["--bundle", str(default_bundle)]
    assert replay([*common, "--engine", "spark", "--out", str(root / "pairs-spark")]) == 0
    assert replay([*common, "--out", str(root / "pairs-local.parquet")]) == 0

    def by_pair(path: Path) -> dict[tuple[str, str], dict]:
        return {(r["query"], r["note_id"]): r for r in pq.read_table(path).to_pylist()}

    on_spark, local = by_pair(root / "pairs-spark"), by_pair(root / "pairs-local.parquet")
    expected = {(s["query"], n) for s in sessions for n in s["notes"] if n != "not-a-note"}
    assert set(on_spark) == set(local) == expected
    for pair, row in local.items():
        assert abs(on_spark[pair]["score"] - row["score"]) <= TOLERANCE, pair
    assert len({round(r["score"], 4) for r in local.values()}) > 1  # real, varied scores


def test_invalid_notes_are_skipped_counted_and_listed_like_the_local_engine(
    spark, tmp_path: Path, default_bundle: Path, capsys
) -> None:
    """A note the local engine skips (no id, no text, an id over 256 characters) does not stop the Spark job: it
    is left out of the scores table, counted on stderr, and listed with its reason in OUTPUT/_bad_rows."""
    from redone_sdk.replay.scores_table import read_scores_table

    good = _notes(6)
    bad = [
        {"note_id": None, "title": "a title with no id", "content": None},
        {"note_id": "empty", "title": "", "content": "   "},
        {"note_id": "x" * 300, "title": None, "content": "a long enough body"},
    ]
    notes = tmp_path / "notes"
    notes.mkdir()
    pq.write_table(pa.Table.from_pylist(good[:3] + bad[:2]), notes / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(bad[2:] + good[3:]), notes / "part-1.parquet")
    out, local = tmp_path / "spark-scores", tmp_path / "local.parquet"
    # exit 1: notes were skipped (listed), as `redone moderate` exits 1 on bad lines
    assert redone(["moderate", "--engine", "spark", str(notes), str(out), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert "6 notes scored" in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    assert "3 notes failed validation or repeated an earlier note_id and were skipped" in captured.err
    assert "_bad_rows" in captured.err
    assert replay(["score", "--notes", str(notes), "--out", str(local), "--bundle", str(default_bundle)]) == 1
    local_err = capsys.readouterr().err  # the local engine says so too: the count by reason and each row
    assert "notes: 9 rows read, 6 used, 3 bad" in local_err and "String should have at most 256" in local_err
    ids = sorted(n["note_id"] for n in good)
    assert sorted(_by_id(out)) == sorted(_by_id(local)) == ids  # pyarrow's reader leaves _bad_rows out
    assert sorted(spark.read.parquet(str(out)).toPandas()["note_id"]) == ids  # and so does Spark's
    assert sorted(read_scores_table(out).scores.note_ids.to_pylist()) == ids
    listed = {r["note_id"]: r["error"] for r in pq.read_table(out / "_bad_rows").to_pylist()}
    assert set(listed) == {None, "empty", "x" * 300}
    assert listed[None] == "note_id: Field required"
    assert listed["x" * 300] == "note_id: String should have at most 256 characters"
    assert "needs a non-empty title or content" in listed["empty"]
    # Pairs: a session showing an invalid note gets no pair for it; the note is listed the same way.
    sessions = tmp_path / "sessions.parquet"
    pq.write_table(pa.Table.from_pylist([{"query": "查询", "notes": ["n0", "empty", "n4"]}]), sessions)
    pairs = tmp_path / "pairs"
    common = ["score", "--sessions", str(sessions), "--notes", str(notes), "--bundle", str(default_bundle)]
    assert replay([*common, "--engine", "spark", "--out", str(pairs)]) == 1
    assert "3 notes failed validation" in capsys.readouterr().err
    assert sorted(r["note_id"] for r in pq.read_table(pairs).to_pylist()) == ["n0", "n4"]
    assert len(pq.read_table(pairs / "_bad_rows")) == 3


def test_a_repeated_note_id_is_scored_once_from_its_first_row_like_the_local_engine(
    spark, tmp_path: Path, default_bundle: Path, capsys
) -> None:
    """Of a note_id on several valid rows, the first in file order is scored (files by path, then row order) and
    the later rows are listed as bad rows; an invalid first row does not count (the next valid one is kept)."""
    from redone_sdk import Moderator

    harmful, benign = "你们这些人都是垃圾，滚出去", "今天的天气很好，我们去公园散步吧"
    moderator = Moderator.load(default_bundle)
    first_score = moderator.classify({"note_id": "x", "content": harmful}).scores
    assert first_score != moderator.classify({"note_id": "x", "content": benign}).scores  # which row is kept shows
    notes = tmp_path / "notes"
    notes.mkdir()
    schema = pa.schema([("note_id", pa.string()), ("title", pa.string()), ("content", pa.string())])
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"note_id": "twice", "title": None, "content": harmful},
                {"note_id": "same-file", "title": None, "content": benign},
                {"note_id": "same-file", "title": None, "content": harmful},
                {"note_id": "late", "title": "", "content": " "},  # invalid: its valid repeat below is kept
            ],
            schema=schema,
        ),
        notes / "part-0.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"note_id": "twice", "title": None, "content": benign},
                {"note_id": "late", "title": None, "content": harmful},
                {"note_id": "once", "title": None, "content": benign},
            ],
            schema=schema,
        ),
        notes / "part-1.parquet",
    )
    out, local = tmp_path / "spark-scores", tmp_path / "local.parquet"
    assert redone(["moderate", "--engine", "spark", str(notes), str(out), "--bundle", str(default_bundle)]) == 1
    err = capsys.readouterr().err
    assert "3 notes failed validation or repeated an earlier note_id and were skipped" in err
    assert replay(["score", "--notes", str(notes), "--out", str(local), "--bundle", str(default_bundle)]) == 1
    assert "7 rows read, 4 used, 3 bad" in capsys.readouterr().err
    on_spark, on_local = _by_id(out), _by_id(local)
    assert sorted(on_spark) == sorted(on_local) == ["late", "once", "same-file", "twice"]
    for note_id, content in (("twice", harmful), ("same-file", benign), ("late", harmful), ("once", benign)):
        expected = moderator.classify({"note_id": note_id, "content": content}).scores
        for category, value in expected.items():
            assert abs(on_spark[note_id][f"score_{category}"] - value) <= TOLERANCE, (note_id, category)
            assert abs(on_local[note_id][f"score_{category}"] - value) <= TOLERANCE, (note_id, category)
    listed = sorted((r["note_id"], r["error"]) for r in pq.read_table(out / "_bad_rows").to_pylist())
    assert listed[0][0] == "late" and "needs a non-empty title or content" in listed[0][1]
    assert listed[1:] == [("same-file", DUPLICATE_ID), ("twice", DUPLICATE_ID)]
