"""Calibrated label probabilities (temperature scaling) and a moderation policy set from them on dev.

Temperature scaling (Guo et al., 2017) divides a task's label logits by one scalar T > 0 before the softmax: the
argmax, and so every prediction, is unchanged; only the confidence moves. T is fitted by minimising the dev
negative log-likelihood and shipped in the manifest (`TaskSpec.temperature`), where the SDK's `TaskEngine`
applies it. `policy_from_dev` then sets the per-category review / block thresholds of the bundle's `policy.json`
from the calibrated dev probabilities, so that a threshold means the same thing from one model to the next.

Everything here takes plain arrays, so it is testable without a model. The export stage calls, per task:
`calibrate_task(logits, gold)` on dev → `calibrated_tasks(tasks, {name: T})` into the manifest, and
`policy_from_dev(softmax(logits, T), gold, labels, safe_label)` → the policy and its dev figures (metrics).
Logits: the task's label columns only, [n, labels]; the log of the probabilities an uncalibrated (T = 1)
`TaskEngine` returns works as well (`logits_from_probabilities`: softmax ignores a per-row shift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.inference.engine import label_probabilities
from redone_sdk.policy import CategoryRule, Policy

__all__ = [
    "TEMPERATURE_BOUNDS",
    "Calibration",
    "calibrate_task",
    "calibrated_tasks",
    "expected_calibration_error",
    "fit_temperature",
    "logits_from_probabilities",
    "policy_from_dev",
    "softmax",
]

TEMPERATURE_BOUNDS = (0.05, 20.0)


def _checked(logits: np.ndarray, gold: np.ndarray, what: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(gold)
    if values.ndim != 2 or values.shape[1] < 2 or values.shape[0] == 0:
        raise ValueError(f"{what} must be [n > 0, labels >= 2], got shape {values.shape}")
    if labels.shape != (values.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"gold must hold one integer label index per row of {what}, got {labels.shape} {labels.dtype}")
    if labels.min() < 0 or labels.max() >= values.shape[1]:
        raise ValueError(f"gold label indices must lie in [0, {values.shape[1]})")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite")
    return values, labels.astype(np.int64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis of [n, labels], in float64: the SDK's own
    `label_probabilities`, so dev figures are computed as the SDK will score."""
    values = np.asarray(logits, dtype=np.float64)
    return label_probabilities(values, np.arange(values.shape[1]), temperature)


def logits_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Logits (up to a per-row constant, which softmax ignores) from probabilities such as `TaskEngine.score`
    returns at temperature 1; probabilities that underflowed to 0 become log(1e-45) ≈ -103."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-45, None))


