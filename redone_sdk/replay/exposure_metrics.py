"""Metrics of the exposure replay from the counted cells: per arm and per UTC day, the harmful exposure rate,
the share of benign exposures removed and the change vs control, with a paired Poisson bootstrap over user ×
note buckets (two-way by default; one matrix product for every arm and day), t intervals, p-values corrected
across arms and days, and the power figure of a follow-up online test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property

import numpy as np

from redone_sdk.replay.arms import BLOCK, REVIEW, Arm
from redone_sdk.replay.bootstrap import (
    Estimate,
    IntervalMethod,
    cluster_weights,
    combined_df,
    estimate,
    influence_sides,
    ratio,
    weighted_sums,
)
from redone_sdk.replay.exposure_passes import BENIGN, DAY_S, HARMFUL, UNLABELED, Cells, LoggedExposures, Removal
from redone_sdk.replay.exposure_results import (
    ArmResult,
    Comparison,
    DayArm,
    DayResult,
    ExposureSettings,
    SegmentResult,
)
from redone_sdk.replay.exposure_scoring import ArmActions
from redone_sdk.replay.multiple_testing import adjust, t_p_value
from redone_sdk.replay.power import PowerResult, power_result

__all__ = [
    "ExposureState",
    "Rates",
    "StatTable",
    "arm_rates",
    "rates_from_cells",
    "arm_results",
    "day_results",
    "day_label",
    "correct",
    "segment_results",
    "power_of",
]


@dataclass(frozen=True)
class ExposureState:
    """Everything the replay knows after pass 2; the metrics and the sweep are read from it."""

    arms: list[Arm]
    control: str
    settings: ExposureSettings
    truth: np.ndarray  # per note row: BENIGN, HARMFUL, UNLABELED
    logged: LoggedExposures
    decided: ArmActions
    removal: Removal
    cells: Cells
    segment_levels: dict[str, list[str]] = field(default_factory=dict)  # dimension -> level names

    def removed(self, arm: str) -> np.ndarray:
        """[user buckets, note buckets, days, 3] exposures the arm removes (zeros for an arm that removes nothing)."""
        return self.cells.removed.get(arm, np.zeros_like(self.cells.logged))


def _rates(log_cells: np.ndarray, rem_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kept_harmful = log_cells[..., HARMFUL] - rem_cells[..., HARMFUL]
    kept_labeled = log_cells[..., HARMFUL] + log_cells[..., BENIGN] - rem_cells[..., HARMFUL] - rem_cells[..., BENIGN]
    return ratio(kept_harmful, kept_labeled), ratio(rem_cells[..., BENIGN], log_cells[..., BENIGN])


@dataclass(frozen=True)
class StatTable:
    """Every statistic of the replay as a function of the summed cells: blocks [logged | removed by each arm
    that acts], each [days, 3], flattened. `columns` names each output: (arm, stat, day index or None) with stat
    in rate, benign, change, diff (day: rate, change)."""

    arms: list[str]
    control: str
    blocks: dict[str, int]  # arm -> block of its removed sums (absent: removes nothing)
    n_days: int

    @property
    def columns(self) -> list[tuple[str, str, int | None]]:
        out: list[tuple[str, str, int | None]] = []
        for arm in self.arms:
            out += [(arm, s, None) for s in ("rate", "benign", "change", "diff")]
            out += [(arm, s, d) for d in range(self.n_days) for s in ("rate", "change")]
        return out

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        """[n, K] sums -> [n, S] statistics (S = len(columns))."""
        n = flat.shape[0]
        sums = flat.reshape(n, 1 + len(self.blocks), self.n_days, 3)
        logged = sums[:, 0]
        zeros = np.zeros_like(logged)
        per_arm = {}
        for arm in self.arms:
            removed = sums[:, self.blocks[arm]] if arm in self.blocks else zeros
            total = _rates(logged.sum(axis=1), removed.sum(axis=1))
            per_arm[arm] = (total, _rates(logged, removed))
        base_total, base_day = per_arm[self.control][0][0], per_arm[self.control][1][0]
        cols = []
        for arm in self.arms:
            (rate, benign), (day_rate, _) = per_arm[arm]
            cols += [rate, benign, ratio(rate, base_total) - 1.0, rate - base_total]
            day_change = ratio(day_rate, base_day) - 1.0
            for d in range(self.n_days):
                cols += [day_rate[:, d], day_change[:, d]]
        return np.stack(cols, axis=1)


@dataclass(frozen=True)
class Rates:
    """Every statistic (columns of `table`) on the data, per bootstrap replicate ([reps, S], None without a
    bootstrap), with the t interval's df and the linearized variance per side. `clusters`: user buckets and
    note buckets with at least one exposure."""

    table: StatTable
    point: np.ndarray
    boot: np.ndarray | None
    df: np.ndarray
    variance: dict[str, np.ndarray]
    clusters: int
    note_clusters: int
    confidence: float
    method: IntervalMethod

    @cached_property
    def _index(self) -> dict[tuple[str, str, int | None], int]:
        return {c: i for i, c in enumerate(self.table.columns)}

    def index(self, arm: str, stat: str, day: int | None = None) -> int:
        return self._index[(arm, stat, day)]

    def estimate(self, arm: str, stat: str, day: int | None = None) -> Estimate:
        i = self.index(arm, stat, day)
        samples = self.boot[:, i] if self.boot is not None else None
        found = estimate(float(self.point[i]), samples, self.confidence, df=float(self.df[i]), method=self.method)
        return _clip(found, *_BOUNDS[stat])


_BOUNDS = {"rate": (0.0, 1.0), "benign": (0.0, 1.0), "change": (-1.0, math.inf), "diff": (-1.0, 1.0)}


def _clip(est: Estimate, low: float, high: float) -> Estimate:
    """A t interval is symmetric and may pass what the statistic can be (a rate below 0, a change below
    -100 %); its ends are clipped to the statistic's range."""
    if est.lo is None or est.hi is None:
        return est
    return est.model_copy(update={"lo": max(est.lo, low), "hi": min(est.hi, high)})


def rates_from_cells(
    logged: np.ndarray, removed: dict[str, np.ndarray], arms: list[str], control: str, settings: ExposureSettings
) -> Rates:
    """Every statistic with its bootstrap: `logged` [user buckets, note buckets, days, 3] and the cells each
    arm removes (an arm absent from `removed`, or with no removal, removes nothing)."""
    n_u, n_v, n_days = logged.shape[0], logged.shape[1], logged.shape[2]
    moved = [n for n, r in removed.items() if r.any()]
    table = StatTable(list(arms), control, {n: k for k, n in enumerate(moved, 1)}, n_days)
    stacked = np.concatenate([logged.reshape(n_u, n_v, -1)] + [removed[n].reshape(n_u, n_v, -1) for n in moved], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = table(stacked.sum(axis=(0, 1))[None].astype(np.float64))[0]
        sides = influence_sides(stacked, table)
    df = combined_df(sides, settings.bootstrap_unit)
    boot = None
    if settings.bootstrap:
        weights = cluster_weights(settings.bootstrap_unit, n_u, n_v, settings.bootstrap, settings.seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = table(weighted_sums(stacked, weights))
    per_side = stacked.sum(axis=2)
    return Rates(
        table,
        point,
        boot,
        df,
        {name: var for name, (var, _) in sides.items()},
        int((per_side.sum(axis=1) > 0).sum()),
        int((per_side.sum(axis=0) > 0).sum()),
        settings.confidence,
        settings.interval,
    )


def arm_rates(state: ExposureState) -> Rates:
    """The rates of every arm and day (from the label-weighted cells when labels carry weights)."""
    logged, removed = state.cells.weighted or (state.cells.logged, state.cells.removed)
    return rates_from_cells(logged, removed, [a.name for a in state.arms], state.control, state.settings)


def _note_counts(state: ExposureState, arm: Arm) -> dict[str, int]:
    """Counts of the notes of the log by what the arm does to them."""
    exposures, truth = state.logged.exposures, state.truth
    in_log = exposures > 0
    act = state.decided.actions.get(arm.name)
    if act is None:
        return {
            "removed_by_block": 0,
            "notes_actioned": 0,
            "notes_blocked": 0,
            "notes_reviewed": 0,
            "notes_removed_after_review": 0,
            "benign_notes_blocked": 0,
            "harmful_notes_missed": int(((truth == HARMFUL) & in_log).sum()),
        }
    return {
        "removed_by_block": int(exposures[state.removal.block_mask[arm.name]].sum()),
        "notes_actioned": int(((act == BLOCK) | (act == REVIEW))[in_log].sum()),
        "notes_blocked": int((act == BLOCK)[in_log].sum()),
        "notes_reviewed": int((act == REVIEW)[in_log].sum()),
        "notes_removed_after_review": int(state.removal.review_mask[arm.name][in_log].sum()),
        "benign_notes_blocked": int(((act == BLOCK) & (truth == BENIGN))[in_log].sum()),
        "harmful_notes_missed": int(((act != BLOCK) & (act != REVIEW) & (truth == HARMFUL))[in_log].sum()),
    }


def arm_results(state: ExposureState, rates: Rates) -> list[ArmResult]:
    totals = state.cells.logged.sum(axis=(0, 1, 2))
    out = []
    for arm in state.arms:
        name = arm.name
        rem = state.removed(name).sum(axis=(0, 1, 2))
        notes = _note_counts(state, arm)
        by_block = notes.pop("removed_by_block")
        out.append(
            ArmResult(
                name=name,
                description=arm.describe(),
                is_control=arm.is_control,
                policy=arm.policy.model_dump(mode="json") if arm.policy is not None else None,
                review_delay_s=float(state.removal.delays[name]),
                exposures=int(totals.sum() - rem.sum()),
                labeled_exposures=int(totals[BENIGN] + totals[HARMFUL] - rem[BENIGN] - rem[HARMFUL]),
                harmful_exposures=int(totals[HARMFUL] - rem[HARMFUL]),
                removed_by_block=by_block,
                removed_by_review=int(rem.sum()) - by_block,
                benign_exposures_removed=int(rem[BENIGN]),
                harmful_exposures_removed=int(rem[HARMFUL]),
                unlabeled_exposures_removed=int(rem[UNLABELED]),
                **notes,
                harmful_exposure_rate=rates.estimate(name, "rate"),
                benign_removed_share=rates.estimate(name, "benign"),
                change_vs_control=rates.estimate(name, "change"),
                difference_vs_control=rates.estimate(name, "diff"),
            )
        )
    return out


def day_label(day0: int, index: int) -> str:
    return datetime.fromtimestamp(day0 + index * DAY_S, tz=timezone.utc).strftime("%Y-%m-%d")


def day_results(state: ExposureState, rates: Rates) -> list[DayResult]:
    logged = state.cells.logged
    logged_per_day = logged.sum(axis=(0, 1, 3))
    days = []
    for d in range(state.logged.n_days):
        per_arm = {}
        for arm in state.arms:
            name = arm.name
            kept = int(logged[:, :, d, :].sum() - state.removed(name)[:, :, d, :].sum())
            per_arm[name] = DayArm(
                harmful_exposure_rate=rates.estimate(name, "rate", d),
                change_vs_control=rates.estimate(name, "change", d),
                exposures=kept,
            )
        days.append(
            DayResult(day=day_label(state.logged.day0, d), logged_exposures=int(logged_per_day[d]), arms=per_arm)
        )
    return days


def _with_p(est: Estimate, p: float | None, p_adj: float | None) -> Estimate:
    return est.model_copy(update={"p_value": p, "p_adjusted": p_adj})


def correct(
    state: ExposureState, arms: list[ArmResult], days: list[DayResult]
) -> tuple[list[ArmResult], list[DayResult], list[Comparison]]:
    """p-values of every change vs control (each non-control arm, overall and per day), corrected together
    (Holm or Benjamini–Hochberg); written into the estimates and listed as comparisons."""
    settings, control = state.settings, state.control
    slots: list[tuple[str, str | None, Estimate]] = []
    for arm in arms:
        if arm.name != control:
            slots.append((arm.name, None, arm.change_vs_control))
    for day in days:
        for name, day_arm in day.arms.items():
            if name != control:
                slots.append((name, day.day, day_arm.change_vs_control))
    raw = [t_p_value(e.value, e.se, e.df) for _, _, e in slots]
    adjusted = adjust(raw, settings.correction)
    level = 1.0 - settings.confidence
    comparisons = [
        Comparison(arm=a, day=d, change=e.value, p_value=p, p_adjusted=q, significant=q is not None and q < level)
        for (a, d, e), p, q in zip(slots, raw, adjusted, strict=True)
    ]
    lookup = {(c.arm, c.day): c for c in comparisons}
    arms = [
        a.model_copy(update={"change_vs_control": _with_p(a.change_vs_control, c.p_value, c.p_adjusted)})
        if (c := lookup.get((a.name, None)))
        else a
        for a in arms
    ]
    new_days = []
    for day in days:
        per_arm = {}
        for name, day_arm in day.arms.items():
            c = lookup.get((name, day.day))
            per_arm[name] = (
                day_arm.model_copy(
                    update={"change_vs_control": _with_p(day_arm.change_vs_control, c.p_value, c.p_adjusted)}
                )
                if c
                else day_arm
            )
        new_days.append(day.model_copy(update={"arms": per_arm}))
    return arms, new_days, comparisons


def power_of(state: ExposureState, rates: Rates) -> PowerResult | None:
    """The MDE of a follow-up online test, from the control rate's linearized variance in the log."""
    i = rates.index(state.control, "rate")
    rate = float(rates.point[i])
    if not math.isfinite(rate):
        return None
    var_users, var_notes = float(rates.variance["users"][i]), float(rates.variance["notes"][i])
    return power_result(rate, var_users, var_notes, state.logged.users, state.settings.power)


def segment_results(state: ExposureState) -> tuple[list[SegmentResult], list[Comparison]]:
    """Per segment level and arm: rate and change vs control with the same bootstrap (same weights, so paired
    with the overall figures), and the level's tests, corrected together as one family."""
    from redone_sdk.replay.segments import category_cells

    names = [a.name for a in state.arms]
    out: list[SegmentResult] = []
    slots: list[tuple[str, str, str, Estimate]] = []
    for dim, (logged, removed) in state.cells.segments.items():
        levels = state.segment_levels[dim]
        if dim == "category":
            logged, levels_kept = category_cells(logged, levels)
            removed = {a: category_cells(r, levels)[0] for a, r in removed.items()}
            levels = levels_kept
        if not levels:
            continue
        rates = rates_from_cells(logged, removed, names, state.control, state.settings)
        # What a level counts: its category's exposures (category), else all of its exposures.
        part = (slice(None), slice(None), slice(None), HARMFUL if dim == "category" else slice(None))
        counted = logged[part].reshape(logged.shape[0], logged.shape[1], len(levels), -1).sum(axis=(0, 1, 3))
        for i, level in enumerate(levels):
            per_arm = {}
            for name in names:
                rem = removed.get(name)
                gone = (
                    rem[part].reshape(rem.shape[0], rem.shape[1], len(levels), -1).sum(axis=(0, 1, 3))
                    if rem is not None
                    else None
                )
                per_arm[name] = DayArm(
                    harmful_exposure_rate=rates.estimate(name, "rate", i),
                    change_vs_control=rates.estimate(name, "change", i),
                    exposures=int(counted[i] - (gone[i] if gone is not None else 0)),
                )
                if name != state.control:
                    slots.append((name, dim, level, per_arm[name].change_vs_control))
            out.append(SegmentResult(dimension=dim, level=level, logged_exposures=int(counted[i]), arms=per_arm))
    raw = [t_p_value(e.value, e.se, e.df) for *_, e in slots]
    adjusted = adjust(raw, state.settings.correction)
    level_alpha = 1.0 - state.settings.confidence
    comparisons = [
        Comparison(
            arm=a,
            day=None,
            segment=f"{d}={lv}",
            change=e.value,
            p_value=p,
            p_adjusted=q,
            significant=q is not None and q < level_alpha,
        )
        for (a, d, lv, e), p, q in zip(slots, raw, adjusted, strict=True)
    ]
    lookup = {(c.arm, c.segment): c for c in comparisons}
    for seg in out:
        for name, arm in list(seg.arms.items()):
            c = lookup.get((name, f"{seg.dimension}={seg.level}"))
            if c is not None:
                seg.arms[name] = arm.model_copy(
                    update={"change_vs_control": _with_p(arm.change_vs_control, c.p_value, c.p_adjusted)}
                )
    return out, comparisons
