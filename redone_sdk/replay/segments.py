"""Per-segment breakdowns of the exposure replay: each impression gets a level per dimension — the note's
language (`lang` of the notes table), the note's ground-truth category (`category`), the user's cohort (a
user-hash bucket: `cohort`) or the impression's surface (`surface` of the log, coded in pass 1) — and pass 2
counts cells per (user bucket, note bucket, level, ground truth), the same mergeable sums as the overall
cells, so the two-way bootstrap reads every segment in the same run.

`lang`, `cohort` and `surface` are filters: a level's rate is its harmful exposures over its labeled exposures.
`category` splits the numerator: a level's rate is the exposures of that category over all labeled exposures, so
the harmful categories' rates add up to the overall rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from redone_sdk.replay.exposure_passes import BENIGN, HARMFUL, UNLABELED
from redone_sdk.replay.formats import detect_format, iter_dict_rows, open_dataset, scan_batches
from redone_sdk.replay.labels import Labels
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = [
    "SEGMENT_DIMENSIONS",
    "NoteLevels",
    "note_levels",
    "cohort_levels",
    "surface_levels",
    "category_cells",
    "parse_segments",
]

SEGMENT_DIMENSIONS = ("lang", "category", "cohort", "surface")
NO_LEVEL = "(none)"


def parse_segments(text: str) -> tuple[str, ...]:
    """`lang,category` -> ("lang", "category"); an unknown dimension is a ReplayInputError."""
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    unknown = [d for d in dims if d not in SEGMENT_DIMENSIONS]
    if unknown:
        raise ReplayInputError(f"unknown segment dimension(s) {unknown}; expected some of {list(SEGMENT_DIMENSIONS)}")
    return tuple(dict.fromkeys(dims))


@dataclass(frozen=True)
class NoteLevels:
    """A dimension's level per note row (`codes`, int32) and the levels' names."""

    codes: np.ndarray
    names: list[str]


def _levels(values: list[str | None], n: int) -> NoteLevels:
    text = [NO_LEVEL if v is None or v == "" else v for v in values]
    names = sorted(set(text))
    lookup = {name: i for i, name in enumerate(names)}
    return NoteLevels(np.array([lookup[t] for t in text], dtype=np.int32)[:n], names)


def _lang_of_notes(path: Path, notes: NotesIndex) -> list[str | None]:
    """`lang` per note row, read from the notes table (the first row of a repeated id, as `read_notes` keeps)."""
    out: list[str | None] = [None] * len(notes)
    seen = np.zeros(len(notes), dtype=bool)

    def take(ids: pa.Array, langs: list) -> None:
        rows = notes.rows_of(ids)
        for row, lang in zip(rows, langs, strict=True):
            if row >= 0 and not seen[row]:
                seen[row] = True
                out[row] = lang if isinstance(lang, str) else None

    if detect_format(path) == "parquet":
        dataset = open_dataset(path)
        if "lang" not in dataset.schema.names:
            return out
        for batch in scan_batches(dataset, path, ["note_id", "lang"], 262_144):
            take(batch.column("note_id").cast(pa.string()), batch.column("lang").cast(pa.string()).to_pylist())
        return out
    ids, langs = [], []
    for _, record in iter_dict_rows(path, TableIssues(table="notes"), ["note_id", "lang"], 65_536):
        note_id = record.get("note_id")
        ids.append(str(note_id) if isinstance(note_id, (str, int)) and not isinstance(note_id, bool) else None)
        langs.append(record.get("lang"))
    take(pa.array(ids, type=pa.string()), langs)
    return out


def note_levels(dimension: str, notes_path: str | Path, notes: NotesIndex, labels: Labels | None) -> NoteLevels:
    """Levels of a note-level dimension (`lang`, `category`) per note row."""
    if dimension == "lang":
        return _levels(_lang_of_notes(Path(notes_path), notes), len(notes))
    if dimension == "category":
        values: list[str | None] = ["(unlabeled)"] * len(notes)
        if labels is not None and len(labels):
            rows = notes.rows_of(labels.note_ids)
            for row, label in zip(rows, labels.labels.to_pylist(), strict=True):
                if row >= 0 and label is not None:
                    values[row] = label
        return _levels(values, len(notes))
    raise ValueError(f"{dimension} is not a note-level dimension")


def cohort_levels(cohorts: int) -> list[str]:
    return [str(i) for i in range(cohorts)]


def surface_levels(spilled: tuple[str, ...] | list[str]) -> tuple[np.ndarray, list[str]]:
    """The surfaces pass 1 coded (in order of first sighting) -> (level of each spilled code, the level names
    sorted)."""
    names = sorted(spilled)
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[s] for s in spilled], dtype=np.int64), names


def category_cells(cells: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """[..., levels, 3] cells by category -> cells whose level c holds, as HARMFUL, the exposures of harmful
    category c and, as BENIGN, every other labeled exposure; the per-level rate is then c's share of all labeled
    exposures (kept ones, for an arm's removals). `safe` and `(unlabeled)` levels are dropped."""
    keep = [i for i, n in enumerate(names) if n not in ("safe", "(unlabeled)")]
    labeled = (cells[..., HARMFUL] + cells[..., BENIGN]).sum(axis=-1, keepdims=True)
    out = np.zeros((*cells.shape[:-2], len(keep), 3), dtype=cells.dtype)
    out[..., HARMFUL] = cells[..., keep, HARMFUL]
    out[..., BENIGN] = labeled - cells[..., keep, HARMFUL]
    out[..., UNLABELED] = 0
    return out, [names[i] for i in keep]
