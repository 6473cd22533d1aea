"""Exposure-rate replay: what share of exposures would have been harmful had each arm moderated the notes.

Estimator (per arm, on the logged impressions):

- Each distinct note of the log is scored once per bundle; the arm's policy decides its action.
- `block`: every exposure of the note is removed (moderation is assumed to act when a note is published).
- `review`: exposures from `review_delay` after the note entered review (its `created_at`, else its first
  exposure in the log) are removed, and only when the reviewer agrees — ground truth says harmful.
  Reviews of unlabeled notes keep their exposures unless `unlabeled_review="remove"`.
- Harmful exposure rate = harmful exposures kept / labeled exposures kept (exposures of notes without a
  label are left out of both). A removed exposure is not replaced; equivalently, the slot is refilled with
  content whose harmful share is that of the exposures kept.
- Relative change vs the control arm = rate(arm) / rate(control) - 1, with a percentile interval from a
  Poisson bootstrap over users (hashed into `user_buckets` clusters; resampling whole users keeps each
  user's correlated impressions together), paired across arms, overall and per UTC day.
- Threshold sweep: for each bundle, the harmful exposure rate against the share of benign exposures
  removed as one block threshold `t` is applied to every category (review thresholds above `t` are
  lowered to `t`), from per-note exposure counts (no second pass over the log).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay.arms import BLOCK, REVIEW, Arm, ScoreCache, decide_actions, moderator_fingerprint
from redone_sdk.replay.bootstrap import Estimate, estimate, poisson_weights, ratio
from redone_sdk.replay.io import (
    DEFAULT_BATCH_ROWS,
    NO_TIME,
    Labels,
    NotesIndex,
    iter_impressions,
    iter_notes,
    read_labels,
    read_notes,
)
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = [
    "ExposureSettings",
    "ExposureResult",
    "ArmResult",
    "DayResult",
    "SweepPoint",
    "Sweep",
    "replay_exposure",
]

log = logging.getLogger(__name__)

DAY_S = 86_400
BENIGN, HARMFUL, UNLABELED = 0, 1, 2


class ExposureSettings(BaseModel):
    """How the exposure replay runs; every field is written into the result and the report."""

    model_config = ConfigDict(frozen=True)

    review_delay: timedelta = Field(default=timedelta(hours=6), description="Default time from review to removal.")
    review_clock: Literal["created_at", "first_exposure"] = Field(
        default="created_at",
        description="When a note enters review: its created_at (else first exposure), or its first exposure.",
    )
    unlabeled_review: Literal["keep", "remove"] = Field(
        default="keep",
        description="Reviewed notes without ground truth: keep their exposures, or remove them after the delay.",
    )
    bootstrap: int = Field(default=1000, ge=0, description="Bootstrap replicates (0: no intervals).")
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0
    user_buckets: int = Field(default=4096, ge=1, description="Users are hashed into this many bootstrap clusters.")
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1)
    surfaces: tuple[str, ...] | None = Field(default=None, description="Keep only these surfaces (None: all).")
    sweep_points: int = Field(default=25, ge=0)
    spill_dir: str | None = Field(
        default=None, description="Folder for pass 1's temporary columns (default: the system's)."
    )


class ArmResult(BaseModel):
    name: str
    description: str
    is_control: bool
    policy: dict | None = None
    review_delay_s: float
    exposures: int = Field(description="Exposures kept (labeled or not).")
    labeled_exposures: int = Field(description="Exposures kept of notes with ground truth.")
    harmful_exposures: int = Field(description="Exposures kept of harmful notes.")
    removed_by_block: int
    removed_by_review: int
    benign_exposures_removed: int = Field(description="Exposures of benign notes removed (over-removal).")
    harmful_exposures_removed: int
    unlabeled_exposures_removed: int
    notes_actioned: int = Field(description="Notes of the log the policy blocks or sends to review.")
    notes_blocked: int
    notes_reviewed: int
    notes_removed_after_review: int = Field(description="Reviewed notes whose reviewer agreed (harmful).")
    benign_notes_blocked: int
    harmful_notes_missed: int = Field(description="Harmful notes of the log the policy allows.")
    harmful_exposure_rate: Estimate
    benign_removed_share: Estimate = Field(description="Benign exposures removed / benign exposures logged.")
    change_vs_control: Estimate = Field(description="Relative change of the harmful exposure rate vs control.")
    difference_vs_control: Estimate = Field(description="Harmful exposure rate minus control's (absolute).")


class DayArm(BaseModel):
    harmful_exposure_rate: Estimate
    change_vs_control: Estimate
    exposures: int


class DayResult(BaseModel):
    day: str
    logged_exposures: int
    arms: dict[str, DayArm]


class SweepPoint(BaseModel):
    threshold: float | None = Field(description="Block threshold of every category (None: an arm's own policy).")
    harmful_exposure_rate: float | None
    benign_removed_share: float | None
    benign_exposures_removed: int
    harmful_exposures_removed: int
    notes_actioned: int


class Sweep(BaseModel):
    source: str = Field(description="The scores swept: a bundle, or an arm's precomputed scores.")
    rule: str
    points: list[SweepPoint]
    arm_points: dict[str, SweepPoint]


class ExposureResult(BaseModel):
    """Everything the exposure replay found; `model_dump_json()` is what `exposure.json` holds."""

    kind: Literal["exposure"] = "exposure"
    settings: ExposureSettings
    control: str
    inputs: dict[str, TableIssues]
    period_start: str
    period_end: str
    logged_exposures: int
    labeled_exposures: int
    harmful_exposures: int
    label_coverage: float | None = Field(description="Share of logged exposures whose note has ground truth.")
    distinct_notes: int
    distinct_users: int = Field(description="Distinct users (HyperLogLog estimate of distinct user-id hashes, ~1 %).")
    user_clusters: int
    scoring: dict[str, dict[str, int | str]] = Field(description="Per bundle: notes scored by the model, from cache.")
    arms: list[ArmResult]
    days: list[DayResult]
    sweeps: list[Sweep]
    timings_s: dict[str, float]

    def arm(self, name: str) -> ArmResult:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


# ------------------------------------------------------------------------------------------- helpers


def _truth(notes: NotesIndex, labels: Labels | None) -> np.ndarray:
    truth = np.full(len(notes), UNLABELED, dtype=np.int8)
    if labels is None or len(labels) == 0:
        return truth
    rows = notes.index_of(labels.note_ids).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    harmful = pc.not_equal(labels.labels, "safe").fill_null(False).to_numpy(zero_copy_only=False)
    known = rows >= 0
    truth[rows[known]] = np.where(harmful[known], HARMFUL, BENIGN)
    return truth


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


class _Spill:
    """Pass 1 writes the columns pass 2 needs (note row, timestamp, user bucket) to raw files, so pass 2
    streams compact arrays instead of reading and validating the log again. Memory stays bounded."""

    COLUMNS = (("note", np.int32), ("timestamp", np.int64), ("bucket", np.int32))

    def __init__(self, directory: Path) -> None:
        self.paths = {name: directory / f"{name}.bin" for name, _ in self.COLUMNS}
        self.handles = {name: open(path, "wb") for name, path in self.paths.items()}  # noqa: SIM115
        self.rows = 0

    def write(self, **columns: np.ndarray) -> None:
        for name, dtype in self.COLUMNS:
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
                yield {name: np.fromfile(handles[name], dtype=dtype, count=count) for name, dtype in self.COLUMNS}
                done += count
        finally:
            for handle in handles.values():
                handle.close()


def _sweep_policy(base: Policy, categories: Sequence[str], threshold: float) -> Policy:
    rules = {c: CategoryRule(review=min(base.rule_for(c).review, threshold), block=threshold) for c in categories}
    return Policy(name=f"block@{threshold:.4f}", rules=rules)


def _note_totals(
    actions: np.ndarray,
    truth: np.ndarray,
    exposures: np.ndarray,
    after: np.ndarray,
    unlabeled_review: str,
) -> dict[str, int | float | None]:
    """Aggregate metrics of one action vector from per-note counts (used by the sweep)."""
    block = actions == BLOCK
    review_removes = (actions == REVIEW) & (
        (truth == HARMFUL) | ((truth == UNLABELED) & (unlabeled_review == "remove"))
    )
    removed = np.where(block, exposures, np.where(review_removes, after, 0))
    benign_logged = exposures[truth == BENIGN].sum()
    harmful_logged = exposures[truth == HARMFUL].sum()
    benign_removed = removed[truth == BENIGN].sum()
    harmful_removed = removed[truth == HARMFUL].sum()
    kept_labeled = benign_logged + harmful_logged - benign_removed - harmful_removed
    return {
        "harmful_exposure_rate": float((harmful_logged - harmful_removed) / kept_labeled) if kept_labeled else None,
        "benign_removed_share": float(benign_removed / benign_logged) if benign_logged else None,
        "benign_exposures_removed": int(benign_removed),
        "harmful_exposures_removed": int(harmful_removed),
        "notes_actioned": int(((actions == BLOCK) | (actions == REVIEW)).sum()),
    }


def _day_label(day0: int, index: int) -> str:
    return datetime.fromtimestamp(day0 + index * DAY_S, tz=timezone.utc).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------- replay


def replay_exposure(
    impressions: str | Path,
    notes: str | Path,
    arms: Sequence[Arm],
    *,
    labels: str | Path | Labels | Mapping[str, str] | None = None,
    control: str | None = None,
    settings: ExposureSettings | None = None,
    cache: ScoreCache | None = None,
) -> ExposureResult:
    """Replay the impression log under each arm; see the module docstring for the estimator.

    `control`: the arm the others are compared to (default: the first arm without moderation).
    `labels`: ground truth — a labels table, a `Labels`, or {note_id: label}; without it, rates are n/a.
    """
    settings = settings or ExposureSettings()
    cache = cache or ScoreCache()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    arms = list(arms)
    if not arms:
        raise ReplayInputError("an exposure replay needs at least one arm")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ReplayInputError(f"arm names must be unique, got {names}")
    if control is None:
        control = next((a.name for a in arms if a.is_control), None)
        if control is None:
            raise ReplayInputError("no control arm: add Arm.control() or name one with control=")
    if control not in names:
        raise ReplayInputError(f"control arm {control!r} is not one of the arms {names}")

    notes_index = read_notes(notes)
    if len(notes_index) == 0:
        raise ReplayInputError(f"notes table {notes} has no valid note ({notes_index.issues.summary()})")
    if isinstance(labels, (str, Path)):
        label_table: Labels | None = read_labels(labels, notes=notes_index)
    elif isinstance(labels, Mapping):
        label_table = Labels.from_mapping(labels)
    else:
        label_table = labels
    truth = _truth(notes_index, label_table)
    timings["read_notes_labels"] = time.perf_counter() - started
    n_notes = len(notes_index)

    # Pass 1: validate, count exposures per note, first exposure per note, period, users; spill compact columns.
    issues = TableIssues(table="impressions", source=str(impressions))
    exposures = np.zeros(n_notes, dtype=np.int64)
    first = np.full(n_notes, np.iinfo(np.int64).max, dtype=np.int64)
    ts_min, ts_max = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    users = _DistinctCounter()
    buckets = settings.user_buckets
    with tempfile.TemporaryDirectory(prefix="redone-replay-", dir=settings.spill_dir) as spill_dir:
        spill = _Spill(Path(spill_dir))
        try:
            for batch in iter_impressions(
                impressions, notes_index, issues, batch_rows=settings.batch_rows, surfaces=settings.surfaces
            ):
                if not len(batch):
                    continue
                exposures += np.bincount(batch.note, minlength=n_notes)
                np.minimum.at(first, batch.note, batch.timestamp)
                ts_min = min(ts_min, int(batch.timestamp.min()))
                ts_max = max(ts_max, int(batch.timestamp.max()))
                users.add(batch.user_hash)
                bucket = (batch.user_hash >> np.uint64(32)) % np.uint64(buckets)
                spill.write(note=batch.note, timestamp=batch.timestamp, bucket=bucket)
        finally:
            spill.close()
        timings["pass1_validate"] = time.perf_counter() - started - timings["read_notes_labels"]
        if issues.rows_used == 0:
            raise ReplayInputError(f"no valid impression in {impressions}: {issues.summary()}")
        log.info("%s", issues.summary())
        return _after_pass1(
            arms=arms,
            control=control,
            settings=settings,
            cache=cache,
            notes_index=notes_index,
            label_table=label_table,
            truth=truth,
            issues=issues,
            exposures=exposures,
            first=first,
            ts_min=ts_min,
            ts_max=ts_max,
            users=users.count(),
            spill=spill,
            timings=timings,
            started=started,
        )


def _after_pass1(
    *,
    arms: list[Arm],
    control: str,
    settings: ExposureSettings,
    cache: ScoreCache,
    notes_index: NotesIndex,
    label_table: Labels | None,
    truth: np.ndarray,
    issues: TableIssues,
    exposures: np.ndarray,
    first: np.ndarray,
    ts_min: int,
    ts_max: int,
    users: int,
    spill: _Spill,
    timings: dict[str, float],
    started: float,
) -> ExposureResult:
    """Score, then pass 2 over the spilled columns, metrics, bootstrap and sweep."""
    n_notes = len(notes_index)
    buckets = settings.user_buckets
    seen = np.flatnonzero(exposures > 0)

    # Scores: once per distinct note and bundle; policies re-decide from them.
    t0 = time.perf_counter()
    actions: dict[str, np.ndarray] = {}
    scored: dict[str, tuple[str, tuple[str, ...], np.ndarray]] = {}  # source -> (label, categories, scores of seen)
    source_of: dict[str, str] = {}
    seen_ids = notes_index.ids.take(pa.array(seen))
    scoring: dict[str, dict[str, int | str]] = {}
    for arm in arms:
        if arm.is_control:
            continue
        if arm.moderator is not None:
            source = moderator_fingerprint(arm.moderator)
            if source not in scored:
                before = cache.model_calls.get(source, 0)
                matrix = cache.moderation_scores(
                    arm.moderator, seen_ids, iter_notes(notes_index.path, seen_ids.to_pylist())
                )
                bundle = arm.moderator.bundle
                label = f"{bundle.name} {bundle.version}"
                scored[source] = (label, tuple(arm.moderator.categories), matrix)
                model_calls = cache.model_calls[source] - before
                scoring[label] = {
                    "fingerprint": source[:16],
                    "notes_scored_by_model": model_calls,
                    "notes_from_cache": len(seen) - model_calls,
                }
        else:
            assert arm.scores is not None
            source = f"scores:{id(arm.scores)}"
            if source not in scored:
                matrix, missing = arm.scores.lookup(seen_ids)
                if missing.any():
                    example = seen_ids.filter(pa.array(missing))[:3].to_pylist()
                    raise ReplayInputError(
                        f"arm {arm.name!r}: {int(missing.sum())} notes of the log have no precomputed scores, "
                        f"e.g. {example}"
                    )
                scored[source] = (f"scores of arm {arm.name}", arm.scores.categories, matrix)
        source_of[arm.name] = source
        full = np.zeros(n_notes, dtype=np.int8)
        full[seen] = decide_actions(arm.policy, scored[source][1], scored[source][2])
        actions[arm.name] = full
    timings["scoring"] = time.perf_counter() - t0

    # Review clock and per-arm removal masks (per note).
    ref = first.copy()
    if settings.review_clock == "created_at":
        has_created = notes_index.created_at != NO_TIME
        ref[has_created] = notes_index.created_at[has_created]
    delays = {a.name: int((a.review_delay or settings.review_delay).total_seconds()) for a in arms}
    distinct_delays = sorted(set(delays.values()))
    review_ok = (truth == HARMFUL) | ((truth == UNLABELED) & (settings.unlabeled_review == "remove"))
    block_mask = {n: a == BLOCK for n, a in actions.items()}
    review_mask = {n: (a == REVIEW) & review_ok for n, a in actions.items()}

    # Pass 2: per (user bucket, day, truth) cell, logged and removed exposures; per note, exposures after review.
    t0 = time.perf_counter()
    day0 = (ts_min // DAY_S) * DAY_S
    n_days = int((ts_max - day0) // DAY_S) + 1
    n_cells = buckets * n_days * 3
    logged = np.zeros(n_cells, dtype=np.int64)
    removed = {n: np.zeros(n_cells, dtype=np.int64) for n in actions}
    after_counts = {d: np.zeros(n_notes, dtype=np.int64) for d in distinct_delays}
    ref_safe = np.where(ref == np.iinfo(np.int64).max, 0, ref)
    for chunk in spill.read(settings.batch_rows):
        note = chunk["note"].astype(np.int64)
        timestamp = chunk["timestamp"]
        day = (timestamp - day0) // DAY_S
        cell = (chunk["bucket"].astype(np.int64) * n_days + day) * 3 + truth[note]
        logged += np.bincount(cell, minlength=n_cells)
        ref_of = ref_safe[note]
        after = {}
        for d in distinct_delays:
            after[d] = timestamp >= ref_of + d
            after_counts[d] += np.bincount(note[after[d]], minlength=n_notes)
        for name in actions:
            gone = block_mask[name][note] | (review_mask[name][note] & after[delays[name]])
            if gone.any():
                removed[name] += np.bincount(cell[gone], minlength=n_cells)
    timings["pass2_aggregate"] = time.perf_counter() - t0

    # Metrics and paired bootstrap over user buckets.
    t0 = time.perf_counter()
    shape = (buckets, n_days, 3)
    logged_c = logged.reshape(shape)
    removed_c = {n: r.reshape(shape) for n, r in removed.items()}
    zero = np.zeros(shape, dtype=np.int64)
    used = np.flatnonzero(logged_c.reshape(buckets, -1).sum(axis=1) > 0)
    reps = settings.bootstrap
    if reps:
        # One matrix product for every arm: [logged | removed by arm 1 | …] per user cluster.
        weights = poisson_weights(len(used), reps, settings.seed)
        moved = [n for n, r in removed_c.items() if r.any()]
        stacked = np.concatenate(
            [logged_c[used].reshape(len(used), -1)] + [removed_c[n][used].reshape(len(used), -1) for n in moved], axis=1
        )
        product = (weights @ stacked.astype(np.float64)).reshape(reps, 1 + len(moved), n_days, 3)
        boot_logged = product[:, 0]
        boot_removed = {n: np.zeros((reps, n_days, 3)) for n in removed_c}
        for k, n in enumerate(moved, start=1):
            boot_removed[n] = product[:, k]

    def rates(log_cells: np.ndarray, rem_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kept_harmful = log_cells[..., HARMFUL] - rem_cells[..., HARMFUL]
        kept_labeled = (
            log_cells[..., HARMFUL] + log_cells[..., BENIGN] - rem_cells[..., HARMFUL] - rem_cells[..., BENIGN]
        )
        return ratio(kept_harmful, kept_labeled), ratio(rem_cells[..., BENIGN], log_cells[..., BENIGN])

    def arm_cells(name: str) -> np.ndarray:
        return removed_c.get(name, zero)

    def arm_boot(name: str) -> np.ndarray:
        return boot_removed.get(name, np.zeros((reps, n_days, 3))) if reps else None

    point_total = {a.name: rates(logged_c.sum(axis=(0, 1)), arm_cells(a.name).sum(axis=(0, 1))) for a in arms}
    point_day = {a.name: rates(logged_c.sum(axis=0), arm_cells(a.name).sum(axis=0)) for a in arms}
    if reps:
        boot_total = {a.name: rates(boot_logged.sum(axis=1), arm_boot(a.name).sum(axis=1)) for a in arms}
        boot_day = {a.name: rates(boot_logged, arm_boot(a.name)) for a in arms}
    conf = settings.confidence
    control_rate = point_total[control][0]
    control_day = point_day[control][0]

    arm_results = []
    totals = logged_c.sum(axis=(0, 1))
    for arm in arms:
        name = arm.name
        rem = arm_cells(name).sum(axis=(0, 1))
        rate, benign_share = point_total[name]
        rate_b = benign_b = change_b = diff_b = None
        if reps:
            rate_b, benign_b = boot_total[name]
            change_b = ratio(rate_b, boot_total[control][0]) - 1.0
            diff_b = rate_b - boot_total[control][0]
        act = actions.get(name)
        in_log = exposures > 0
        by_block = int(exposures[block_mask[name]].sum()) if act is not None else 0
        arm_results.append(
            ArmResult(
                name=name,
                description=arm.describe(),
                is_control=arm.is_control,
                policy=arm.policy.model_dump(mode="json") if arm.policy is not None else None,
                review_delay_s=float(delays[name]),
                exposures=int(totals.sum() - rem.sum()),
                labeled_exposures=int(totals[BENIGN] + totals[HARMFUL] - rem[BENIGN] - rem[HARMFUL]),
                harmful_exposures=int(totals[HARMFUL] - rem[HARMFUL]),
                removed_by_block=by_block,
                removed_by_review=int(rem.sum()) - by_block,
                benign_exposures_removed=int(rem[BENIGN]),
                harmful_exposures_removed=int(rem[HARMFUL]),
                unlabeled_exposures_removed=int(rem[UNLABELED]),
                notes_actioned=int(((act == BLOCK) | (act == REVIEW))[in_log].sum()) if act is not None else 0,
                notes_blocked=int((act == BLOCK)[in_log].sum()) if act is not None else 0,
                notes_reviewed=int((act == REVIEW)[in_log].sum()) if act is not None else 0,
                notes_removed_after_review=int(review_mask[name][in_log].sum()) if act is not None else 0,
                benign_notes_blocked=int(((act == BLOCK) & (truth == BENIGN))[in_log].sum()) if act is not None else 0,
                harmful_notes_missed=int(((act != BLOCK) & (act != REVIEW) & (truth == HARMFUL))[in_log].sum())
                if act is not None
                else int(((truth == HARMFUL) & in_log).sum()),
                harmful_exposure_rate=estimate(float(rate), rate_b, conf),
                benign_removed_share=estimate(float(benign_share), benign_b, conf),
                change_vs_control=estimate(
                    float(rate / control_rate - 1.0) if control_rate else float("nan"), change_b, conf
                ),
                difference_vs_control=estimate(float(rate - control_rate), diff_b, conf),
            )
        )

    days = []
    logged_per_day = logged_c.sum(axis=(0, 2))
    for d in range(n_days):
        per_arm = {}
        for arm in arms:
            name = arm.name
            rate_d = point_day[name][0][d]
            base_d = control_day[d]
            change = rate_d / base_d - 1.0 if base_d and np.isfinite(base_d) else float("nan")
            rb = cb = None
            if reps:
                rb = boot_day[name][0][:, d]
                cb = ratio(rb, boot_day[control][0][:, d]) - 1.0
            kept = int(logged_c[:, d, :].sum() - arm_cells(name)[:, d, :].sum())
            per_arm[name] = DayArm(
                harmful_exposure_rate=estimate(float(rate_d), rb, conf),
                change_vs_control=estimate(change, cb, conf),
                exposures=kept,
            )
        days.append(DayResult(day=_day_label(day0, d), logged_exposures=int(logged_per_day[d]), arms=per_arm))

    # Threshold sweep per score source, from per-note counts.
    sweeps = []
    default_after = after_counts.get(int(settings.review_delay.total_seconds()))
    for source, (label, categories, matrix) in scored.items():
        members = [a for a in arms if source_of.get(a.name) == source]
        base = members[0].policy
        after = default_after if default_after is not None else after_counts[delays[members[0].name]]
        max_score = matrix.max(axis=1) if matrix.size else np.zeros(0)
        grid = (
            np.unique(np.round(np.quantile(max_score, np.linspace(0.0, 1.0, settings.sweep_points)), 6))
            if settings.sweep_points and len(max_score)
            else np.zeros(0)
        )
        points = []
        for t in [*grid.tolist(), 1.0]:
            t = float(min(max(t, 0.0), 1.0))
            full = np.zeros(n_notes, dtype=np.int8)
            full[seen] = decide_actions(_sweep_policy(base, categories, t), categories, matrix)
            points.append(
                SweepPoint(threshold=t, **_note_totals(full, truth, exposures, after, settings.unlabeled_review))
            )
        arm_points = {
            a.name: SweepPoint(
                threshold=None,
                **_note_totals(
                    actions[a.name], truth, exposures, after_counts[delays[a.name]], settings.unlabeled_review
                ),
            )
            for a in members
        }
        sweeps.append(
            Sweep(
                source=label,
                rule="every category blocks at t; review thresholds above t are lowered to t",
                points=points,
                arm_points=arm_points,
            )
        )
    timings["metrics_bootstrap"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    logged_total = int(totals.sum())
    labeled_total = int(totals[BENIGN] + totals[HARMFUL])
    inputs = {"impressions": issues, "notes": notes_index.issues}
    if label_table is not None:
        inputs["labels"] = label_table.issues
    return ExposureResult(
        settings=settings,
        control=control,
        inputs=inputs,
        period_start=_day_label(day0, 0),
        period_end=_day_label(day0, n_days - 1),
        logged_exposures=logged_total,
        labeled_exposures=labeled_total,
        harmful_exposures=int(totals[HARMFUL]),
        label_coverage=labeled_total / logged_total if logged_total else None,
        distinct_notes=len(seen),
        distinct_users=users,
        user_clusters=len(used),
        scoring=scoring,
        arms=arm_results,
        days=days,
        sweeps=sweeps,
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )
