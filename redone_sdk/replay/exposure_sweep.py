"""The exposure replay's threshold sweep: for each score source, the harmful exposure rate against the share of
benign exposures removed as one block threshold `t` is applied to every category (review thresholds above `t`
are lowered to `t`), computed from per-note exposure counts (no further pass over the log).

Thresholds are the quantiles of the notes' top scores, plus those where blocking removes chosen shares of the
benign exposures (0.1 % … 100 %, spread evenly on a log scale) and of the harmful ones, so the curve covers the
whole over-removal range; it ends at t = 1 and then "off" (nothing actioned: the log as it is). Each point has
a percentile interval from a Poisson bootstrap over notes (note rows grouped into `NOTE_BUCKETS` clusters): it
shows how much the curve depends on which notes the log happened to hold, not the users' correlation.

Each point is also tested against the control arm: the relative change rate(t) / rate(control) − 1, its standard
error from the same replicates (paired: the control's removals are weighted alike), a two-sided normal p-value,
and every point of every sweep corrected together as one family (Holm or Benjamini–Hochberg, the run's
`correction`). Like the interval, the test is over notes only: users' correlated impressions are not resampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay.arms import ALLOW, BLOCK, REVIEW, decide_actions, policy_thresholds
from redone_sdk.replay.exposure_metrics import ExposureState
from redone_sdk.replay.exposure_passes import BENIGN, HARMFUL, UNLABELED
from redone_sdk.replay.exposure_results import Sweep, SweepPoint
from redone_sdk.replay.exposure_scoring import ScoredSource
from redone_sdk.replay.multiple_testing import adjust, t_p_value

__all__ = ["SWEEP_RULE", "SWEEP_INTERVAL", "SWEEP_TEST", "NOTE_BUCKETS", "threshold_grid", "threshold_sweeps"]

SWEEP_RULE = (
    "every category blocks at t; review thresholds above t are lowered to t; the last point (t off) actions nothing"
)
SWEEP_INTERVAL = "Poisson bootstrap over notes"
SWEEP_TEST = "relative change vs control, normal p-value with the bootstrap-over-notes SE, corrected across points"
NOTE_BUCKETS = 1024  # bootstrap clusters of the sweep: note row modulo this


def _sweep_policy(base: Policy, categories: Sequence[str], threshold: float) -> Policy:
    rules = {c: CategoryRule(review=min(base.rule_for(c).review, threshold), block=threshold) for c in categories}
    return Policy(name=f"block@{threshold:.4f}", rules=rules, on_invalid_output=base.on_invalid_output)


class _SweepActions:
    """The action of `_sweep_policy(base, categories, t)` on every scored note, for any `t`, from per-category
    work done once: block iff the top score >= t; else review iff some category whose review threshold is
    <= t reaches it (a category whose review threshold is lowered to t would block). Equals `decide_actions`
    of that policy (a test checks it); scores with a non-finite value go through `decide_actions` itself."""

    def __init__(self, base: Policy, categories: Sequence[str], matrix: np.ndarray) -> None:
        self.base, self.categories, self.matrix = base, tuple(categories), matrix
        values = np.asarray(matrix, dtype=np.float64)
        self.exact = values.size == 0 or not np.isfinite(values).all()
        if not self.exact:
            self.review, _ = policy_thresholds(base, self.categories)
            self.top = values.max(axis=1)
            self.hits = values >= self.review[None, :]

    def __call__(self, threshold: float) -> np.ndarray:
        if self.exact:
            return decide_actions(_sweep_policy(self.base, self.categories, threshold), self.categories, self.matrix)
        block = self.top >= threshold
        lowered = self.review <= threshold
        review = self.hits[:, lowered].any(axis=1) if lowered.any() else np.zeros(len(block), dtype=bool)
        return np.where(block, BLOCK, np.where(review, REVIEW, ALLOW)).astype(np.int8)


def _weighted_thresholds(top: np.ndarray, weight: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The thresholds t at which blocking every note with top score >= t removes at least each share of
    `weight` (exposures of the notes of one ground truth)."""
    if not len(top) or weight.sum() <= 0:
        return np.zeros(0)
    order = np.argsort(-top, kind="stable")
    cumulative = np.cumsum(weight[order]) / weight.sum()
    at = np.minimum(np.searchsorted(cumulative, shares - 1e-12), len(order) - 1)
    return top[order][at]


