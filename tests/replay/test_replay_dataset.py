"""Inputs read through `pyarrow.dataset`: folders of Parquet with hive partitions, `--period` / `--surface`
pushed down to the scan (pruned partitions are never opened), and the same checks as a single file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redone_sdk.replay.cli import main
from redone_sdk.replay.impressions import iter_impressions
from redone_sdk.replay.labels import read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

DAY0 = 1767225600  # 2026-01-01T00:00:00Z
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


pytestmark = pytest.mark.usefixtures("replay_log_per_test")


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.parquet"
    pq.write_table(pa.table({"note_id": [f"n{i}" for i in range(4)], "content": [f"note {i}" for i in range(4)]}), path)
    return path


def _partitioned_log(root: Path) -> dict[tuple[str, str], int]:
    """period=DAY/surface=SURFACE/part-0.parquet without `surface` in the files (the partition gives it);
    returns the rows per partition."""
    rows: dict[tuple[str, str], int] = {}
    for d, day in enumerate(DAYS):
        for s, surface in enumerate(("feed", "search")):
            n = 3 + d + 2 * s
            folder = root / f"period={day}" / f"surface={surface}"
            folder.mkdir(parents=True)
            table = pa.table(
                {
                    "timestamp": pa.array([DAY0 + d * 86_400 + 60 * k for k in range(n)], type=pa.int64()),
                    "user": [f"u{k}" for k in range(n)],
                    "note": [f"n{k % 4}" for k in range(n)],
                    "position": [1 + k for k in range(n)],
                    "click": [k % 2 for k in range(n)],
                }
            )
            pq.write_table(table, folder / "part-0.parquet")
            rows[(day, surface)] = n
    return rows


def _read(path: Path, notes: Path, **kw) -> tuple[list, TableIssues]:
    issues = TableIssues(table="impressions")
    return list(iter_impressions(path, read_notes(notes), issues, **kw)), issues


def test_hive_partitioned_folder_reads_every_file_with_partition_columns(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    rows = _partitioned_log(tmp_path / "log")
    batches, issues = _read(tmp_path / "log", notes, batch_rows=4)
    assert issues.rows_read == issues.rows_used == sum(rows.values())
    assert issues.bad_rows == 0 and issues.ignored_columns == ["period"]
    timestamps = np.concatenate([b.timestamp for b in batches])
    # The same rows as reading each file alone, files in name order (period, then surface).
    expected = []
    for day in DAYS:
        for surface in ("feed", "search"):
            table = pq.read_table(tmp_path / "log" / f"period={day}" / f"surface={surface}" / "part-0.parquet")
            expected += table.column("timestamp").to_pylist()
    assert timestamps.tolist() == expected


def test_period_and_surface_prune_partitions_without_opening_them(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    rows = _partitioned_log(tmp_path / "log")
    # Damage a file in a partition each filter rules out: reading it would fail.
    for day, surface in (("2026-01-01", "feed"), ("2026-01-03", "search")):
        (tmp_path / "log" / f"period={day}" / f"surface={surface}" / "part-0.parquet").write_bytes(b"not parquet")
    scan = {"period": (date(2026, 1, 2), date(2026, 1, 3)), "surfaces": ("feed",)}
    batches, issues = _read(tmp_path / "log", notes, **scan)
    assert issues.rows_used == rows[("2026-01-02", "feed")] + rows[("2026-01-03", "feed")]
    assert issues.rows_read == issues.rows_used and issues.rows_filtered == 0  # pruned rows are never read
    assert {int((t - DAY0) // 86_400) for b in batches for t in b.timestamp} == {1, 2}
    # Without the filters the damaged files are read, and that is a clear error naming one of them.
    with pytest.raises(ReplayInputError, match=r"part-0\.parquet"):
        _read(tmp_path / "log", notes)


def test_period_filters_rows_of_an_unpartitioned_log(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    path = tmp_path / "log.parquet"
    table = pa.table(
        {
            "timestamp": pa.array([(DAY0 + k * 43_200) * 1000 for k in range(6)], type=pa.timestamp("ms", tz="UTC")),
            "user": ["u"] * 6,
            "note": ["n0"] * 6,
            "surface": ["feed", "feed", "feed", "search", "feed", "feed"],
            "position": [1] * 6,
            "click": [0] * 6,
        }
    )
    pq.write_table(table, path)
    batches, issues = _read(path, notes, period=(date(2026, 1, 2), date(2026, 1, 2)), surfaces=["feed"])
    # Rows at 0 h and 12 h of each day: 2026-01-02 holds rows 2 and 3, and row 3 is another surface.
    assert np.concatenate([b.timestamp for b in batches]).tolist() == [DAY0 + 86_400]
    assert issues.rows_read == 6 and issues.rows_used == 1 and issues.rows_filtered == 5


def test_a_file_lacking_a_column_is_named(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    rows = _partitioned_log(tmp_path / "log")
    bad = tmp_path / "log" / "period=2026-01-02" / "surface=feed" / "part-1.parquet"
    pq.write_table(pa.table({"timestamp": [DAY0], "user": ["u"], "note": ["n0"]}), bad)
    with pytest.raises(ReplayInputError, match=r"period=2026-01-02/surface=feed/part-1\.parquet lacks column\(s\)"):
        _read(tmp_path / "log", notes)
    # Pruned by the period, it is not even opened.
    _, issues = _read(tmp_path / "log", notes, period=(date(2026, 1, 3), date(2026, 1, 3)))
    assert issues.rows_used == rows[("2026-01-03", "feed")] + rows[("2026-01-03", "search")]


def test_notes_and_labels_folders(tmp_path: Path) -> None:
    notes_dir = tmp_path / "notes"
    for part in range(2):
        folder = notes_dir / f"period=2026-01-0{part + 1}"
        folder.mkdir(parents=True)
        ids = [f"n{part * 3 + i}" for i in range(3)]
        pq.write_table(pa.table({"note_id": ids, "content": [f"text of {n}" for n in ids]}), folder / "part-0.parquet")
    notes = read_notes(notes_dir)
    assert notes.ids.to_pylist() == [f"n{i}" for i in range(6)]
    assert notes.issues.ignored_columns == ["period"]
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    pq.write_table(pa.table({"note_id": ["n0", "n1"], "label": ["safe", "hate"]}), labels_dir / "a.parquet")
    pq.write_table(pa.table({"note_id": ["n5", "zz"], "label": ["sexism", "safe"]}), labels_dir / "b.parquet")
    labels = read_labels(labels_dir, notes=notes)
    assert labels.by_note == {"n0": "safe", "n1": "hate", "n5": "sexism"}
    assert labels.issues.reasons == {"note not in notes table": 1}


def test_cli_period_and_surface_on_a_partitioned_log(tmp_path: Path, capsys) -> None:
    notes = _notes(tmp_path)
    rows = _partitioned_log(tmp_path / "log")
    (tmp_path / "log" / "period=2026-01-01" / "surface=search" / "part-0.parquet").write_bytes(b"damaged")
    out = tmp_path / "out"
    args = ["exposure", "--impressions", str(tmp_path / "log"), "--notes", str(notes), "--arm", "c=none"]
    args += ["--out", str(out), "--bootstrap", "0", "--no-cache"]
    assert main([*args, "--period", "2026-01-02..2026-01-03", "--surface", "search"]) == 0
    result = json.loads((out / "exposure.json").read_text())
    assert result["logged_exposures"] == rows[("2026-01-02", "search")] + rows[("2026-01-03", "search")]
    assert result["settings"]["period"] == ["2026-01-02", "2026-01-03"]
    assert (result["period_start"], result["period_end"]) == ("2026-01-02", "2026-01-03")
    assert main(args) == 2  # the damaged partition is read now: one line, exit 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "surface=search" in err


def test_month_partitions_are_pruned_by_overlap(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    for month, first_day in (("2026-01", DAY0), ("2026-02", DAY0 + 31 * 86_400)):
        folder = tmp_path / "log" / f"period={month}"
        folder.mkdir(parents=True)
        table = pa.table(
            {
                "timestamp": [first_day + 14 * 86_400, first_day + 20 * 86_400],
                "user": ["u1", "u2"],
                "note": ["n0", "n1"],
                "surface": ["feed", "feed"],
                "position": [1, 2],
                "click": [0, 1],
            }
        )
        pq.write_table(table, folder / "part-0.parquet")
    (tmp_path / "log" / "period=2026-02" / "part-0.parquet").write_bytes(b"damaged")
    # 2026-01-15 .. 2026-01-20 overlaps January only: February is never opened; the rows of January outside
    # the days are filtered by their timestamps.
    batches, issues = _read(tmp_path / "log", notes, period=(date(2026, 1, 15), date(2026, 1, 20)))
    assert np.concatenate([b.timestamp for b in batches]).tolist() == [DAY0 + 14 * 86_400]
    assert issues.rows_read == 2 and issues.rows_filtered == 1
    with pytest.raises(ReplayInputError, match="no partition"):
        _read(tmp_path / "log", notes, period=(date(2025, 1, 1), date(2025, 12, 31)))
