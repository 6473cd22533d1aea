"""The impression log of a replay, streamed in batches of valid rows as numpy arrays.

Parquet is read vectorized (Arrow → numpy) `batch_rows` rows at a time, so a log larger than memory streams
through; JSON lines are converted line by line into the same canonical batches. Every rule is checked
vectorized and each bad row is counted in a `TableIssues` under the first rule it breaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from redone_sdk.replay.columns import (
    MAX_EPOCH_S,
    MIN_EPOCH_S,
    PerDictionary,
    as_epoch_seconds,
    empty_strings,
    epoch_seconds,
    null_mask,
)
from redone_sdk.replay.formats import (
    ScanFilter,
    csv_batches,
    dataset_columns,
    detect_format,
    open_dataset,
    open_text,
    require_columns,
    scan_batches,
)
from redone_sdk.replay.hashing import string_hash64
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import IMPRESSION_COLUMNS, ReplayInputError, TableIssues

__all__ = ["DEFAULT_BATCH_ROWS", "ImpressionBatch", "SurfaceCodes", "iter_impressions"]

DEFAULT_BATCH_ROWS = 1 << 18


@dataclass
class ImpressionBatch:
    """Valid impressions of one batch as numpy arrays (only rows that passed every check)."""

    timestamp: np.ndarray  # int64 epoch seconds (UTC)
    user_hash: np.ndarray  # uint64, `string_hash64` of the user id
    note: np.ndarray  # int64 row of the note in the `NotesIndex`
    position: np.ndarray  # int32, 1-based
    click: np.ndarray  # bool
    surface: np.ndarray | None = None  # int16 code in the log's `SurfaceCodes` (None: not asked for)

    def __len__(self) -> int:
        return len(self.timestamp)


_REASONS = (
    "missing timestamp",
    "unparseable timestamp",
    "timestamp out of range (2000-2100, epoch seconds)",
    "missing user",
    "missing note",
    "missing surface",
    "missing position",
    "position not a positive integer",
    "missing click",
    "click not 0/1",
    "note not in notes table",
)


def _integers(array: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64, not-an-integer mask) of an integer, boolean or float column."""
    column_type = array.type
    if pa.types.is_integer(column_type) or pa.types.is_boolean(column_type):
        return array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), np.zeros(len(array), dtype=bool)
    if pa.types.is_floating(column_type):
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values) | (values != np.round(values))
        return np.where(bad, -1, values).astype(np.int64), bad
    raise ReplayInputError(f"impressions column {name!r} has type {column_type}; expected integers")


def _strings(array: pa.Array, name: str) -> pa.Array:
    column_type = array.type
    if pa.types.is_string(column_type) or pa.types.is_dictionary(column_type):
        return array
    if pa.types.is_large_string(column_type) or pa.types.is_integer(column_type):
        return array.cast(pa.string())
    raise ReplayInputError(f"impressions column {name!r} has type {column_type}; expected strings (or integer ids)")


def _surface_mask(array: pa.Array, surfaces: tuple[str, ...]) -> np.ndarray:
    keep = pc.is_in(array, value_set=pa.array(list(surfaces), type=pa.string()))
    return keep.fill_null(False).to_numpy(zero_copy_only=False)


class SurfaceCodes:
    """Surface names of one log as int16 codes, numbered in order of first sighting (stable across batches), so
    pass 2 can count cells per surface from a compact spilled column."""

    LIMIT = int(np.iinfo(np.int16).max)

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def _code(self, name: str | None) -> int:
        if name is None:
            return -1
        code = self._index.get(name)
        if code is None:
            if len(self.names) >= self.LIMIT:
                raise ReplayInputError(f"more than {self.LIMIT} distinct surfaces: too many for --segment surface")
            code = self._index[name] = len(self.names)
            self.names.append(name)
        return code

    def __call__(self, array: pa.Array) -> np.ndarray:
        """Codes of a surface column (dictionary-encoded or text); a missing surface gets -1."""
        encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
        missing = null_mask(encoded)
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = encoded.dictionary.cast(pa.string()).to_pylist()
        lookup = np.full(len(values), -1, dtype=np.int16)
        for i in np.unique(indices[~missing]).tolist():  # only the values present: a dictionary may hold more
            lookup[i] = self._code(values[i])
        return np.where(missing, np.int16(-1), lookup[indices] if len(values) else np.int16(-1)).astype(np.int16)


class _BatchValidator:
    """Checks batches of one log against the notes table; a dictionary-encoded id column is mapped (note rows)
    or hashed (users) once per dictionary, for as long as the following batches carry an equal one."""

    def __init__(
        self, notes: NotesIndex, issues: TableIssues, scan: ScanFilter, surface_codes: SurfaceCodes | None = None
    ) -> None:
        self.issues = issues
        self.surface_codes = surface_codes
        self.surfaces = scan.surfaces
        self.period_s: tuple[int, int] | None = None
        if scan.period is not None:
            start, end = (datetime(d.year, d.month, d.day, tzinfo=timezone.utc) for d in scan.period)
            self.period_s = (int(start.timestamp()), int(end.timestamp()) + 86_400)
        self.note_rows = PerDictionary(notes.rows_of, null_value=-1)
        self.user_hashes = PerDictionary(string_hash64, null_value=0)

    def __call__(
        self,
        batch: pa.RecordBatch,
        row_base: int = 0,
        pre_reasons: np.ndarray | None = None,
        row_numbers: np.ndarray | None = None,
    ) -> ImpressionBatch:
        """Check every rule vectorized; count each bad row under its first failed rule."""
        issues, surfaces = self.issues, self.surfaces
        n = batch.num_rows
        col = {name: batch.column(name) for name in IMPRESSION_COLUMNS}
        reason = np.zeros(n, dtype=np.int16) if pre_reasons is None else pre_reasons.astype(np.int16, copy=True)
        base = 1000  # codes of `_REASONS` start here; lower ones come from the JSON reader

        def mark(mask: np.ndarray, name: str) -> None:
            reason[(reason == 0) & mask] = base + _REASONS.index(name)

        ts_type = col["timestamp"].type
        seconds, unparseable = epoch_seconds(col["timestamp"], ts_type)
        mark(null_mask(col["timestamp"]), "missing timestamp")
        mark(unparseable, "unparseable timestamp")
        mark((seconds < MIN_EPOCH_S) | (seconds >= MAX_EPOCH_S), "timestamp out of range (2000-2100, epoch seconds)")
        user = _strings(col["user"], "user")
        mark(null_mask(user) | empty_strings(user), "missing user")
        note = _strings(col["note"], "note")
        mark(null_mask(note) | empty_strings(note), "missing note")
        surface = _strings(col["surface"], "surface")
        mark(null_mask(surface) | empty_strings(surface), "missing surface")
        position, not_int = _integers(col["position"], "position")
        mark(null_mask(col["position"]), "missing position")
        mark(not_int | (position < 1) | (position > np.iinfo(np.int32).max), "position not a positive integer")
        click, click_not_int = _integers(col["click"], "click")
        mark(null_mask(col["click"]), "missing click")
        mark(click_not_int | ((click != 0) & (click != 1)), "click not 0/1")
        note_row = self.note_rows(note)
        mark(note_row < 0, "note not in notes table")

        bad = reason != 0
        if bad.any():
            codes, counts = np.unique(reason[bad], return_counts=True)
            for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                name = _reason_name(code, base)
                first = int(np.flatnonzero(reason == code)[0])
                row = int(row_numbers[first]) if row_numbers is not None else row_base + first
                issues.add(name, count, row=row, value=_row_preview(batch, first))
        good = ~bad
        if surfaces is not None:
            on_surface = _surface_mask(surface, surfaces)
            issues.rows_filtered += int((good & ~on_surface).sum())
            good &= on_surface
        if self.period_s is not None:
            in_period = (seconds >= self.period_s[0]) & (seconds < self.period_s[1])
            issues.rows_filtered += int((good & ~in_period).sum())
            good &= in_period
        issues.rows_used += int(good.sum())
        codes = self.surface_codes  # coded on kept rows only: a filtered-out surface gets no level
        if good.all():
            user_hash = self.user_hashes(user)
            surface_code = codes(surface) if codes is not None else None
            return ImpressionBatch(
                seconds, user_hash, note_row, position.astype(np.int32), click.astype(bool), surface_code
            )
        keep = np.flatnonzero(good)
        user_hash = self.user_hashes(user.take(pa.array(keep))) if len(keep) else np.zeros(0, dtype=np.uint64)
        return ImpressionBatch(
            seconds[keep],
            user_hash,
            note_row[keep],
            position[keep].astype(np.int32),
            click[keep].astype(bool),
            codes(surface.take(pa.array(keep, type=pa.int64()))) if codes is not None else None,
        )