def threshold_grid(top: np.ndarray, exposures: np.ndarray, truth: np.ndarray, points: int) -> np.ndarray:
    """The sweep's thresholds in [0, 1], ascending: quantiles of the notes' top scores (`points` of them), the
    thresholds that block 0.1 % … 100 % of the benign exposures (log-spaced) and 0 … 100 % of the harmful
    ones (`points // 2` each), and 1."""
    if not points or not len(top):
        return np.array([1.0])
    half = max(points // 2, 2)
    parts = [
        np.quantile(top, np.linspace(0.0, 1.0, points)),
        _weighted_thresholds(top, np.where(truth == BENIGN, exposures, 0), np.geomspace(1e-3, 1.0, half)),
        _weighted_thresholds(top, np.where(truth == HARMFUL, exposures, 0), np.linspace(0.0, 1.0, half + 1)[1:]),
        np.array([1.0]),
    ]
    return np.unique(np.clip(np.round(np.concatenate(parts), 6), 0.0, 1.0))


def _removed(actions: np.ndarray, state: ExposureState, after: np.ndarray) -> np.ndarray:
    """Exposures each note loses under `actions` (every one if blocked; after the delay if reviewed and the
    reviewer agrees)."""
    truth, exposures = state.truth, state.logged.exposures
    review_removes = (actions == REVIEW) & (
        (truth == HARMFUL) | ((truth == UNLABELED) & (state.settings.unlabeled_review == "remove"))
    )
    return np.where(actions == BLOCK, exposures, np.where(review_removes, after, 0))


def _point(threshold: float | None, actions: np.ndarray, state: ExposureState, after: np.ndarray) -> SweepPoint:
    """The totals of one action vector from per-note counts."""
    truth, exposures = state.truth, state.logged.exposures
    removed = _removed(actions, state, after)
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


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column of [replicates, points] (NaN replicates left out)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        finite = values[np.isfinite(values[:, j]), j]
        if len(finite):
            lo[j], hi[j] = np.quantile(finite, [alpha, 1.0 - alpha])
    return lo, hi


class _BucketSums:
    """Per note bucket, exposures logged and removed by each sweep point ([buckets] and [buckets, points]): all
    the bootstrap over notes needs, kept instead of a per-note vector per point."""

    def __init__(self, state: ExposureState, control_removed: np.ndarray) -> None:
        truth, exposures = state.truth, state.logged.exposures
        self.bucket = np.arange(len(truth), dtype=np.int64) % NOTE_BUCKETS  # notes are the independent units
        self.benign, self.harmful = truth == BENIGN, truth == HARMFUL
        self.benign_logged = self._sum(np.where(self.benign, exposures, 0))
        self.harmful_logged = self._sum(np.where(self.harmful, exposures, 0))
        self.benign_removed: list[np.ndarray] = []
        self.harmful_removed: list[np.ndarray] = []
        self.control_benign_removed = self._sum(np.where(self.benign, control_removed, 0))
        self.control_harmful_removed = self._sum(np.where(self.harmful, control_removed, 0))

    def _sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.bucket, weights=values, minlength=NOTE_BUCKETS)

    def add(self, removed: np.ndarray) -> None:
        self.benign_removed.append(self._sum(np.where(self.benign, removed, 0)))
        self.harmful_removed.append(self._sum(np.where(self.harmful, removed, 0)))


def _change(rate: float | None, control: float | None) -> float | None:
    return rate / control - 1.0 if rate is not None and control else None


