"""Metrics of the exposure replay from the counted cells: per arm and per UTC day, the harmful exposure rate,
the share of benign exposures removed and the change vs control, with a paired Poisson bootstrap over user
clusters (one matrix product for every arm)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from redone_sdk.replay.arms import BLOCK, REVIEW, Arm
from redone_sdk.replay.bootstrap import estimate, poisson_weights, ratio
from redone_sdk.replay.exposure_passes import BENIGN, DAY_S, HARMFUL, UNLABELED, Cells, LoggedExposures, Removal
from redone_sdk.replay.exposure_results import ArmResult, DayArm, DayResult, ExposureSettings
from redone_sdk.replay.exposure_scoring import ArmActions

__all__ = ["ExposureState", "Rates", "arm_rates", "arm_results", "day_results", "day_label"]


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

    def removed(self, arm: str) -> np.ndarray:
        """[buckets, days, 3] exposures the arm removes (zeros for an arm that removes nothing)."""
        return self.cells.removed.get(arm, np.zeros_like(self.cells.logged))


@dataclass(frozen=True)
class Rates:
    """Per arm, (harmful exposure rate, benign share removed): overall and per day, on the data (`total`,
    `day`) and in every bootstrap replicate (`boot_total`: [reps], `boot_day`: [reps, days]; None without
    a bootstrap). `clusters`: user clusters with at least one exposure."""

    total: dict[str, tuple[np.ndarray, np.ndarray]]
    day: dict[str, tuple[np.ndarray, np.ndarray]]
    boot_total: dict[str, tuple[np.ndarray, np.ndarray]] | None
    boot_day: dict[str, tuple[np.ndarray, np.ndarray]] | None
    clusters: int


def _rates(log_cells: np.ndarray, rem_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kept_harmful = log_cells[..., HARMFUL] - rem_cells[..., HARMFUL]
    kept_labeled = log_cells[..., HARMFUL] + log_cells[..., BENIGN] - rem_cells[..., HARMFUL] - rem_cells[..., BENIGN]
    return ratio(kept_harmful, kept_labeled), ratio(rem_cells[..., BENIGN], log_cells[..., BENIGN])


def _replicates(state: ExposureState, used: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bootstrap sums per replicate: logged [reps, days, 3], and removed per arm. One matrix product for every
    arm: [logged | removed by arm 1 | …] per user cluster, weighted by the same Poisson weights."""
    settings, cells = state.settings, state.cells
    reps, n_days = settings.bootstrap, cells.logged.shape[1]
    weights = poisson_weights(len(used), reps, settings.seed)
    moved = [n for n, r in cells.removed.items() if r.any()]
    stacked = np.concatenate(
        [cells.logged[used].reshape(len(used), -1)] + [cells.removed[n][used].reshape(len(used), -1) for n in moved],
        axis=1,
    )
    product = (weights @ stacked.astype(np.float64)).reshape(reps, 1 + len(moved), n_days, 3)
    boot_removed = {a.name: np.zeros((reps, n_days, 3)) for a in state.arms}
    for k, n in enumerate(moved, start=1):
        boot_removed[n] = product[:, k]
    return product[:, 0], boot_removed


def arm_rates(state: ExposureState) -> Rates:
    logged = state.cells.logged
    used = np.flatnonzero(logged.reshape(len(logged), -1).sum(axis=1) > 0)
    names = [a.name for a in state.arms]
    total = {n: _rates(logged.sum(axis=(0, 1)), state.removed(n).sum(axis=(0, 1))) for n in names}
    day = {n: _rates(logged.sum(axis=0), state.removed(n).sum(axis=0)) for n in names}
    if not state.settings.bootstrap:
        return Rates(total, day, None, None, len(used))
    boot_logged, boot_removed = _replicates(state, used)
    boot_total = {n: _rates(boot_logged.sum(axis=1), boot_removed[n].sum(axis=1)) for n in names}
    boot_day = {n: _rates(boot_logged, boot_removed[n]) for n in names}
    return Rates(total, day, boot_total, boot_day, len(used))


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
    conf, control = state.settings.confidence, state.control
    control_rate = rates.total[control][0]
    totals = state.cells.logged.sum(axis=(0, 1))
    out = []
    for arm in state.arms:
        name = arm.name
        rem = state.removed(name).sum(axis=(0, 1))
        rate, benign_share = rates.total[name]
        rate_b = benign_b = change_b = diff_b = None
        if rates.boot_total is not None:
            rate_b, benign_b = rates.boot_total[name]
            change_b = ratio(rate_b, rates.boot_total[control][0]) - 1.0
            diff_b = rate_b - rates.boot_total[control][0]
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
                harmful_exposure_rate=estimate(float(rate), rate_b, conf),
                benign_removed_share=estimate(float(benign_share), benign_b, conf),
                change_vs_control=estimate(
                    float(rate / control_rate - 1.0) if control_rate else float("nan"), change_b, conf
                ),
                difference_vs_control=estimate(float(rate - control_rate), diff_b, conf),
            )
        )
    return out


def day_label(day0: int, index: int) -> str:
    return datetime.fromtimestamp(day0 + index * DAY_S, tz=timezone.utc).strftime("%Y-%m-%d")


def day_results(state: ExposureState, rates: Rates) -> list[DayResult]:
    conf, control = state.settings.confidence, state.control
    logged = state.cells.logged
    control_day = rates.day[control][0]
    logged_per_day = logged.sum(axis=(0, 2))
    days = []
    for d in range(state.logged.n_days):
        per_arm = {}
        for arm in state.arms:
            name = arm.name
            rate_d = rates.day[name][0][d]
            base_d = control_day[d]
            change = rate_d / base_d - 1.0 if base_d and np.isfinite(base_d) else float("nan")
            rb = cb = None
            if rates.boot_day is not None:
                rb = rates.boot_day[name][0][:, d]
                cb = ratio(rb, rates.boot_day[control][0][:, d]) - 1.0
            kept = int(logged[:, d, :].sum() - state.removed(name)[:, d, :].sum())
            per_arm[name] = DayArm(
                harmful_exposure_rate=estimate(float(rate_d), rb, conf),
                change_vs_control=estimate(change, cb, conf),
                exposures=kept,
            )
        days.append(
            DayResult(day=day_label(state.logged.day0, d), logged_exposures=int(logged_per_day[d]), arms=per_arm)
        )
    return days
