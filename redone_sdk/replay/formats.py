"""Replay input files: tell Parquet (a file or a folder of them) from JSON lines (optionally gzipped), and read
a small table's rows as dicts with every row that is not a JSON object counted, never dropped silently."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = [
    "PARQUET_SUFFIXES",
    "JSONL_SUFFIXES",
    "detect_format",
    "parquet_files",
    "parquet_schema",
    "open_text",
    "iter_dict_rows",
    "require_columns",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def detect_format(path: str | Path) -> str:
    """`parquet` for a .parquet file or a folder of them, `jsonl` for JSON lines (optionally gzipped)."""
    path = Path(path)
    if not path.exists():
        raise ReplayInputError(f"{path} does not exist")
    if path.is_dir():
        if not parquet_files(path):
            raise ReplayInputError(f"folder {path} holds no .parquet files")
        return "parquet"
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise ReplayInputError(
        f"cannot tell the format of {path}: name it *.parquet (or a folder of them) or *.jsonl / *.jsonl.gz"
    )


def parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES))
    return [path]


def open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def parquet_schema(files: list[Path]) -> pa.Schema:
    try:
        return pq.read_schema(files[0])
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReplayInputError(f"{files[0]} is not a readable Parquet file: {exc}") from None


def iter_dict_rows(
    path: Path, issues: TableIssues, columns: Iterable[str], batch_rows: int
) -> Iterator[tuple[int, dict]]:
    """Yield (row number, record) for every row; rows that are not JSON objects are counted in `issues`."""
    fmt = detect_format(path)
    wanted = list(columns)
    if fmt == "parquet":
        files = parquet_files(path)
        schema = parquet_schema(files)
        present = [c for c in wanted if c in schema.names]
        issues.ignored_columns = sorted(set(schema.names) - set(wanted))
        row = 0
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=present):
                for record in batch.to_pylist():
                    issues.rows_read += 1
                    yield row, record
                    row += 1
        return
    ignored: set[str] = set()
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                issues.rows_read += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    issues.add("not JSON", row=number, value=f"{exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(record, dict):
                    issues.add("not a JSON object", row=number, value=type(record).__name__)
                    continue
                ignored.update(k for k in record if k not in wanted)
                yield number, record
        except UnicodeDecodeError as exc:
            raise ReplayInputError(f"{path} is not UTF-8 text: {exc}") from None
    issues.ignored_columns = sorted(ignored)


def require_columns(path: Path, required: Iterable[str], table: str) -> None:
    """For Parquet, a missing required column is an error for the whole file, named up front."""
    if detect_format(path) != "parquet":
        return
    names = parquet_schema(parquet_files(path)).names
    missing = [c for c in required if c not in names]
    if missing:
        raise ReplayInputError(f"{table} table {path} lacks column(s) {missing}; it has {names}")