def _with_intervals(
    points: list[SweepPoint], sums: _BucketSums, state: ExposureState, control: SweepPoint
) -> list[SweepPoint]:
    """Each point's percentile interval from a Poisson bootstrap over note buckets (the per-bucket sums of
    logged and removed exposures are weighted by one Poisson(1) draw per bucket and replicate), its change vs
    `control` and that change's uncorrected p-value (normal, SE of the paired replicates)."""
    settings = state.settings
    points = [
        p.model_copy(update={"change_vs_control": _change(p.harmful_exposure_rate, control.harmful_exposure_rate)})
        for p in points
    ]
    if not settings.bootstrap or not points:
        return points
    benign_logged, harmful_logged = sums.benign_logged, sums.harmful_logged
    benign_removed = np.stack(sums.benign_removed, axis=1)
    harmful_removed = np.stack(sums.harmful_removed, axis=1)
    rng = np.random.default_rng([settings.seed, 0x5EE9])
    weights = rng.poisson(1.0, size=(settings.bootstrap, NOTE_BUCKETS)).astype(np.float64)
    w_benign, w_harmful = weights @ benign_logged, weights @ harmful_logged
    w_benign_removed, w_harmful_removed = weights @ benign_removed, weights @ harmful_removed
    kept = (w_benign + w_harmful)[:, None] - w_benign_removed - w_harmful_removed
    c_harmful_removed = weights @ sums.control_harmful_removed
    c_kept = w_benign + w_harmful - weights @ sums.control_benign_removed - c_harmful_removed
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(kept > 0, (w_harmful[:, None] - w_harmful_removed) / kept, np.nan)
        share = np.where(w_benign[:, None] > 0, w_benign_removed / w_benign[:, None], np.nan)
        c_rate = np.where(c_kept > 0, (w_harmful - c_harmful_removed) / c_kept, np.nan)
        change = np.where(c_rate[:, None] > 0, rate / c_rate[:, None] - 1.0, np.nan)
    rate_lo, rate_hi = _percentiles(rate, settings.confidence)
    share_lo, share_hi = _percentiles(share, settings.confidence)

    def value(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    def se(j: int) -> float | None:
        finite = change[np.isfinite(change[:, j]), j]
        return float(finite.std(ddof=1)) if len(finite) >= 2 else None

    return [
        p.model_copy(
            update={
                "harmful_exposure_rate_lo": value(rate_lo[j]),
                "harmful_exposure_rate_hi": value(rate_hi[j]),
                "benign_removed_share_lo": value(share_lo[j]),
                "benign_removed_share_hi": value(share_hi[j]),
                "change_vs_control_se": se(j),
                "p_value": t_p_value(p.change_vs_control, se(j), None),
            }
        )
        for j, p in enumerate(points)
    ]


def _sweep(state: ExposureState, source: str, scored: ScoredSource) -> Sweep:
    settings, removal, after_counts = state.settings, state.removal, state.cells.after_counts
    members = [a for a in state.arms if state.decided.source_of.get(a.name) == source]
    base = members[0].policy
    default_after = after_counts.get(int(settings.review_delay.total_seconds()))
    after = default_after if default_after is not None else after_counts[removal.delays[members[0].name]]
    categories, matrix = scored.categories, scored.matrix
    seen = state.logged.seen
    top = matrix.max(axis=1) if matrix.size else np.zeros(len(seen))
    grid = threshold_grid(top, state.logged.exposures[seen], state.truth[seen], settings.sweep_points)
    control_actions = state.decided.actions.get(state.control)  # None: the control actions nothing
    if control_actions is None:
        control_actions = np.full(len(state.truth), ALLOW, dtype=np.int8)
    control_after = after_counts[removal.delays[state.control]]
    control = _point(None, control_actions, state, control_after)
    points, actions_at = [], _SweepActions(base, categories, matrix)
    sums = _BucketSums(state, _removed(control_actions, state, control_after))
    for t in grid.tolist():
        full = np.zeros(len(state.truth), dtype=np.int8)
        full[seen] = actions_at(t)
        points.append(_point(t, full, state, after))
        sums.add(_removed(full, state, after))
    off = np.full(len(state.truth), ALLOW, dtype=np.int8)
    points.append(_point(None, off, state, after))
    sums.add(_removed(off, state, after))
    arm_points = {
        a.name: _point(None, state.decided.actions[a.name], state, after_counts[removal.delays[a.name]])
        for a in members
    }
    return Sweep(
        source=scored.label,
        rule=SWEEP_RULE,
        points=_with_intervals(points, sums, state, control),
        arm_points=arm_points,
    )


def _corrected(sweeps: list[Sweep], state: ExposureState) -> list[Sweep]:
    """The points' p-values corrected as one family across every sweep; significant: corrected p < 1 − confidence."""
    raw = [p.p_value for sweep in sweeps for p in sweep.points]
    adjusted = iter(adjust(raw, state.settings.correction))
    level = 1.0 - state.settings.confidence
    out = []
    for sweep in sweeps:
        points = []
        for p in sweep.points:
            q = next(adjusted)
            points.append(p.model_copy(update={"p_adjusted": q, "significant": q is not None and q < level}))
        out.append(sweep.model_copy(update={"points": points}))
    return out


def threshold_sweeps(state: ExposureState) -> list[Sweep]:
    """One sweep per score source, with the arms that use it marked on the curve; every point tested against
    the control arm."""
    return _corrected([_sweep(state, source, scored) for source, scored in state.decided.sources.items()], state)