def _nll(logits: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    top = scaled.max(axis=1)
    lse = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    return float(np.mean(lse - scaled[np.arange(len(gold)), gold]))


def _golden_section(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-6) -> float:
    """Minimum of a unimodal `f` on [lo, hi] (golden-section search; the fallback when SciPy is missing)."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    best = min((f(lo), lo), (f(hi), hi), (f((a + b) / 2), (a + b) / 2))
    return best[1]


def fit_temperature(logits: np.ndarray, gold: np.ndarray, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T in `bounds` that minimises the mean negative log-likelihood of softmax(logits / T) on
    `gold` (label indices). The NLL is convex in 1/T, so a bounded scalar search on log T finds its minimum:
    SciPy's bounded Brent method when SciPy is installed (it is with scikit-learn, in the `train` extra),
    else a golden-section search."""
    values, labels = _checked(logits, gold)
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")

    def objective(log_t: float) -> float:
        return _nll(values, labels, float(np.exp(log_t)))

    try:
        from scipy.optimize import minimize_scalar
    except ImportError:
        log_t = _golden_section(objective, np.log(lo), np.log(hi))
    else:
        found = minimize_scalar(objective, bounds=(np.log(lo), np.log(hi)), method="bounded", options={"xatol": 1e-6})
        log_t = float(found.x)
    return float(np.clip(np.exp(log_t), lo, hi))


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: the notes split into `bins` equal-width bins (lo, hi] of their highest probability, then
    Σ_bins (share of notes) · |accuracy − mean highest probability| in the bin."""
    values, labels = _checked(probs, gold, "probs")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence = values.max(axis=1)
    correct = (values.argmax(axis=1) == labels).astype(np.float64)
    which = np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # Σ (correct − confidence) per bin
    return float(np.abs(gap).sum() / len(labels))


class Calibration(NamedTuple):
    """What `calibrate_task` found: the temperature and the dev ECE before (T = 1) and after it."""

    temperature: float
    ece_before: float
    ece_after: float

    def metrics(self) -> dict[str, float]:
        """For the manifest's dev metrics."""
        return {"temperature": self.temperature, "ece_before": self.ece_before, "ece_after": self.ece_after}


def calibrate_task(
    logits: np.ndarray, gold: np.ndarray, *, bins: int = 15, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> Calibration:
    """Fit one task's temperature on its dev logits [n, labels] and gold label indices, with the ECE it changes."""
    temperature = fit_temperature(logits, gold, bounds=bounds)
    before = expected_calibration_error(softmax(logits), gold, bins)
    after = expected_calibration_error(softmax(logits, temperature), gold, bins)
    return Calibration(temperature, before, after)


def calibrated_tasks(
    tasks: Mapping[str, TaskSpec],
    temperatures: Mapping[str, float],
    label_offsets: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, TaskSpec]:
    """The manifest's tasks with each fitted temperature (and label offsets, `training/label_offsets.py`) in place
    (tasks named in neither unchanged); a temperature that is not finite and > 0, offsets naming a label the task
    lacks, or either naming no task, is refused."""
    offsets = dict(label_offsets or {})
    unknown = sorted((set(temperatures) | set(offsets)) - set(tasks))
    if unknown:
        raise ValueError(
            f"calibration (temperature, label offsets) for tasks the bundle does not have: {unknown}; "
            f"it has {sorted(tasks)}"
        )
    out = {}
    for name, task in tasks.items():
        update: dict[str, object] = {}
        if name in temperatures:
            update["temperature"] = float(temperatures[name])
        if name in offsets:
            update["label_offsets"] = {label: float(v) for label, v in offsets[name].items()}
        out[name] = TaskSpec.model_validate({**task.model_dump(), **update}) if update else task
    return out


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    count = int(np.floor((hi - lo) / step + 1e-9)) + 1
    return np.round(lo + step * np.arange(max(count, 0)), 6)


def _counts(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, flagged) at each threshold: notes with score ≥ threshold are flagged."""
    flagged = scores[:, None] >= thresholds[None, :]
    return (flagged & positive[:, None]).sum(axis=0), flagged.sum(axis=0)


def policy_from_dev(
    probs: np.ndarray,
    gold: np.ndarray,
    labels: Sequence[str],
    safe_label: str,
    *,
    base: Policy | None = None,
    name: str = "dev-calibrated",
    review_bounds: tuple[float, float] = (0.2, 0.8),
    block_precision: float = 0.9,
    min_support: int = 1,
    min_flagged: int = 5,
    step: float = 0.01,
) -> tuple[Policy, dict[str, float]]:
    """A moderation policy set from calibrated dev probabilities [n, labels] (`labels` order) and gold label
    indices, and the dev figures behind each threshold (flat, for the manifest's metrics).

    Thresholds apply to each category's own probability, the score `Policy.decide` compares with that
    category's rule (not the harmful total), and are judged one category against the rest: a note is a positive
    of category c when its gold label is c, and is flagged at threshold t when p(c) ≥ t. Candidates are the
    multiples of `step` (0.01: thresholds stay readable in policy.json).

    - `review`: the threshold in `review_bounds` (default [0.2, 0.8], so that a category with few dev notes
      cannot get an extreme one) with the highest dev F1; among equal F1s, the middle of the first run of them
      (the margin between the scores on either side). Where no threshold in the bounds gets any F1 (no positive
      scores that high) the category keeps its rule in `base`.
    - `block`: the lowest threshold ≥ review at which at least `min_flagged` dev notes are flagged and the
      precision is ≥ `block_precision` (0.9); None (never block, review only) when no threshold gets there:
      the model is not precise enough on dev to block that category without a person looking.
    - A category with fewer than `min_support` gold dev notes (default: none) keeps its rule in `base` (the
      export's `DEFAULT_POLICY` when None): its own rule there, else `base.default`.

    Figures: `support/<c>` for every category, and for each fitted one `review/<c>`, `review_f1/<c>`,
    `review_precision/<c>`, `review_recall/<c>`, plus `block/<c>`, `block_precision/<c>`, `block_recall/<c>`
    when it blocks; `n` is the number of dev notes.
    """
    values, truth = _checked(probs, gold, "probs")
    names = list(labels)
    if values.shape[1] != len(names):
        raise ValueError(f"probs has {values.shape[1]} columns for {len(names)} labels")
    if safe_label not in names:
        raise ValueError(f"safe_label {safe_label!r} is not one of the labels {names}")
    low, high = review_bounds
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"review_bounds must satisfy 0 <= low <= high <= 1, got {review_bounds}")
    if not 0.0 < block_precision <= 1.0:
        raise ValueError(f"block_precision must lie in (0, 1], got {block_precision}")
    if not 0.0 < step <= 0.5:
        raise ValueError(f"step must lie in (0, 0.5], got {step}")
    if base is None:
        from redone_sdk.training.export import DEFAULT_POLICY

        base = DEFAULT_POLICY
    categories = [label for label in names if label != safe_label]
    figures: dict[str, float] = {"n": float(len(truth))}
    rules: dict[str, CategoryRule] = {c: rule for c, rule in base.rules.items() if c in categories}
    review_grid = _grid(low, high, step)
    for category in categories:
        column = names.index(category)
        scores, positive = values[:, column], truth == column
        support = int(positive.sum())
        figures[f"support/{category}"] = float(support)
        if support < max(min_support, 1):
            continue
        tp, flagged = _counts(scores, positive, review_grid)
        f1 = 2 * tp / (flagged + support)  # 2·tp / (2·tp + fp + fn): flagged = tp + fp, support = tp + fn
        best = int(np.argmax(f1))
        if f1[best] == 0:
            continue
        end = best
        while end + 1 < len(f1) and f1[end + 1] == f1[best]:
            end += 1
        pick = (best + end) // 2
        review = float(review_grid[pick])
        figures[f"review/{category}"] = review
        figures[f"review_f1/{category}"] = float(f1[pick])
        figures[f"review_precision/{category}"] = float(tp[pick] / flagged[pick])
        figures[f"review_recall/{category}"] = float(tp[pick] / support)
        block_grid = _grid(review, 1.0 - step, step)
        tp, flagged = _counts(scores, positive, block_grid)
        precision = np.divide(tp, flagged, out=np.zeros(len(tp)), where=flagged > 0)
        reaching = np.flatnonzero((flagged >= min_flagged) & (precision >= block_precision))
        block = None
        if reaching.size:
            at = int(reaching[0])
            block = float(block_grid[at])
            figures[f"block/{category}"] = block
            figures[f"block_precision/{category}"] = float(precision[at])
            figures[f"block_recall/{category}"] = float(tp[at] / support)
        rules[category] = CategoryRule(review=review, block=block)
    policy = Policy(name=name, rules=rules, default=base.default)
    policy.check_categories(categories)
    return policy, figures