_JSON_REASONS: list[str] = []


def _json_reason_code(name: str) -> int:
    if name not in _JSON_REASONS:
        _JSON_REASONS.append(name)
    return 1 + _JSON_REASONS.index(name)


def _reason_name(code: int, base: int) -> str:
    return _REASONS[code - base] if code >= base else _JSON_REASONS[code - 1]


def _row_preview(batch: pa.RecordBatch, index: int) -> str:
    values = {name: batch.column(name)[index].as_py() for name in IMPRESSION_COLUMNS}
    return json.dumps(values, default=str, ensure_ascii=False)


_JSON_TYPES = {
    "timestamp": pa.int64(),
    "user": pa.string(),
    "note": pa.string(),
    "surface": pa.string(),
    "position": pa.int64(),
    "click": pa.int64(),
}


def _json_value(name: str, value: Any) -> tuple[Any, str | None]:
    """Convert one JSON value to the canonical column type; (None, reason) when it cannot be."""
    if value is None:
        return None, None  # counted as "missing …" by the vectorized checks
    if name == "timestamp":
        seconds = as_epoch_seconds(value)
        return (seconds, None) if seconds is not None else (None, "unparseable timestamp")
    if name in ("user", "note", "surface"):
        if isinstance(value, str):
            return value, None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value), None
        return None, f"{name} not a string"
    if name == "position":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        return None, "position not a positive integer"
    if isinstance(value, bool):  # click
        return int(value), None
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value), None
    return None, "click not 0/1"


