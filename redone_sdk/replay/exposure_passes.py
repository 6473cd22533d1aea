"""The two passes of the exposure replay over the impression log.

Pass 1 validates the log, counts exposures per note, finds each note's first exposure, the period and the
distinct users, and spills three compact columns (note row, timestamp, user cluster; a fourth, the surface
code, when the surface segment is asked for) to a temporary folder.
Pass 2 streams those columns and counts logged and removed exposures per (user bucket, note bucket, UTC day,
ground truth) cell for every arm (the two-way bootstrap's cells), and per note the exposures after each review
delay. Memory depends on the batch size, the number of notes and buckets, not on the log's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from redone_sdk.replay.arms import BLOCK, REVIEW, Arm
from redone_sdk.replay.columns import NO_TIME
from redone_sdk.replay.exposure_results import ExposureSettings
from redone_sdk.replay.hashing import string_hash64
from redone_sdk.replay.impressions import SurfaceCodes, iter_impressions
from redone_sdk.replay.labels import Labels
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import TableIssues

if TYPE_CHECKING:
    from redone_sdk.replay.segments import UserCohorts

__all__ = [
    "DAY_S",
    "BENIGN",
    "HARMFUL",
    "UNLABELED",
    "truth_of",
    "note_buckets_of",
    "Spill",
    "LoggedExposures",
    "count_exposures",
    "Removal",
    "removal_rules",
    "Cells",
    "SegmentCodes",
    "count_cells",
]

DAY_S = 86_400
BENIGN, HARMFUL, UNLABELED = 0, 1, 2  # ground truth of a note; the last axis of every cell array


def truth_of(notes: NotesIndex, labels: Labels | None) -> np.ndarray:
    """Ground truth per note row: BENIGN, HARMFUL or UNLABELED."""
    truth = np.full(len(notes), UNLABELED, dtype=np.int8)
    if labels is None or len(labels) == 0:
        return truth
    rows = notes.index_of(labels.note_ids).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    harmful = pc.not_equal(labels.labels, "safe").fill_null(False).to_numpy(zero_copy_only=False)
    known = rows >= 0
    truth[rows[known]] = np.where(harmful[known], HARMFUL, BENIGN)
    return truth


def note_buckets_of(notes: NotesIndex, buckets: int) -> np.ndarray:
    """Bootstrap bucket of every note row: the stable 64-bit hash of its id, high half modulo `buckets` (the
    same note lands in the same bucket on every machine and run, so the cells stay mergeable)."""
    hashes = string_hash64(notes.ids)
    return ((hashes >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


class _DistinctCounter:
    """Distinct 64-bit hashes, estimated by HyperLogLog (2^14 registers: about 1 % error; small counts are
    exact in practice through its linear-counting range)."""

    P = 14

    def __init__(self) -> None:
        self.registers = np.zeros(1 << self.P, dtype=np.uint8)

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        index = (hashes >> np.uint64(64 - self.P)).astype(np.int64)
        rest = (hashes << np.uint64(self.P)) | np.uint64(1 << (self.P - 1))
        rank = (64 - np.floor(np.log2(rest.astype(np.float64)))).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def count(self) -> int:
        m = float(len(self.registers))
        estimate = 0.7213 / (1 + 1.079 / m) * m * m / float(np.sum(np.power(2.0, -self.registers.astype(np.float64))))
        empty = int((self.registers == 0).sum())
        if estimate <= 2.5 * m and empty:
            estimate = m * math.log(m / empty)
        return round(estimate)


class Spill:
    """Pass 1 writes the columns pass 2 needs (note row, timestamp, user bucket; optionally the surface code)
    to raw files, so pass 2 streams compact arrays instead of reading and validating the log again. Memory
    stays bounded."""

    COLUMNS = (("note", np.int32), ("timestamp", np.int64), ("bucket", np.int32))
    # written only when pass 1 is given them (from the first batch on)
    OPTIONAL = (("surface", np.int16), ("cohort", np.int16))

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths = {name: directory / f"{name}.bin" for name, _ in self.COLUMNS}
        self.handles = {name: open(path, "wb") for name, path in self.paths.items()}  # noqa: SIM115
        self.rows = 0
        self.columns = list(self.COLUMNS)

    def write(self, **columns: np.ndarray | None) -> None:
        for name, dtype in self.OPTIONAL:
            if columns.get(name) is not None and name not in self.handles:
                if self.rows:
                    raise ValueError(f"spill column {name!r} must be written from the first batch on")
                self.paths[name] = self.directory / f"{name}.bin"
                self.handles[name] = open(self.paths[name], "wb")  # noqa: SIM115
                self.columns.append((name, dtype))
        for name, dtype in self.columns:
            self.handles[name].write(np.ascontiguousarray(columns[name], dtype=dtype).tobytes())
        self.rows += len(columns["note"])

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def read(self, batch_rows: int) -> Iterator[dict[str, np.ndarray]]:
        handles = {name: open(path, "rb") for name, path in self.paths.items()}  # noqa: SIM115
        try:
            done = 0
            while done < self.rows:
                count = min(batch_rows, self.rows - done)
                yield {name: np.fromfile(handles[name], dtype=dtype, count=count) for name, dtype in self.columns}
                done += count
        finally:
            for handle in handles.values():
                handle.close()


@dataclass(frozen=True)
class LoggedExposures:
    """What pass 1 found: the accounting of the log, exposures and first exposure per note row, the period
    (epoch seconds of the first and last valid impression), the distinct users (estimated) and, with the surface
    segment, the surfaces' names in the order of their spilled codes."""

    issues: TableIssues
    exposures: np.ndarray
    first: np.ndarray
    ts_min: int
    ts_max: int
    users: int
    surfaces: tuple[str, ...] = ()
    user_cohorts: UserCohorts | None = None  # from a users table, when the cohort segment reads one

    @cached_property
    def seen(self) -> np.ndarray:
        """Rows of the notes shown at least once."""
        return np.flatnonzero(self.exposures > 0)

    @property
    def day0(self) -> int:
        return (self.ts_min // DAY_S) * DAY_S

    @property
    def n_days(self) -> int:
        return int((self.ts_max - self.day0) // DAY_S) + 1


def count_exposures(
    impressions: str | Path, notes: NotesIndex, settings: ExposureSettings, spill: Spill
) -> LoggedExposures:
    """Pass 1: validate the log and count; the compact columns go to `spill` (closed on return)."""
    n_notes = len(notes)
    issues = TableIssues(table="impressions", source=str(impressions))
    exposures = np.zeros(n_notes, dtype=np.int64)
    first = np.full(n_notes, np.iinfo(np.int64).max, dtype=np.int64)
    ts_min, ts_max = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    users = _DistinctCounter()
    buckets = np.uint64(settings.user_buckets)
    surface_codes = SurfaceCodes() if "surface" in settings.segments else None
    user_cohorts = None
    if settings.users_table is not None and "cohort" in settings.segments:
        from redone_sdk.replay.segments import read_user_cohorts

        user_cohorts = read_user_cohorts(settings.users_table)
    try:
        for batch in iter_impressions(
            impressions,
            notes,
            issues,
            batch_rows=settings.batch_rows,
            surfaces=settings.surfaces,
            period=settings.period,
            surface_codes=surface_codes,
        ):
            if not len(batch):
                continue
            exposures += np.bincount(batch.note, minlength=n_notes)
            np.minimum.at(first, batch.note, batch.timestamp)
            ts_min = min(ts_min, int(batch.timestamp.min()))
            ts_max = max(ts_max, int(batch.timestamp.max()))
            users.add(batch.user_hash)
            bucket = (batch.user_hash >> np.uint64(32)) % buckets
            cohort = user_cohorts(batch.user_hash) if user_cohorts is not None else None
            spill.write(note=batch.note, timestamp=batch.timestamp, bucket=bucket, surface=batch.surface, cohort=cohort)
    finally:
        spill.close()
    surfaces = tuple(surface_codes.names) if surface_codes is not None else ()
    return LoggedExposures(issues, exposures, first, ts_min, ts_max, users.count(), surfaces, user_cohorts)


@dataclass(frozen=True)
class Removal:
    """Per arm, which exposures go: every exposure of a blocked note; those of a reviewed note the reviewer
    removes (`review_mask`) from `delays[arm]` seconds after `review_start` (epoch s per note row)."""

    delays: dict[str, int]
    block_mask: dict[str, np.ndarray]
    review_mask: dict[str, np.ndarray]
    review_start: np.ndarray

    @property
    def distinct_delays(self) -> list[int]:
        return sorted(set(self.delays.values()))


def removal_rules(
    arms: Sequence[Arm],
    actions: dict[str, np.ndarray],
    notes: NotesIndex,
    truth: np.ndarray,
    logged: LoggedExposures,
    settings: ExposureSettings,
) -> Removal:
    """The review clock and the per-note removal masks of every arm."""
    start = logged.first.copy()
    if settings.review_clock == "created_at":
        has_created = notes.created_at != NO_TIME
        start[has_created] = notes.created_at[has_created]
    review_ok = (truth == HARMFUL) | ((truth == UNLABELED) & (settings.unlabeled_review == "remove"))
    return Removal(
        delays={a.name: int((a.review_delay or settings.review_delay).total_seconds()) for a in arms},
        block_mask={n: a == BLOCK for n, a in actions.items()},
        review_mask={n: (a == REVIEW) & review_ok for n, a in actions.items()},
        review_start=start,
    )


@dataclass(frozen=True)
class Cells:
    """Exposures per (user bucket, note bucket, day, ground truth): logged, and removed by each arm that acts;
    per note, the exposures after each distinct review delay."""

    logged: np.ndarray  # [user buckets, note buckets, days, 3]
    removed: dict[str, np.ndarray]  # arm -> [user buckets, note buckets, days, 3]
    after_counts: dict[int, np.ndarray]  # delay (s) -> per note row
    # segment dimension -> (logged [user buckets, note buckets, levels, 3], arm -> removed, same shape)
    segments: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)
    # with label weights: (logged, arm -> removed) like `logged`/`removed`, each exposure counted with its note's
    # weight (float); the rates read these, the counts stay unweighted. Segment cells are weighted too.
    weighted: tuple[np.ndarray, dict[str, np.ndarray]] | None = None


@dataclass(frozen=True)
class SegmentCodes:
    """Levels to count pass 2's cells by: per note row (`notes`: dimension -> (codes, number of levels)), the
    user cohort (user bucket modulo `cohorts`; 0: none, or `user_cohorts` levels read from the spilled cohort
    code of a users table) and the impression's surface (`surfaces`: the level of
    each spilled surface code; None: none)."""

    notes: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    cohorts: int = 0
    surfaces: np.ndarray | None = None
    user_cohorts: int = 0


def count_cells(
    spill: Spill,
    logged: LoggedExposures,
    truth: np.ndarray,
    removal: Removal,
    settings: ExposureSettings,
    note_bucket: np.ndarray,
    segments: SegmentCodes | None = None,
    label_weight: np.ndarray | None = None,
) -> Cells:
    """Pass 2 over the spilled columns; `note_bucket`: the bootstrap bucket of every note row; `segments`: the
    levels to count extra cells by; `label_weight`: per note row, the weight of its exposures in the rates
    (inverse probability of its label being drawn; 1 for unlabeled notes), None: unweighted."""
    segments = segments or SegmentCodes()
    levels = {d: n for d, (_, n) in segments.notes.items()}
    if segments.cohorts or segments.user_cohorts:
        levels["cohort"] = segments.user_cohorts or segments.cohorts
    if segments.surfaces is not None:
        levels["surface"] = len(segments.surfaces)
    n_pairs = settings.user_buckets * settings.note_buckets
    seg_type = np.int64 if label_weight is None else np.float64
    seg_logged = {d: np.zeros(n_pairs * n * 3, dtype=seg_type) for d, n in levels.items()}
    seg_removed = {
        d: {a: np.zeros(n_pairs * n * 3, dtype=seg_type) for a in removal.block_mask} for d, n in levels.items()
    }
    n_notes = len(truth)
    buckets, day0, n_days = settings.user_buckets, logged.day0, logged.n_days
    n_note_buckets = settings.note_buckets
    n_cells = buckets * n_note_buckets * n_days * 3
    counts = np.zeros(n_cells, dtype=np.int64)
    removed = {n: np.zeros(n_cells, dtype=np.int64) for n in removal.block_mask}
    weighted = weighted_removed = None
    if label_weight is not None:
        weighted = np.zeros(n_cells, dtype=np.float64)
        weighted_removed = {n: np.zeros(n_cells, dtype=np.float64) for n in removal.block_mask}
    after_counts = {d: np.zeros(n_notes, dtype=np.int64) for d in removal.distinct_delays}
    start = np.where(removal.review_start == np.iinfo(np.int64).max, 0, removal.review_start)
    for chunk in spill.read(settings.batch_rows):
        note = chunk["note"].astype(np.int64)
        timestamp = chunk["timestamp"]
        day = (timestamp - day0) // DAY_S
        pair = chunk["bucket"].astype(np.int64) * n_note_buckets + note_bucket[note]
        note_truth = truth[note]
        cell = (pair * n_days + day) * 3 + note_truth
        weight = label_weight[note] if label_weight is not None else None
        seg_cell = {}
        for dim, n_levels in levels.items():
            if dim == "cohort" and segments.user_cohorts:
                code = chunk["cohort"].astype(np.int64)
            elif dim == "cohort":
                code = chunk["bucket"].astype(np.int64) % n_levels
            elif dim == "surface":
                code = segments.surfaces[chunk["surface"].astype(np.int64)]
            else:
                code = segments.notes[dim][0][note].astype(np.int64)
            seg_cell[dim] = (pair * n_levels + code) * 3 + note_truth
            seg_logged[dim] += np.bincount(seg_cell[dim], weights=weight, minlength=len(seg_logged[dim]))
        counts += np.bincount(cell, minlength=n_cells)
        if weighted is not None:
            weighted += np.bincount(cell, weights=weight, minlength=n_cells)
        start_of = start[note]
        after = {}
        for d in removal.distinct_delays:
            after[d] = timestamp >= start_of + d
            after_counts[d] += np.bincount(note[after[d]], minlength=n_notes)
        for name in removed:
            gone = removal.block_mask[name][note] | (removal.review_mask[name][note] & after[removal.delays[name]])
            if gone.any():
                removed[name] += np.bincount(cell[gone], minlength=n_cells)
                w_gone = weight[gone] if weight is not None else None
                if weighted_removed is not None:
                    weighted_removed[name] += np.bincount(cell[gone], weights=w_gone, minlength=n_cells)
                for dim in levels:
                    seg_removed[dim][name] += np.bincount(
                        seg_cell[dim][gone], weights=w_gone, minlength=len(seg_logged[dim])
                    )
    shape = (buckets, n_note_buckets, n_days, 3)
    segment_cells = {
        d: (
            seg_logged[d].reshape(buckets, n_note_buckets, n, 3),
            {a: r.reshape(buckets, n_note_buckets, n, 3) for a, r in seg_removed[d].items()},
        )
        for d, n in levels.items()
    }
    return Cells(
        counts.reshape(shape),
        {n: r.reshape(shape) for n, r in removed.items()},
        after_counts,
        segment_cells,
        None
        if weighted is None
        else (weighted.reshape(shape), {n: r.reshape(shape) for n, r in weighted_removed.items()}),
    )
