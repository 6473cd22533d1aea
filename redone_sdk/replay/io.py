"""Read replay inputs (Parquet files or folders, JSON lines) in batches and validate them at the edge.

The impression log is read vectorized (Arrow → numpy) batch by batch, so a log larger than memory
streams through. The smaller tables (notes, labels, search sessions, judgments) are validated row by row
with the same accounting. Bad rows are counted by reason in a `TableIssues`; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from redone_sdk.replay.schemas import HARM_LABELS, IMPRESSION_COLUMNS, ReplayInputError, TableIssues
from redone_sdk.schemas import Note

__all__ = [
    "ImpressionBatch",
    "NotesIndex",
    "Labels",
    "SearchSessions",
    "detect_format",
    "iter_impressions",
    "read_notes",
    "iter_notes",
    "load_notes",
    "read_labels",
    "read_sessions",
    "read_judgments",
    "string_hash64",
    "text_hash",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
DEFAULT_BATCH_ROWS = 1 << 18

# Epoch seconds accepted as a timestamp: 2000-01-01 … 2100-01-01 (an integer column in milliseconds
# falls outside and is reported, rather than read as dates in the year 50,000).
MIN_EPOCH_S = 946_684_800
MAX_EPOCH_S = 4_102_444_800
NO_TIME = np.iinfo(np.int64).min


# --------------------------------------------------------------------------------------------- formats


def detect_format(path: str | Path) -> str:
    """`parquet` for a .parquet file or a folder of them, `jsonl` for JSON lines (optionally gzipped)."""
    path = Path(path)
    if not path.exists():
        raise ReplayInputError(f"{path} does not exist")
    if path.is_dir():
        if not _parquet_files(path):
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


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES))
    return [path]


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _parquet_schema(files: list[Path]) -> pa.Schema:
    try:
        return pq.read_schema(files[0])
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReplayInputError(f"{files[0]} is not a readable Parquet file: {exc}") from None


# --------------------------------------------------------------------------------------------- hashing


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_HASH_CHUNK = 1 << 18
_dictionary_hashes: list[tuple[pa.Array, np.ndarray]] = []  # the last dictionary hashed, to reuse across batches


def _hash_plain(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """FNV-1a over each string's bytes, one byte position at a time for all strings at once."""
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    h = np.full(len(starts), _FNV_OFFSET, dtype=np.uint64)
    longest = int(lengths.max()) if len(lengths) else 0
    padded = np.append(data, np.zeros(1, dtype=np.uint8)) if len(data) else np.zeros(1, dtype=np.uint8)
    for j in range(longest):
        live = lengths > j
        if live.all():
            h = (h ^ padded[starts + j].astype(np.uint64)) * _FNV_PRIME
        else:
            idx = np.flatnonzero(live)
            h[idx] = (h[idx] ^ padded[starts[idx] + j].astype(np.uint64)) * _FNV_PRIME
    return _splitmix64(h ^ lengths.astype(np.uint64))


