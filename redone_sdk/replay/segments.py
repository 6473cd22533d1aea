"""Per-segment breakdowns of the exposure replay: each impression gets a level per dimension — the note's
language (`lang` of the notes table), the note's ground-truth category (`category`), the user's cohort (a
user-hash bucket, or the user's row in a users table: `cohort`) or the impression's surface (`surface` of the
log, coded in pass 1) — and pass 2 counts cells per (user bucket, note bucket, level, ground truth), the same
mergeable sums as the overall cells, so the two-way bootstrap reads every segment in the same run.

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
from redone_sdk.replay.formats import detect_format, iter_dict_rows, open_dataset, require_columns, scan_batches
from redone_sdk.replay.hashing import string_hash64
from redone_sdk.replay.labels import Labels
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = [
    "SEGMENT_DIMENSIONS",
    "NoteLevels",
    "note_levels",
    "cohort_levels",
    "UserCohorts",
    "read_user_cohorts",
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


@dataclass(frozen=True)
class UserCohorts:
    """Each user's cohort from a users table (`user`, `cohort`), looked up by the user's 64-bit id hash (the one
    pass 1 already computes); users not in the table get the level `(none)`."""

    hashes: np.ndarray  # uint64, sorted
    codes: np.ndarray  # int16: the level of each hash
    names: list[str]  # the levels: the cohorts sorted, then `(none)`
    issues: TableIssues

    def __call__(self, user_hash: np.ndarray) -> np.ndarray:
        missing = np.int16(len(self.names) - 1)
        if not len(self.hashes):
            return np.full(len(user_hash), missing, dtype=np.int16)
        at = np.minimum(np.searchsorted(self.hashes, user_hash), len(self.hashes) - 1)
        return np.where(self.hashes[at] == user_hash, self.codes[at], missing).astype(np.int16)


def _id_text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text.strip() else None


def read_user_cohorts(path: str | Path, *, batch_rows: int = 65_536) -> UserCohorts:
    """Read a users table (Parquet, JSON lines or CSV) with `user` and `cohort` columns. A row without a user or a
    cohort, or repeating a user (the first row counts), is counted as bad; no valid row at all is an error."""
    path = Path(path)
    issues = TableIssues(table="users", source=str(path))
    require_columns(path, ("user", "cohort"), "users")
    users: list[str] = []
    cohorts: list[str] = []
    for row, record in iter_dict_rows(path, issues, ("user", "cohort"), batch_rows):
        user, cohort = _id_text(record.get("user")), _id_text(record.get("cohort"))
        if user is None:
            issues.add("missing user", row=row, value=str(record.get("user")))
        elif cohort is None:
            issues.add("missing cohort", row=row, value=user)
        else:
            users.append(user)
            cohorts.append(cohort)
    hashes = string_hash64(pa.array(users, type=pa.string()))
    _, first = np.unique(hashes, return_index=True)
    if len(first) < len(users):
        issues.add("user listed more than once (first row kept)", len(users) - len(first))
    issues.rows_used = len(first)
    if not len(first):
        raise ReplayInputError(f"users table {path} has no valid row ({issues.summary()})")
    names = sorted({cohorts[i] for i in first.tolist()})
    if NO_LEVEL in names:
        raise ReplayInputError(f"users table {path}: {NO_LEVEL!r} is reserved for users not in the table")
    lookup = {name: i for i, name in enumerate(names)}
    if len(names) + 1 > np.iinfo(np.int16).max:
        raise ReplayInputError(f"users table {path} has {len(names)} cohorts; at most {np.iinfo(np.int16).max - 1}")
    order = first[np.argsort(hashes[first], kind="stable")]
    codes = np.array([lookup[cohorts[i]] for i in order.tolist()], dtype=np.int16)
    return UserCohorts(hashes[order], codes, [*names, NO_LEVEL], issues)


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
