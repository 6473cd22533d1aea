"""Ground truth of a replay: one label per note (`safe` is benign, any other label harmful), read and checked
vectorized, with missing, unknown, orphan and repeated rows counted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from redone_sdk.replay.columns import empty_strings, first_of_each, is_text, null_mask
from redone_sdk.replay.formats import (
    dataset_columns,
    detect_format,
    iter_dict_rows,
    open_dataset,
    require_columns,
    scan_batches,
)
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import HARM_LABELS, ReplayInputError, TableIssues

__all__ = ["Labels", "read_labels"]


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
    require_columns(path, ["note_id", "label"], "labels")
    if detect_format(path) == "parquet":
        dataset = open_dataset(path)
        names = dataset_columns(dataset, path, ["note_id", "label"], "labels")
        issues.ignored_columns = sorted(set(names) - {"note_id", "label"})
        batches = list(scan_batches(dataset, path, ["note_id", "label"], 1 << 20))
        table = pa.Table.from_batches(
            batches, schema=pa.schema([dataset.schema.field("note_id"), dataset.schema.field("label")])
        )
        issues.rows_read = table.num_rows
        id_col, label_col = table.column("note_id").combine_chunks(), table.column("label").combine_chunks()
        if not (is_text(id_col.type) or pa.types.is_integer(id_col.type)) or not is_text(label_col.type):
            raise ReplayInputError(f"labels table {path}: note_id must be text (or integers) and label text")
        ids, labels = id_col.cast(pa.string()), label_col.cast(pa.string())
        rows = np.arange(len(ids), dtype=np.int64)
    else:
        id_list, label_list, row_list = [], [], []
        for row, record in iter_dict_rows(path, issues, ("note_id", "label"), 65_536):
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

    mark(null_mask(ids) | empty_strings(ids), "missing note_id")
    mark(null_mask(labels) | empty_strings(labels), "missing label")
    known = pc.is_in(labels, value_set=pa.array(sorted(set(allowed)), type=pa.string())).fill_null(False)
    mark(~known.to_numpy(zero_copy_only=False), "unknown label")
    if notes is not None:
        mark(notes.index_of(ids).is_null().to_numpy(zero_copy_only=False), "note not in notes table")
    valid = np.flatnonzero(reason == 0)
    first = first_of_each(ids.take(pa.array(valid)))
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