def string_hash64(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash of each string (FNV-1a, then a mixer), vectorized; null -> 0.

    Same text -> same hash, on any machine and in any batch. A dictionary-encoded array hashes its
    dictionary (reused while the next batch carries an equal dictionary) and gathers.
    """
    if isinstance(array, pa.ChunkedArray):
        parts = [string_hash64(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    if pa.types.is_dictionary(array.type):
        dictionary = array.dictionary
        cached = _dictionary_hashes[0] if _dictionary_hashes else None
        if cached is not None and len(cached[0]) == len(dictionary) and cached[0].equals(dictionary):
            values = cached[1]
        else:
            values = string_hash64(dictionary)
            _dictionary_hashes[:] = [(dictionary, values)]
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        out = values[indices] if len(values) else np.zeros(len(array), dtype=np.uint64)
        if array.null_count:
            out[array.is_null().to_numpy(zero_copy_only=False)] = 0
        return out
    if pa.types.is_large_string(array.type):
        offset_type = np.int64
    elif pa.types.is_string(array.type):
        offset_type = np.int32
    else:
        raise TypeError(f"string_hash64 needs strings, got {array.type}")
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset : array.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(n, dtype=np.uint64)
    for lo in range(0, n, _HASH_CHUNK):
        hi = min(n, lo + _HASH_CHUNK)
        base, end = int(offsets[lo]), int(offsets[hi])
        out[lo:hi] = _hash_plain(offsets[lo : hi + 1] - base, data[base:end])
    if array.null_count:
        out[array.is_null().to_numpy(zero_copy_only=False)] = 0
    return out


def text_hash(text: str) -> str:
    """SHA-256 (first 16 bytes, hex) of a note's text: the score cache's key, so an edited note is rescored."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ------------------------------------------------------------------------------------ row-wise tables


def _iter_dict_rows(
    path: Path, issues: TableIssues, columns: Iterable[str], batch_rows: int
) -> Iterator[tuple[int, dict]]:
    """Yield (row number, record) for every row; rows that are not JSON objects are counted in `issues`."""
    fmt = detect_format(path)
    wanted = list(columns)
    if fmt == "parquet":
        files = _parquet_files(path)
        schema = _parquet_schema(files)
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
    with _open_text(path) as handle:
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


def _require_columns(path: Path, required: Iterable[str], table: str) -> None:
    """For Parquet, a missing required column is an error for the whole file, named up front."""
    if detect_format(path) != "parquet":
        return
    names = _parquet_schema(_parquet_files(path)).names
    missing = [c for c in required if c not in names]
    if missing:
        raise ReplayInputError(f"{table} table {path} lacks column(s) {missing}; it has {names}")


def _as_epoch_seconds(value: Any) -> int | None:
    """A timestamp from JSON/Python: ISO-8601 text (naive means UTC), epoch seconds, or a datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        seconds = int(value)
        return seconds if MIN_EPOCH_S <= seconds < MAX_EPOCH_S else None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int(moment.timestamp() // 1)
    return seconds if MIN_EPOCH_S <= seconds < MAX_EPOCH_S else None


# -------------------------------------------------------------------------------------------- notes


@dataclass
class NotesIndex:
    """The valid notes: ids in table order and creation time (epoch s, `NO_TIME` when absent)."""

    ids: pa.Array
    created_at: np.ndarray
    issues: TableIssues
    path: Path | None = None
    _position: dict[str, int] | None = field(default=None, repr=False)
    _dictionary_rows: tuple[pa.Array, np.ndarray] | None = field(default=None, repr=False)
    _sorted_hashes: tuple[np.ndarray, np.ndarray, bool] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, values: pa.Array) -> pa.Array:
        """Row of each id in this table (null where unknown), vectorized."""
        return pc.index_in(values, value_set=self.ids)

    def rows_of(self, values: pa.Array) -> np.ndarray:
        """Row of each id (-1 where unknown): 64-bit hashes looked up in the sorted hashes of the table's ids,
        then the texts compared, so a hash collision can only make an id unknown, never map it wrongly
        (and a table whose ids collide among themselves falls back to an exact hash join)."""
        if self._sorted_hashes is None:
            hashes = string_hash64(self.ids)
            order = np.argsort(hashes, kind="stable")
            unique = len(hashes) < 2 or bool(np.all(np.diff(hashes[order]) != 0))
            self._sorted_hashes = (hashes[order], order, unique)
        sorted_hashes, order, unique = self._sorted_hashes
        if not unique or not len(sorted_hashes):
            return self.index_of(values).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        text = values if pa.types.is_string(values.type) else values.cast(pa.string())
        wanted = string_hash64(text)
        at = np.minimum(np.searchsorted(sorted_hashes, wanted), len(sorted_hashes) - 1)
        rows = order[at].astype(np.int64)
        hit = sorted_hashes[at] == wanted
        same = pc.equal(text, self.ids.take(pa.array(rows))).fill_null(False).to_numpy(zero_copy_only=False)
        return np.where(hit & same, rows, -1)

    def position(self, note_id: str) -> int | None:
        if self._position is None:
            self._position = {n: i for i, n in enumerate(self.ids.to_pylist())}
        return self._position.get(note_id)


_NOTE_FIELDS = tuple(Note.model_fields)
_SHORT_TEXT = 4  # texts this short after trimming are checked by `Note` itself (whitespace rules differ at the edges)


def _note_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "note"
    return f"{loc}: {first['msg']}"


def _clean_note_record(record: dict) -> dict:
    data = {k: v for k, v in record.items() if k in _NOTE_FIELDS and v is not None}
    if isinstance(data.get("tags"), list):
        data["tags"] = tuple(data["tags"])
    return data


def _utc_seconds(moment: datetime | None) -> int:
    if moment is None:
        return NO_TIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() // 1)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _fast_notes(batch: pa.RecordBatch) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(rows certainly valid as a `Note`, their ids as text, creation seconds) by vectorized checks.

    Rows the checks cannot vouch for go through `Note` one by one, which gives the exact reason.
    """
    from redone_sdk.schemas import MAX_FIELD_CHARS

    n = batch.num_rows
    names = batch.schema.names
    ok = np.ones(n, dtype=bool)

    def length(array: pa.Array) -> np.ndarray:
        return pc.utf8_length(array).fill_null(0).to_numpy(zero_copy_only=False)

    ids = batch.column("note_id")
    if _is_text(ids.type) or pa.types.is_integer(ids.type):
        ids = ids.cast(pa.string())
        size = length(ids)
        ok &= ~_null_mask(ids) & (size >= 1) & (size <= 256)
    else:
        ok[:] = False
        ids = pa.nulls(n, pa.string())
    trimmed = np.zeros(n, dtype=np.int64)
    for name in ("title", "content"):
        if name not in names:
            continue
        column = batch.column(name)
        if not _is_text(column.type):
            ok[~_null_mask(column)] = False
            continue
        ok &= length(column) <= MAX_FIELD_CHARS
        trimmed = np.maximum(trimmed, length(pc.utf8_trim_whitespace(column)))
    ok &= trimmed > _SHORT_TEXT
    for name, limit in (("lang", 16), ("author_id", 256)):
        if name in names:
            column = batch.column(name)
            if _is_text(column.type):
                ok &= length(column) <= limit
            else:
                ok[~_null_mask(column)] = False
    if "tags" in names:
        column = batch.column("tags")
        if pa.types.is_list(column.type) and _is_text(column.type.value_type):
            if pc.list_flatten(column).null_count:
                ok[:] = False  # a null tag somewhere: let `Note` judge each row of this batch
        else:
            ok[~_null_mask(column)] = False
    created = np.full(n, NO_TIME, dtype=np.int64)
    if "created_at" in names:
        column = batch.column("created_at")
        if pa.types.is_timestamp(column.type):
            seconds, _ = _timestamps(column, column.type)
            present = ~_null_mask(column)
            created[present] = seconds[present]
        else:
            ok[~_null_mask(column)] = False
    return ok, ids, created


def read_notes(path: str | Path, *, batch_rows: int = 262_144) -> NotesIndex:
    """Validate every row of the notes table as an SDK `Note`; keep ids and creation times.

    Parquet is checked vectorized (rows the checks cannot vouch for are validated by `Note` itself, for the
    exact reason); JSON lines row by row. The first row of a duplicated `note_id` is kept.
    """
    path = Path(path)
    issues = TableIssues(table="notes", source=str(path))
    _require_columns(path, ["note_id"], "notes")
    id_parts: list[pa.Array] = []
    created_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []

    def slow(rows: list[tuple[int, dict]]) -> None:
        ids, created, numbers = [], [], []
        for row, record in rows:
            try:
                note = Note.model_validate(_clean_note_record(record))
            except ValidationError as exc:
                issues.add(_note_reason(exc), row=row, value=str(record.get("note_id", ""))[:80])
                continue
            ids.append(note.note_id)
            created.append(_utc_seconds(note.created_at))
            numbers.append(row)
        if ids:
            id_parts.append(pa.array(ids, type=pa.string()))
            created_parts.append(np.array(created, dtype=np.int64))
            row_parts.append(np.array(numbers, dtype=np.int64))

    if detect_format(path) == "parquet":
        files = _parquet_files(path)
        present = [c for c in _NOTE_FIELDS if c in _parquet_schema(files).names]
        issues.ignored_columns = sorted(set(_parquet_schema(files).names) - set(_NOTE_FIELDS))
        row = 0
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=present):
                issues.rows_read += batch.num_rows
                ok, ids, created = _fast_notes(batch)
                good = np.flatnonzero(ok)
                id_parts.append(ids.take(pa.array(good)))
                created_parts.append(created[good])
                row_parts.append(row + good)
                doubtful = np.flatnonzero(~ok)
                if len(doubtful):
                    records = batch.take(pa.array(doubtful)).to_pylist()
                    slow([(row + int(i), r) for i, r in zip(doubtful, records, strict=True)])
                row += batch.num_rows
    else:
        pending: list[tuple[int, dict]] = []
        for row, record in _iter_dict_rows(path, issues, _NOTE_FIELDS, batch_rows):
            pending.append((row, record))
            if len(pending) >= batch_rows:
                slow(pending)
                pending = []
        slow(pending)

    ids = pa.concat_arrays(id_parts) if id_parts else pa.array([], type=pa.string())
    created = np.concatenate(created_parts) if created_parts else np.zeros(0, dtype=np.int64)
    rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    ids, created, rows = ids.take(pa.array(order)), created[order], rows[order]
    first = _first_of_each(ids)
    duplicate = np.flatnonzero(~first)
    for i in duplicate[: issues.max_examples_per_reason]:
        issues.example("duplicate note_id", int(rows[i]), ids[int(i)].as_py())
    issues.add("duplicate note_id", len(duplicate))
    keep = np.flatnonzero(first)
    issues.rows_used = len(keep)
    return NotesIndex(ids=ids.take(pa.array(keep)), created_at=created[keep], issues=issues, path=path)


