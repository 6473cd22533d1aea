"""Replay input files: Parquet (a file, or a folder of them with optional hive partitions, read as one
`pyarrow.dataset`), CSV and JSON lines (each optionally gzipped, a UTF-8 byte-order mark allowed), and the
rows of small tables as dicts, with every row that cannot be read counted, never dropped silently."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from redone_sdk.replay.columns import null_mask
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = [
    "PARQUET_SUFFIXES",
    "JSONL_SUFFIXES",
    "CSV_SUFFIXES",
    "ScanFilter",
    "detect_format",
    "parquet_files",
    "open_dataset",
    "dataset_columns",
    "scan_batches",
    "open_text",
    "csv_batches",
    "iter_dict_rows",
    "require_columns",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
CSV_SUFFIXES = (".csv", ".csv.gz")
# CSV cells are text; these columns of the small tables hold a JSON array (`["a", "b"]`) or an integer.
CSV_LIST_COLUMNS = frozenset({"tags", "notes", "clicks"})
CSV_INT_COLUMNS = frozenset({"grade"})
CSV_BLOCK_BYTES = 1 << 22


@dataclass(frozen=True)
class ScanFilter:
    """Rows a replay keeps: a UTC day range (inclusive) and surfaces; each None means all.

    On a hive-partitioned dataset, partitions `period=YYYY-MM-DD` (or `YYYY-MM`, `YYYY`; the key may also be
    `date` or `day`) and `surface=…` outside the filter are pruned before any of their files is opened.
    """

    period: tuple[date, date] | None = None
    surfaces: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.period is not None and self.period[0] > self.period[1]:
            raise ReplayInputError(f"period {self.period[0]}..{self.period[1]} ends before it starts")


_PERIOD_KEYS = ("period", "date", "day")


def detect_format(path: str | Path) -> str:
    """`parquet` for a .parquet file or a folder of them, `csv` for .csv(.gz), `jsonl` for JSON lines(.gz)."""
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
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise ReplayInputError(
        f"cannot tell the format of {path}: name it *.parquet (or a folder of them), *.csv(.gz) or *.jsonl(.gz)"
    )


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a folder (any depth, hidden and `_`-prefixed entries skipped) in name order."""
    if not path.is_dir():
        return [path]

    def visible(p: Path) -> bool:
        return not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)

    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES) and visible(p)
    )


def _one_line(exc: BaseException) -> str:
    """An Arrow error's text on one line (some span several)."""
    return " ".join(str(exc).split())


def _unreadable(path: Path, exc: BaseException) -> ReplayInputError:
    return ReplayInputError(f"{path} is not a readable Parquet file or dataset: {_one_line(exc)}")


def _partition_span(value: str) -> tuple[date, date] | None:
    """The days a period partition value covers: `2026-01-05`, `2026-01` or `2026`; None if not a date."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return day, day
        if len(value) == 7:
            first = date.fromisoformat(value + "-01")
            following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return first, date.fromordinal(following.toordinal() - 1)
        if len(value) == 4 and value.isdigit():
            return date(int(value), 1, 1), date(int(value), 12, 31)
    except ValueError:
        return None
    return None


def _partition_keeps(relative: Path, scan: ScanFilter) -> bool:
    """Whether a file's hive partitions (`key=value` folders) can hold rows the filter keeps."""
    for part in relative.parts[:-1]:
        key, sep, raw = part.partition("=")
        if not sep:
            continue
        value = unquote(raw)
        if key == "surface" and scan.surfaces is not None and value not in scan.surfaces:
            return False
        if key in _PERIOD_KEYS and scan.period is not None:
            span = _partition_span(value)
            if span is not None and (span[1] < scan.period[0] or span[0] > scan.period[1]):
                return False
    return True


def open_dataset(
    path: str | Path, *, dictionary_columns: Iterable[str] = (), scan: ScanFilter | None = None
) -> ds.Dataset:
    """A Parquet file, or a folder of them read as one dataset (hive partitions `key=value/` become columns).

    Files in partitions `scan` rules out (`surface=…`, `period=` / `date=` / `day=` a day, month or year) are
    left out before any file is opened. No data is read here; `dictionary_columns` are read
    dictionary-encoded (mapped once per dictionary).
    """
    path = Path(path)
    files = parquet_files(path)
    if path.is_dir() and scan is not None:
        files = [f for f in files if _partition_keeps(f.relative_to(path), scan)]
        if not files:
            raise ReplayInputError(f"no partition of {path} holds rows of the period/surfaces asked for")
    file_format = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=set(dictionary_columns)))
    try:
        if path.is_dir():
            return ds.dataset(
                [str(f) for f in files], format=file_format, partitioning="hive", partition_base_dir=str(path)
            )
        return ds.dataset(str(path), format=file_format)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None


def _partition_names(dataset: ds.Dataset) -> list[str]:
    partitioning = getattr(dataset, "partitioning", None)
    return list(partitioning.schema.names) if partitioning is not None else []


def dataset_columns(dataset: ds.Dataset, path: Path, required: Iterable[str], table: str) -> list[str]:
    """The dataset's column names; a file that lacks a required column (partition keys count as columns) or
    cannot be opened is an error naming it."""
    partition_names = _partition_names(dataset)
    required = list(required)
    for fragment in dataset.get_fragments():
        try:
            physical = fragment.physical_schema.names
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(Path(fragment.path), exc) from None
        have = set(physical) | set(partition_names)
        missing = [c for c in required if c not in have]
        if missing:
            where = fragment.path if path.is_dir() else path
            raise ReplayInputError(f"{table} table {where} lacks column(s) {missing}; it has {sorted(have)}")
    return list(dataset.schema.names)


