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
- Relative change vs the control arm = rate(arm) / rate(control) - 1, with an interval from a paired Poisson
  bootstrap over users and notes (two-way: users hashed into `user_buckets`, notes into `note_buckets`, cell
  weight = product of the two; resampling whole users keeps each user's correlated impressions together, and
  resampling notes lets the interval hold for a fresh draw of notes), overall and per UTC day; p-values of
  every change corrected across arms and days (Holm or Benjamini–Hochberg); see `bootstrap` for the interval.
- Threshold sweep: for each bundle, the harmful exposure rate against the share of benign exposures
  removed as one block threshold `t` is applied to every category (review thresholds above `t` are
  lowered to `t`), from per-note exposure counts (no second pass over the log).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from redone_sdk.replay.arms import Arm, ScoreCache
from redone_sdk.replay.exposure_metrics import (
    ExposureState,
    arm_rates,
    arm_results,
    correct,
    day_label,
    day_results,
    power_of,
    segment_results,
)
from redone_sdk.replay.exposure_passes import (
    BENIGN,
    HARMFUL,
    UNLABELED,
    SegmentCodes,
    Spill,
    count_cells,
    count_exposures,
    note_buckets_of,
    removal_rules,
    truth_of,
)
from redone_sdk.replay.exposure_results import (
    ArmResult,
    DayResult,
    ExposureResult,
    ExposureSettings,
    Sweep,
    SweepPoint,
)
from redone_sdk.replay.exposure_scoring import decide_arm_actions
from redone_sdk.replay.exposure_sweep import threshold_sweeps
from redone_sdk.replay.labels import Labels, read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.schemas import ReplayInputError

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


def _control_arm(arms: list[Arm], control: str | None) -> str:
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
    return control


def _effective(exposures) -> float | None:
    """Kish's effective number of notes: (Σ e)² / Σ e² (None without exposures)."""
    e = exposures.astype(float)
    square = float((e**2).sum())
    return float(e.sum()) ** 2 / square if square else None


def _segment_codes(
    settings: ExposureSettings, notes: str | Path, notes_index, labels: Labels | None, logged
) -> tuple[SegmentCodes, dict[str, list[str]]]:
    """The levels pass 2 counts by, and their names, for the segments asked for (surfaces and a users table's
    cohorts: what pass 1 found)."""
    from redone_sdk.replay.segments import cohort_levels, note_levels, surface_levels

    by_note, names, surface_codes = {}, {}, None
    for dim in settings.segments:
        if dim == "cohort":
            user_cohorts = logged.user_cohorts
            names[dim] = user_cohorts.names if user_cohorts is not None else cohort_levels(settings.cohorts)
            continue
        if dim == "surface":
            surface_codes, names[dim] = surface_levels(logged.surfaces)
            continue
        levels = note_levels(dim, notes, notes_index, labels)
        by_note[dim] = (levels.codes, len(levels.names))
        names[dim] = levels.names
    cohorts = settings.cohorts if "cohort" in settings.segments and logged.user_cohorts is None else 0
    user_cohorts = len(logged.user_cohorts.names) if logged.user_cohorts is not None else 0
    return SegmentCodes(by_note, cohorts, surface_codes, user_cohorts), names


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
    control = _control_arm(arms, control)

    notes_index = read_notes(notes)
    if len(notes_index) == 0:
        raise ReplayInputError(f"notes table {notes} has no valid note ({notes_index.issues.summary()})")
    if isinstance(labels, (str, Path)):
        label_table: Labels | None = read_labels(labels, notes=notes_index)
    elif isinstance(labels, Mapping):
        label_table = Labels.from_mapping(labels)
    else:
        label_table = labels
    truth = truth_of(notes_index, label_table)
    label_weight, label_weighting = None, None
    if isinstance(labels, (str, Path)):
        from redone_sdk.replay.label_weights import label_weights

        label_weight, label_weighting = label_weights(labels, notes_index, truth != UNLABELED, settings.stratum_sizes)
    elif settings.stratum_sizes:
        raise ReplayInputError("stratum sizes need a labels table with a `stratum` column")
    timings["read_notes_labels"] = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="redone-replay-", dir=settings.spill_dir) as spill_dir:
        spill = Spill(Path(spill_dir))
        logged = count_exposures(impressions, notes_index, settings, spill)
        timings["pass1_validate"] = time.perf_counter() - started - timings["read_notes_labels"]
        if logged.issues.rows_used == 0:
            raise ReplayInputError(f"no valid impression in {impressions}: {logged.issues.summary()}")
        log.info("%s", logged.issues.summary())

        t0 = time.perf_counter()
        decided = decide_arm_actions(arms, notes_index, logged.seen, cache)
        timings["scoring"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        removal = removal_rules(arms, decided.actions, notes_index, truth, logged, settings)
        codes, segment_levels = _segment_codes(settings, notes, notes_index, label_table, logged)
        cells = count_cells(
            spill,
            logged,
            truth,
            removal,
            settings,
            note_buckets_of(notes_index, settings.note_buckets),
            codes,
            label_weight,
        )
        timings["pass2_aggregate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    state = ExposureState(arms, control, settings, truth, logged, decided, removal, cells, segment_levels)
    rates = arm_rates(state)
    arm_list, days, sweeps = arm_results(state, rates), day_results(state, rates), threshold_sweeps(state)
    arm_list, days, comparisons = correct(state, arm_list, days)
    power = power_of(state, rates)
    segments, segment_tests = segment_results(state)
    timings["metrics_bootstrap"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    totals = cells.logged.sum(axis=(0, 1, 2))
    logged_total = int(totals.sum())
    labeled_total = int(totals[BENIGN] + totals[HARMFUL])
    inputs = {"impressions": logged.issues, "notes": notes_index.issues}
    if label_table is not None:
        inputs["labels"] = label_table.issues
    if logged.user_cohorts is not None:
        inputs["users"] = logged.user_cohorts.issues
    return ExposureResult(
        settings=settings,
        control=control,
        inputs=inputs,
        period_start=day_label(logged.day0, 0),
        period_end=day_label(logged.day0, logged.n_days - 1),
        logged_exposures=logged_total,
        labeled_exposures=labeled_total,
        harmful_exposures=int(totals[HARMFUL]),
        label_coverage=labeled_total / logged_total if logged_total else None,
        distinct_notes=len(logged.seen),
        distinct_users=logged.users,
        user_clusters=rates.clusters,
        note_clusters=rates.note_clusters,
        comparisons=comparisons + segment_tests,
        segments=segments,
        label_weighting=label_weighting,
        effective_notes=_effective(logged.exposures[truth != UNLABELED]),
        effective_harmful_notes=_effective(logged.exposures[truth == HARMFUL]),
        power=power,
        scoring=decided.scoring,
        arms=arm_list,
        days=days,
        sweeps=sweeps,
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )
