"""The exposure replay's threshold sweep: for each score source, the harmful exposure rate against the share of
benign exposures removed as one block threshold `t` is applied to every category (review thresholds above `t`
are lowered to `t`), computed from per-note exposure counts (no further pass over the log)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay.arms import BLOCK, REVIEW, decide_actions
from redone_sdk.replay.exposure_metrics import ExposureState
from redone_sdk.replay.exposure_passes import BENIGN, HARMFUL, UNLABELED
from redone_sdk.replay.exposure_results import Sweep, SweepPoint
from redone_sdk.replay.exposure_scoring import ScoredSource

__all__ = ["SWEEP_RULE", "threshold_sweeps"]

SWEEP_RULE = "every category blocks at t; review thresholds above t are lowered to t"


def _sweep_policy(base: Policy, categories: Sequence[str], threshold: float) -> Policy:
    rules = {c: CategoryRule(review=min(base.rule_for(c).review, threshold), block=threshold) for c in categories}
    return Policy(name=f"block@{threshold:.4f}", rules=rules)


def _point(threshold: float | None, actions: np.ndarray, state: ExposureState, after: np.ndarray) -> SweepPoint:
    """The totals of one action vector from per-note counts."""
    truth, exposures = state.truth, state.logged.exposures
    block = actions == BLOCK
    review_removes = (actions == REVIEW) & (
        (truth == HARMFUL) | ((truth == UNLABELED) & (state.settings.unlabeled_review == "remove"))
    )
    removed = np.where(block, exposures, np.where(review_removes, after, 0))
    benign_logged = exposures[truth == BENIGN].sum()
    harmful_logged = exposures[truth == HARMFUL].sum()
    benign_removed = removed[truth == BENIGN].sum()
    harmful_removed = removed[truth == HARMFUL].sum()
    kept_labeled = benign_logged + harmful_logged - benign_removed - harmful_removed
    return SweepPoint(
        threshold=threshold,
        harmful_exposure_rate=float((harmful_logged - harmful_removed) / kept_labeled) if kept_labeled else None,
        benign_removed_share=float(benign_removed / benign_logged) if benign_logged else None,
        benign_exposures_removed=int(benign_removed),
        harmful_exposures_removed=int(harmful_removed),
        notes_actioned=int(((actions == BLOCK) | (actions == REVIEW)).sum()),
    )


def _sweep(state: ExposureState, source: str, scored: ScoredSource) -> Sweep:
    settings, removal, after_counts = state.settings, state.removal, state.cells.after_counts
    members = [a for a in state.arms if state.decided.source_of.get(a.name) == source]
    base = members[0].policy
    default_after = after_counts.get(int(settings.review_delay.total_seconds()))
    after = default_after if default_after is not None else after_counts[removal.delays[members[0].name]]
    categories, matrix = scored.categories, scored.matrix
    max_score = matrix.max(axis=1) if matrix.size else np.zeros(0)
    grid = (
        np.unique(np.round(np.quantile(max_score, np.linspace(0.0, 1.0, settings.sweep_points)), 6))
        if settings.sweep_points and len(max_score)
        else np.zeros(0)
    )
    seen = state.logged.seen
    points = []
    for t in [*grid.tolist(), 1.0]:
        t = float(min(max(t, 0.0), 1.0))
        full = np.zeros(len(state.truth), dtype=np.int8)
        full[seen] = decide_actions(_sweep_policy(base, categories, t), categories, matrix)
        points.append(_point(t, full, state, after))
    arm_points = {
        a.name: _point(None, state.decided.actions[a.name], state, after_counts[removal.delays[a.name]])
        for a in members
    }
    return Sweep(source=scored.label, rule=SWEEP_RULE, points=points, arm_points=arm_points)


def threshold_sweeps(state: ExposureState) -> list[Sweep]:
    """One sweep per score source, with the arms that use it marked on the curve."""
    return [_sweep(state, source, scored) for source, scored in state.decided.sources.items()]