def _first_of_each(values: pa.Array) -> np.ndarray:
    """True at the first occurrence of each value (values in row order)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=bool)
    table = pa.table({"v": values, "i": pa.array(np.arange(n, dtype=np.int64))})
    firsts = table.group_by("v", use_threads=False).aggregate([("i", "min")]).column("i_min").to_numpy()
    out = np.zeros(n, dtype=bool)
    out[firsts] = True
    return out


def iter_notes(path: str | Path, wanted: Iterable[str], *, batch_rows: int = 65_536) -> Iterator[Note]:
    """The `Note` of each wanted id, in table order (a quiet pass: `read_notes` already counted bad rows)."""
    path = Path(path)
    want = set(wanted)
    if not want:
        return
    quiet = TableIssues(table="notes")
    done: set[str] = set()
    for _, record in _iter_dict_rows(path, quiet, _NOTE_FIELDS, batch_rows):
        note_id = record.get("note_id")
        key = str(note_id) if isinstance(note_id, (str, int)) and not isinstance(note_id, bool) else None
        if key is None or key not in want or key in done:
            continue
        try:
            note = Note.model_validate(_clean_note_record(record))
        except ValidationError:
            continue
        done.add(key)
        yield note
        if len(done) == len(want):
            return


def load_notes(path: str | Path, wanted: Iterable[str], *, batch_rows: int = 65_536) -> dict[str, Note]:
    """{note_id: Note} of the wanted ids."""
    return {note.note_id: note for note in iter_notes(path, wanted, batch_rows=batch_rows)}


# ------------------------------------------------------------------------------------------- labels


@dataclass
class Labels:
    """Ground truth per note: `label` is `safe` (benign) or a harmful category."""

    note_ids: pa.Array
    labels: pa.Array
    issues: TableIssues
    _by_note: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, labels: Mapping[str, str], *, allowed: Iterable[str] = HARM_LABELS) -> Labels:
        unknown = sorted({v for v in labels.values() if v not in set(allowed)})
        if unknown:
            raise ReplayInputError(f"unknown labels {unknown[:5]}; expected one of {sorted(set(allowed))}")
        issues = TableIssues(table="labels", source="(mapping)", rows_read=len(labels), rows_used=len(labels))
        return cls(pa.array(list(labels), type=pa.string()), pa.array(list(labels.values()), type=pa.string()), issues)

    @property
    def by_note(self) -> dict[str, str]:
        if self._by_note is None:
            self._by_note = dict(zip(self.note_ids.to_pylist(), self.labels.to_pylist(), strict=True))
        return self._by_note

    def harmful(self, note_id: str) -> bool | None:
        label = self.by_note.get(note_id)
        return None if label is None else label != "safe"

    def __len__(self) -> int:
        return len(self.note_ids)


def _text_or_none(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_labels(path: str | Path, *, allowed: Iterable[str] = HARM_LABELS, notes: NotesIndex | None = None) -> Labels:
    """Read (note_id, label) rows, checked vectorized. Missing ids or labels, unknown labels, labels of notes
    absent from the notes table and repeated note ids (the first row is kept) are counted as bad rows."""
    path = Path(path)
    issues = TableIssues(table="labels", source=str(path))
    _require_columns(path, ["note_id", "label"], "labels")
    if detect_format(path) == "parquet":
        files = _parquet_files(path)
        issues.ignored_columns = sorted(set(_parquet_schema(files).names) - {"note_id", "label"})
        table = pa.concat_tables(pq.read_table(f, columns=["note_id", "label"]) for f in files)
        issues.rows_read = table.num_rows
        id_col, label_col = table.column("note_id").combine_chunks(), table.column("label").combine_chunks()
        if not (_is_text(id_col.type) or pa.types.is_integer(id_col.type)) or not _is_text(label_col.type):
            raise ReplayInputError(f"labels table {path}: note_id must be text (or integers) and label text")
        ids, labels = id_col.cast(pa.string()), label_col.cast(pa.string())
        rows = np.arange(len(ids), dtype=np.int64)
    else:
        id_list, label_list, row_list = [], [], []
        for row, record in _iter_dict_rows(path, issues, ("note_id", "label"), 65_536):
            id_list.append(_text_or_none(record.get("note_id")))
            label = record.get("label")
            label_list.append(label if isinstance(label, str) else None)
            row_list.append(row)
        ids, labels = pa.array(id_list, type=pa.string()), pa.array(label_list, type=pa.string())
        rows = np.array(row_list, dtype=np.int64)

    reason = np.zeros(len(ids), dtype=np.int8)
    names = ["missing note_id", "missing label", "unknown label", "note not in notes table", "duplicate label"]

    def mark(mask: np.ndarray, name: str) -> None:
        reason[(reason == 0) & mask] = names.index(name) + 1

    mark(_null_mask(ids) | _empty_strings(ids), "missing note_id")
    mark(_null_mask(labels) | _empty_strings(labels), "missing label")
    known = pc.is_in(labels, value_set=pa.array(sorted(set(allowed)), type=pa.string())).fill_null(False)
    mark(~known.to_numpy(zero_copy_only=False), "unknown label")
    if notes is not None:
        mark(notes.index_of(ids).is_null().to_numpy(zero_copy_only=False), "note not in notes table")
    valid = np.flatnonzero(reason == 0)
    first = _first_of_each(ids.take(pa.array(valid)))
    reason[valid[~first]] = names.index("duplicate label") + 1
    for code, name in enumerate(names, start=1):
        where = np.flatnonzero(reason == code)
        if name == "duplicate label" and len(where):
            kept = ids.take(pa.array(valid[first]))
            first_label = labels.take(pa.array(valid[first])).take(
                pc.index_in(ids.take(pa.array(where)), value_set=kept)
            )
            same = pc.equal(first_label, labels.take(pa.array(where))).to_numpy(zero_copy_only=False)
            for sub, label_name in ((where[same], "duplicate label"), (where[~same], "conflicting duplicate label")):
                if len(sub):
                    issues.add(label_name, len(sub), row=int(rows[sub[0]]), value=str(ids[int(sub[0])].as_py()))
        elif len(where):
            value = ids[int(where[0])].as_py() if name != "unknown label" else labels[int(where[0])].as_py()
            issues.add(name, len(where), row=int(rows[where[0]]), value=str(value))
    keep = pa.array(np.flatnonzero(reason == 0))
    issues.rows_used = len(keep)
    return Labels(note_ids=ids.take(keep), labels=labels.take(keep), issues=issues)


# -------------------------------------------------------------------------------------- impressions


@dataclass
class ImpressionBatch:
    """Valid impressions of one batch as numpy arrays (only rows that passed every check)."""

    timestamp: np.ndarray  # int64 epoch seconds (UTC)
    user_hash: np.ndarray  # uint64, `string_hash64` of the user id
    note: np.ndarray  # int64 row of the note in the `NotesIndex`
    position: np.ndarray  # int32, 1-based
    click: np.ndarray  # bool

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


def _null_mask(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


def _timestamps(array: pa.Array, column_type: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, unparseable mask) of a timestamp column of any accepted type."""
    n = len(array)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(column_type):
        unit = column_type.unit
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
        raw = array.cast(pa.timestamp(unit)).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return np.floor_divide(raw, per_second), bad
    if pa.types.is_integer(column_type):
        return array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), bad
    if pa.types.is_floating(column_type):
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        return np.where(bad, 0, values).astype(np.int64), bad
    if pa.types.is_date(column_type):
        return array.cast(pa.timestamp("s")).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), bad
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type) or pa.types.is_dictionary(column_type):
        text = array.cast(pa.string()) if pa.types.is_dictionary(column_type) else array
        try:
            parsed = pc.cast(text, pa.timestamp("ns", tz="UTC"))
            raw = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            return np.floor_divide(raw, 1_000_000_000), bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            seconds = np.zeros(n, dtype=np.int64)
            for i, value in enumerate(text.to_pylist()):
                if value is None:
                    continue
                parsed_s = _as_epoch_seconds(value)
                if parsed_s is None:
                    bad[i] = True
                else:
                    seconds[i] = parsed_s
            return seconds, bad
    raise ReplayInputError(
        f"impressions column 'timestamp' has type {column_type}; expected a timestamp, ISO text or epoch seconds"
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


def _string_lengths(array: pa.Array) -> np.ndarray:
    """Byte length of each string, from the offsets (0 for nulls)."""
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    return np.diff(offsets)


def _empty_strings(array: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(array.type):
        lengths = pc.utf8_length(array.dictionary).to_numpy(zero_copy_only=False)
        idx = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return (lengths[idx] == 0) if len(lengths) else np.zeros(len(array), dtype=bool)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    return _string_lengths(array) == 0


def _note_rows(array: pa.Array, notes: NotesIndex) -> tuple[np.ndarray, np.ndarray]:
    """(row in the notes table, unknown mask). A dictionary-encoded column maps its dictionary only, once
    for as long as the following batches carry an equal dictionary."""
    if pa.types.is_dictionary(array.type):
        dictionary = array.dictionary
        memo = notes._dictionary_rows
        if memo is not None and len(memo[0]) == len(dictionary) and memo[0].equals(dictionary):
            rows = memo[1]
        else:
            rows = notes.rows_of(dictionary)
            notes._dictionary_rows = (dictionary, rows)
        idx = array.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        mapped = rows[idx] if len(rows) else np.full(len(array), -1, dtype=np.int64)
    else:
        mapped = notes.rows_of(array)
    return mapped, mapped < 0


def _surface_mask(array: pa.Array, surfaces: tuple[str, ...]) -> np.ndarray:
    keep = pc.is_in(array, value_set=pa.array(list(surfaces), type=pa.string()))
    return keep.fill_null(False).to_numpy(zero_copy_only=False)


def _validate_batch(
    batch: pa.RecordBatch,
    notes: NotesIndex,
    issues: TableIssues,
    row_base: int,
    surfaces: tuple[str, ...] | None,
    pre_reasons: np.ndarray | None = None,
    row_numbers: np.ndarray | None = None,
) -> ImpressionBatch:
    """Check every rule vectorized; count each bad row under its first failed rule."""
    n = batch.num_rows
    col = {name: batch.column(name) for name in IMPRESSION_COLUMNS}
    reason = np.zeros(n, dtype=np.int16) if pre_reasons is None else pre_reasons.astype(np.int16, copy=True)
    base = 1000  # codes of `_REASONS` start here; lower ones come from the JSON reader

    def mark(mask: np.ndarray, name: str) -> None:
        reason[(reason == 0) & mask] = base + _REASONS.index(name)

    ts_type = col["timestamp"].type
    seconds, unparseable = _timestamps(col["timestamp"], ts_type)
    mark(_null_mask(col["timestamp"]), "missing timestamp")
    mark(unparseable, "unparseable timestamp")
    mark((seconds < MIN_EPOCH_S) | (seconds >= MAX_EPOCH_S), "timestamp out of range (2000-2100, epoch seconds)")
    user = _strings(col["user"], "user")
    mark(_null_mask(user) | _empty_strings(user), "missing user")
    note = _strings(col["note"], "note")
    mark(_null_mask(note) | _empty_strings(note), "missing note")
    surface = _strings(col["surface"], "surface")
    mark(_null_mask(surface) | _empty_strings(surface), "missing surface")
    position, not_int = _integers(col["position"], "position")
    mark(_null_mask(col["position"]), "missing position")
    mark(not_int | (position < 1) | (position > np.iinfo(np.int32).max), "position not a positive integer")
    click, click_not_int = _integers(col["click"], "click")
    mark(_null_mask(col["click"]), "missing click")
    mark(click_not_int | ((click != 0) & (click != 1)), "click not 0/1")
    note_row, unknown = _note_rows(note, notes)
    mark(unknown, "note not in notes table")

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
    issues.rows_used += int(good.sum())
    if good.all():
        user_hash = string_hash64(user)
        return ImpressionBatch(seconds, user_hash, note_row, position.astype(np.int32), click.astype(bool))
    keep = np.flatnonzero(good)
    user_hash = string_hash64(user.take(pa.array(keep))) if len(keep) else np.zeros(0, dtype=np.uint64)
    return ImpressionBatch(
        seconds[keep], user_hash, note_row[keep], position[keep].astype(np.int32), click[keep].astype(bool)
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
        seconds = _as_epoch_seconds(value)
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
    with _open_text(path) as handle:
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


def iter_impressions(
    path: str | Path,
    notes: NotesIndex,
    issues: TableIssues,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    surfaces: Iterable[str] | None = None,
) -> Iterator[ImpressionBatch]:
    """Stream the impression log in batches of valid rows; bad rows are counted in `issues`.

    A Parquet log is read `batch_rows` rows at a time, so memory stays bounded whatever the log's size. Note
    ids are read dictionary-encoded (the dictionary is mapped to notes once), user ids as plain text (hashed).
    """
    path = Path(path)
    wanted = tuple(surfaces) if surfaces is not None else None
    fmt = detect_format(path)
    if fmt == "jsonl":
        for batch, pre, lines in _jsonl_batches(path, issues, batch_rows):
            issues.rows_read += batch.num_rows
            yield _validate_batch(batch, notes, issues, 0, wanted, pre_reasons=pre, row_numbers=lines)
        return
    files = _parquet_files(path)
    row = 0
    for file in files:
        schema = _parquet_schema([file])
        names = schema.names
        missing = [c for c in IMPRESSION_COLUMNS if c not in names]
        if missing:
            raise ReplayInputError(f"impression log {file} lacks column(s) {missing}; it has {names}")
        # Note ids and surfaces stay dictionary-encoded (mapped once per dictionary); user ids come as text.
        encoded = [c for c in ("note", "surface") if _is_text(schema.field(c).type)]
        try:
            handle = pq.ParquetFile(file, read_dictionary=encoded)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ReplayInputError(f"{file} is not a readable Parquet file: {exc}") from None
        issues.ignored_columns = sorted(set(issues.ignored_columns) | (set(names) - set(IMPRESSION_COLUMNS)))
        for batch in handle.iter_batches(batch_size=batch_rows, columns=list(IMPRESSION_COLUMNS), use_threads=False):
            issues.rows_read += batch.num_rows
            yield _validate_batch(batch, notes, issues, row, wanted)
            row += batch.num_rows


# ------------------------------------------------------------------------------------ search sessions


@dataclass
class SearchSessions:
    """Valid search page views: the query, the logged ranking (note ids, top first) and clicks per position."""

    session_ids: list[str]
    queries: list[str]
    notes: list[list[str]]
    clicks: list[list[int]]
    issues: TableIssues

    def __len__(self) -> int:
        return len(self.queries)


def _session_problem(record: dict, notes: NotesIndex | None, max_page: int) -> tuple[str | None, tuple | None]:
    session_id, query = record.get("session_id"), record.get("query")
    shown, clicks = record.get("notes"), record.get("clicks")
    if isinstance(session_id, int) and not isinstance(session_id, bool):
        session_id = str(session_id)
    if not isinstance(session_id, str) or not session_id:
        return "missing session_id", None
    if not isinstance(query, str) or not query.strip():
        return "missing query", None
    if not isinstance(shown, list) or not shown:
        return "no notes shown", None
    if any(not isinstance(n, str) or not n for n in shown):
        return "note id not a non-empty string", None
    if len(set(shown)) != len(shown):
        return "note shown twice in one session", None
    if len(shown) > max_page:
        return f"more than {max_page} notes shown", None
    if not isinstance(clicks, list) or len(clicks) != len(shown):
        return "clicks not one per note shown", None
    if not all(isinstance(c, bool) or (isinstance(c, (int, float)) and c in (0, 1)) for c in clicks):
        return "click not 0/1", None
    if notes is not None and any(notes.position(n) is None for n in shown):
        return "note not in notes table", None
    return None, (session_id, query, list(shown), [int(c) for c in clicks])


def read_sessions(path: str | Path, *, notes: NotesIndex | None = None, max_page: int = 100) -> SearchSessions:
    """Read search sessions (`session_id`, `query`, `notes`: ids top first, `clicks`: 0/1 per note)."""
    path = Path(path)
    issues = TableIssues(table="search sessions", source=str(path))
    _require_columns(path, ["session_id", "query", "notes", "clicks"], "search sessions")
    out = SearchSessions([], [], [], [], issues)
    seen: set[str] = set()
    for row, record in _iter_dict_rows(path, issues, ("session_id", "query", "notes", "clicks"), 65_536):
        problem, parsed = _session_problem(record, notes, max_page)
        if problem is None and parsed is not None and parsed[0] in seen:
            problem = "duplicate session_id"
        if problem is not None or parsed is None:
            issues.add(problem or "invalid", row=row, value=str(record.get("session_id", ""))[:80])
            continue
        seen.add(parsed[0])
        out.session_ids.append(parsed[0])
        out.queries.append(parsed[1])
        out.notes.append(parsed[2])
        out.clicks.append(parsed[3])
    issues.rows_used = len(out)
    return out


def read_judgments(path: str | Path) -> tuple[dict[tuple[str, str], int], TableIssues]:
    """Graded relevance {(query, note_id): grade in -1 … 3} and the accounting of its rows."""
    path = Path(path)
    issues = TableIssues(table="judgments", source=str(path))
    _require_columns(path, ["query", "note_id", "grade"], "judgments")
    grades: dict[tuple[str, str], int] = {}
    for row, record in _iter_dict_rows(path, issues, ("query", "note_id", "grade"), 65_536):
        query, note_id, grade = record.get("query"), record.get("note_id"), record.get("grade")
        if not isinstance(query, str) or not query.strip() or not isinstance(note_id, str) or not note_id:
            issues.add("missing query or note_id", row=row)
        elif isinstance(grade, bool) or not isinstance(grade, int) or not -1 <= grade <= 3:
            issues.add("grade not an integer in -1..3", row=row, value=repr(grade))
        elif (query, note_id) in grades:
            issues.add("duplicate judgment", row=row, value=note_id)
        else:
            grades[(query, note_id)] = grade
    issues.rows_used = len(grades)
    return grades, issues