def _jsonl_batches(
    path: Path, issues: TableIssues, batch_rows: int
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray]]:
    """(canonical batch, pre-assigned reason codes, line numbers) per chunk of lines."""
    ignored: set[str] = set()

    def flush(columns: dict[str, list], reasons: list[int], lines: list[int]):
        arrays = [pa.array(columns[name], type=_JSON_TYPES[name]) for name in IMPRESSION_COLUMNS]
        batch = pa.RecordBatch.from_arrays(arrays, names=list(IMPRESSION_COLUMNS))
        return batch, np.array(reasons, dtype=np.int16), np.array(lines, dtype=np.int64)

    columns: dict[str, list] = {name: [] for name in IMPRESSION_COLUMNS}
    reasons: list[int] = []
    lines: list[int] = []
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    issues.rows_read += 1
                    issues.add("not JSON", row=number, value=f"{exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(record, dict):
                    issues.rows_read += 1
                    issues.add("not a JSON object", row=number, value=type(record).__name__)
                    continue
                code = 0
                for name in IMPRESSION_COLUMNS:
                    value, problem = _json_value(name, record.get(name))
                    if problem is not None and code == 0:
                        code = _json_reason_code(problem)
                    columns[name].append(value)
                if len(record) > len(IMPRESSION_COLUMNS) or any(k not in _JSON_TYPES for k in record):
                    ignored.update(k for k in record if k not in _JSON_TYPES)
                reasons.append(code)
                lines.append(number)
                if len(lines) >= batch_rows:
                    yield flush(columns, reasons, lines)
                    columns = {name: [] for name in IMPRESSION_COLUMNS}
                    reasons, lines = [], []
        except UnicodeDecodeError as exc:
            raise ReplayInputError(f"{path} is not UTF-8 text: {exc}") from None
    if lines:
        yield flush(columns, reasons, lines)
    issues.ignored_columns = sorted(ignored)


def _csv_timestamps(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """CSV timestamp cells (ISO-8601 text or integer epoch seconds) as int64 epoch seconds, and the mask of
    cells that are neither (null cells stay null: counted as missing)."""
    n = len(text)
    digits = pc.match_substring_regex(text, r"^\s*\d+\s*$").fill_null(False)
    out = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    as_int = digits.to_numpy(zero_copy_only=False)
    if as_int.any():
        out[as_int] = pc.utf8_trim_whitespace(text.filter(digits)).cast(pa.int64()).to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~as_int & ~null_mask(text))
    if len(rest):
        seconds, unparseable = epoch_seconds(pc.utf8_trim_whitespace(text.take(pa.array(rest))), pa.string())
        out[rest] = seconds
        bad[rest] = unparseable
    return pa.array(out, mask=null_mask(text) | bad), bad


def _csv_integers(text: pa.Array, accepted: dict[str, int] | None = None) -> tuple[pa.Array, np.ndarray]:
    """CSV cells holding integers (`3`, `3.0`; `accepted` maps other spellings, e.g. `true`) as int64, and the
    mask of non-null cells that are not."""
    n = len(text)
    out = np.zeros(n, dtype=np.int64)
    trimmed = pc.utf8_trim_whitespace(text)
    number = pc.match_substring_regex(trimmed, r"^[+-]?\d+(\.0*)?$").fill_null(False)
    ok = number.to_numpy(zero_copy_only=False)
    if ok.any():
        out[ok] = trimmed.filter(number).cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if accepted:
        lower = pc.utf8_lower(trimmed)
        for spelling, value in accepted.items():
            hit = pc.equal(lower, spelling).fill_null(False).to_numpy(zero_copy_only=False) & ~ok
            out[hit] = value
            ok |= hit
    bad = ~ok & ~null_mask(text)
    return pa.array(out, mask=~ok), bad


def _csv_canonical(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
    """A CSV batch (every cell text) in the canonical types, with reason codes of cells that do not convert."""
    reasons = np.zeros(batch.num_rows, dtype=np.int16)
    timestamp, bad_time = _csv_timestamps(batch.column("timestamp"))
    position, bad_position = _csv_integers(batch.column("position"))
    click, bad_click = _csv_integers(batch.column("click"), {"true": 1, "false": 0})
    for bad, name in (
        (bad_time, "unparseable timestamp"),
        (bad_position, "position not a positive integer"),
        (bad_click, "click not 0/1"),
    ):
        reasons[(reasons == 0) & bad] = _json_reason_code(name)
    columns = {"timestamp": timestamp, "position": position, "click": click}
    arrays = [columns.get(name, batch.column(name)) for name in IMPRESSION_COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, names=list(IMPRESSION_COLUMNS)), reasons


def iter_impressions(
    path: str | Path,
    notes: NotesIndex,
    issues: TableIssues,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    surfaces: Iterable[str] | None = None,
    period: tuple[date, date] | None = None,
    surface_codes: SurfaceCodes | None = None,
) -> Iterator[ImpressionBatch]:
    """Stream the impression log in batches of valid rows; bad rows are counted in `issues`.

    A Parquet log (a file, or a folder of them read as one `pyarrow.dataset`, several files decoded in
    parallel) is read `batch_rows` rows at a time, so memory stays bounded whatever the log's size; hive
    partitions outside `period` / `surfaces` (`period=2026-01-05/`, `surface=feed/`) are never opened, and
    the rows read are checked against both (rows outside count as filtered). Note ids are read
    dictionary-encoded (the dictionary is mapped to notes once), user ids as plain text (hashed). CSV and JSON
    lines are converted into the same canonical batches. With `surface_codes`, each batch carries its rows'
    surface codes (names in `surface_codes.names`).
    """
    path = Path(path)
    scan = ScanFilter(period=period, surfaces=tuple(surfaces) if surfaces is not None else None)
    validate = _BatchValidator(notes, issues, scan, surface_codes)
    fmt = detect_format(path)
    if fmt == "jsonl":
        for batch, pre, lines in _jsonl_batches(path, issues, batch_rows):
            issues.rows_read += batch.num_rows
            yield validate(batch, pre_reasons=pre, row_numbers=lines)
        return
    if fmt == "csv":
        require_columns(path, IMPRESSION_COLUMNS, "impressions")
        for raw, lines in csv_batches(path, issues, IMPRESSION_COLUMNS, batch_rows):
            batch, pre = _csv_canonical(raw)
            issues.rows_read += batch.num_rows
            yield validate(batch, pre_reasons=pre, row_numbers=lines)
        return
    # Note ids and surfaces stay dictionary-encoded (mapped once per dictionary); user ids come as text.
    dataset = open_dataset(path, dictionary_columns=("note", "surface"), scan=scan)
    names = dataset_columns(dataset, path, IMPRESSION_COLUMNS, "impressions")
    issues.ignored_columns = sorted(set(names) - set(IMPRESSION_COLUMNS))
    row = 0
    for batch in scan_batches(dataset, path, list(IMPRESSION_COLUMNS), batch_rows):
        issues.rows_read += batch.num_rows
        yield validate(batch, row)
        row += batch.num_rows