def scan_batches(
    dataset: ds.Dataset,
    path: Path,
    columns: list[str],
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    """Record batches of the dataset in file order, several files and columns decoded in parallel. A file that
    turns out unreadable mid-way (a corrupt page, a truncated file) is a `ReplayInputError`, not a traceback."""
    try:
        scanner = dataset.scanner(columns=columns, batch_size=batch_rows, use_threads=True)
        for batch in scanner.to_batches():
            if batch.num_rows:
                yield batch
    except (OSError, pa.ArrowException) as exc:
        raise ReplayInputError(
            f"{path}: reading the Parquet data failed (a corrupt or truncated file, or files whose column types "
            f"differ): {_one_line(exc)}"
        ) from None


def open_text(path: Path) -> IO[str]:
    """A text file (optionally gzipped) as UTF-8; a leading byte-order mark is dropped, not read as data."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def _csv_header(path: Path) -> list[str]:
    try:
        reader = pcsv.open_csv(
            str(path),
            read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 16),
            parse_options=pcsv.ParseOptions(invalid_row_handler=lambda row: "skip"),  # rows: counted later
            convert_options=pcsv.ConvertOptions(include_columns=[]),
        )
        names = list(reader.schema.names)
    except (OSError, pa.ArrowException) as exc:
        raise ReplayInputError(f"{path} is not a readable CSV file: {_one_line(exc)}") from None
    if not names:
        raise ReplayInputError(f"{path} has no header row")
    return names


def csv_batches(
    path: Path, issues: TableIssues, columns: Iterable[str], batch_rows: int
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """(batch of the wanted columns as text, 1-based line number of each row) of a CSV file with a header.

    Every cell is read as text (an empty cell is null) and converted by the table's reader with its own rules;
    a row with the wrong number of fields is counted in `issues`; blank lines (and rows empty in every column
    read) are skipped. Line numbers assume no quoted field spans lines.
    """
    header = _csv_header(path)
    wanted = [c for c in columns if c in header]
    issues.ignored_columns = sorted(set(header) - set(columns))
    skipped: list[int] = []

    def invalid(row: pcsv.InvalidRow) -> str:
        if row.number is not None:
            skipped.append(int(row.number))
        if row.text.strip():
            issues.rows_read += 1
            issues.add("CSV row with the wrong number of fields", row=row.number or 0, value=row.text[:200])
        return "skip"

    try:
        reader = pcsv.open_csv(
            str(path),
            read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                include_columns=wanted,
                column_types={c: pa.string() for c in wanted},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        next_line = 2  # line 1 is the header
        for batch in reader:
            n = batch.num_rows
            lines = np.arange(next_line, next_line + n + len(skipped), dtype=np.int64)
            if skipped:
                lines = lines[~np.isin(lines, np.array(skipped, dtype=np.int64))]
            lines = lines[:n]
            next_line = (int(lines[-1]) if n else next_line - 1) + 1
            while skipped and skipped[0] < next_line:
                skipped.pop(0)
            if n and wanted:  # a blank line is a row of nulls here (kept to count lines): skip it
                blank = np.logical_and.reduce([null_mask(batch.column(c)) for c in wanted])
                if blank.any():
                    batch, lines = batch.filter(pa.array(~blank)), lines[~blank]
                    n = batch.num_rows
            for start in range(0, n, batch_rows):
                yield batch.slice(start, batch_rows), lines[start : start + batch_rows]
    except (OSError, pa.ArrowException) as exc:
        raise ReplayInputError(f"{path} is not a readable CSV file: {_one_line(exc)}") from None


_INT = re.compile(r"^\s*[+-]?\d+\s*$")


def _csv_cell(name: str, value: str | None) -> Any:
    """A CSV cell of a small table: JSON arrays in list columns, integers in integer columns, else the text."""
    if value is None:
        return None
    if name in CSV_LIST_COLUMNS and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if name in CSV_INT_COLUMNS and _INT.match(value):
        return int(value)
    return value


def iter_dict_rows(
    path: Path, issues: TableIssues, columns: Iterable[str], batch_rows: int
) -> Iterator[tuple[int, dict]]:
    """Yield (row number, record) for every row; rows that cannot be read as a record are counted in `issues`.

    Row numbers: 0-based rows of a Parquet table, 1-based lines of JSON lines and CSV.
    """
    fmt = detect_format(path)
    wanted = list(columns)
    if fmt == "parquet":
        dataset = open_dataset(path)
        names = dataset_columns(dataset, path, [], "")
        present = [c for c in wanted if c in names]
        issues.ignored_columns = sorted(set(names) - set(wanted))
        row = 0
        for batch in scan_batches(dataset, path, present, batch_rows):
            for record in batch.to_pylist():
                issues.rows_read += 1
                yield row, record
                row += 1
        return
    if fmt == "csv":
        for batch, lines in csv_batches(path, issues, wanted, batch_rows):
            for line, record in zip(lines.tolist(), batch.to_pylist(), strict=True):
                issues.rows_read += 1
                yield line, {k: _csv_cell(k, v) for k, v in record.items()}
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
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise ReplayInputError(f"{path} cannot be read: {_one_line(exc)}") from None
    issues.ignored_columns = sorted(ignored)


def require_columns(path: Path, required: Iterable[str], table: str) -> None:
    """A missing required column is an error for the whole input, named up front (Parquet: in any file; CSV:
    in the header; JSON lines have no header, so each row is checked instead)."""
    fmt = detect_format(path)
    required = list(required)
    if fmt == "parquet":
        dataset_columns(open_dataset(path), path, required, table)
    elif fmt == "csv":
        header = _csv_header(path)
        missing = [c for c in required if c not in header]
        if missing:
            raise ReplayInputError(f"{table} table {path} lacks column(s) {missing}; it has {header}")
