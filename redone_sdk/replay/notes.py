"""The notes table of a replay: every row validated as the SDK's `Note` (Parquet vectorized, with `Note` itself
deciding the rows the vectorized checks cannot vouch for), kept as ids and creation times; and the `Note`s
of chosen ids read back for scoring."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from redone_sdk.replay.columns import NO_TIME, epoch_seconds, first_of_each, is_text, null_mask
from redone_sdk.replay.formats import (
    dataset_columns,
    detect_format,
    iter_dict_rows,
    open_dataset,
    require_columns,
    scan_batches,
)
from redone_sdk.replay.schemas import TableIssues
from redone_sdk.schemas import MAX_FIELD_CHARS, MAX_ID_CHARS, MAX_LANG_CHARS, Note

__all__ = ["NotesIndex", "read_notes", "iter_notes", "load_notes"]


@dataclass
class NotesIndex:
    """The valid notes: ids in table order and creation time (epoch s, `NO_TIME` when absent)."""

    ids: pa.Array
    created_at: np.ndarray
    issues: TableIssues
    path: Path | None = None
    _position: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, values: pa.Array) -> pa.Array:
        """Row of each id in this table (null where unknown), vectorized."""
        return pc.index_in(values, value_set=self.ids)

    def rows_of(self, values: pa.Array) -> np.ndarray:
        """Row of each id (-1 where unknown or null), vectorized (Arrow's hash lookup)."""
        text = values if pa.types.is_string(values.type) else values.cast(pa.string())
        return self.index_of(text).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)

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


def _fast_notes(batch: pa.RecordBatch) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(rows certainly valid as a `Note`, their ids as text, creation seconds) by vectorized checks.

    Rows the checks cannot vouch for go through `Note` one by one, which gives the exact reason.
    """
    n = batch.num_rows
    names = batch.schema.names
    ok = np.ones(n, dtype=bool)

    def length(array: pa.Array) -> np.ndarray:
        return pc.utf8_length(array).fill_null(0).to_numpy(zero_copy_only=False)

    ids = batch.column("note_id")
    if is_text(ids.type) or pa.types.is_integer(ids.type):
        ids = ids.cast(pa.string())
        size = length(ids)
        ok &= ~null_mask(ids) & (size >= 1) & (size <= MAX_ID_CHARS)
    else:
        ok[:] = False
        ids = pa.nulls(n, pa.string())
    trimmed = np.zeros(n, dtype=np.int64)
    for name in ("title", "content"):
        if name not in names:
            continue
        column = batch.column(name)
        if not is_text(column.type):
            ok[~null_mask(column)] = False
            continue
        ok &= length(column) <= MAX_FIELD_CHARS
        trimmed = np.maximum(trimmed, length(pc.utf8_trim_whitespace(column)))
    ok &= trimmed > _SHORT_TEXT
    for name, limit in (("lang", MAX_LANG_CHARS), ("author_id", MAX_ID_CHARS)):
        if name in names:
            column = batch.column(name)
            if is_text(column.type):
                ok &= length(column) <= limit
            else:
                ok[~null_mask(column)] = False
    if "tags" in names:
        column = batch.column("tags")
        if pa.types.is_list(column.type) and is_text(column.type.value_type):
            if pc.list_flatten(column).null_count:
                ok[:] = False  # a null tag somewhere: let `Note` judge each row of this batch
        else:
            ok[~null_mask(column)] = False
    created = np.full(n, NO_TIME, dtype=np.int64)
    if "created_at" in names:
        column = batch.column("created_at")
        if pa.types.is_timestamp(column.type):
            seconds, _ = epoch_seconds(column, column.type)
            present = ~null_mask(column)
            created[present] = seconds[present]
        else:
            ok[~null_mask(column)] = False
    return ok, ids, created


def read_notes(path: str | Path, *, batch_rows: int = 262_144) -> NotesIndex:
    """Validate every row of the notes table as an SDK `Note`; keep ids and creation times.

    Parquet is checked vectorized (rows the checks cannot vouch for are validated by `Note` itself, for the
    exact reason); JSON lines row by row. The first row of a duplicated `note_id` is kept.
    """
    path = Path(path)
    issues = TableIssues(table="notes", source=str(path))
    require_columns(path, ["note_id"], "notes")
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
        dataset = open_dataset(path)
        names = dataset_columns(dataset, path, ["note_id"], "notes")
        present = [c for c in _NOTE_FIELDS if c in names]
        issues.ignored_columns = sorted(set(names) - set(_NOTE_FIELDS))
        row = 0
        for batch in scan_batches(dataset, path, present, batch_rows):
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
        for row, record in iter_dict_rows(path, issues, _NOTE_FIELDS, batch_rows):
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
    first = first_of_each(ids)
    duplicate = np.flatnonzero(~first)
    for i in duplicate[: issues.max_examples_per_reason]:
        issues.example("duplicate note_id", int(rows[i]), ids[int(i)].as_py())
    issues.add("duplicate note_id", len(duplicate))
    keep = np.flatnonzero(first)
    issues.rows_used = len(keep)
    return NotesIndex(ids=ids.take(pa.array(keep)), created_at=created[keep], issues=issues, path=path)


def iter_notes(path: str | Path, wanted: Iterable[str], *, batch_rows: int = 65_536) -> Iterator[Note]:
    """The `Note` of each wanted id, in table order (a quiet pass: `read_notes` already counted bad rows)."""
    path = Path(path)
    want = set(wanted)
    if not want:
        return
    quiet = TableIssues(table="notes")
    done: set[str] = set()
    for _, record in iter_dict_rows(path, quiet, _NOTE_FIELDS, batch_rows):
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
