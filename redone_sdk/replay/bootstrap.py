"""Cluster bootstraps: Poisson weights per cluster, one-way (users or notes) or two-way (user × note), and
the intervals read from the replicates.

Each replicate gives every cluster an independent Poisson(1) weight (the Poisson bootstrap: a streaming-friendly
stand-in for resampling clusters with replacement). The two-way bootstrap weights the cell (user bucket u, note
bucket v) by the product W_u · V_v (Owen & Eckles 2012), so a statistic's spread includes the draw of the notes as
well as that of the users. Statistics are ratios of weighted sums, so a replicate is a matrix product of the
weights with per-cell sums, and the sums stay mergeable.

Intervals are Student-t intervals around the estimate with the bootstrap standard error and a Satterthwaite
degrees-of-freedom estimate from the clusters' influence values (few effective notes — a heavy-tailed
popularity — give few degrees of freedom and a wider interval); the percentile interval is kept as an option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "Estimate",
    "BootstrapUnit",
    "BOOTSTRAP_UNITS",
    "IntervalMethod",
    "poisson_weights",
    "ClusterWeights",
    "cluster_weights",
    "weighted_sums",
    "influence_sides",
    "combined_df",
    "percentile_interval",
    "t_interval",
    "estimate",
    "ratio",
]

BootstrapUnit = Literal["two-way", "users", "notes"]
BOOTSTRAP_UNITS: tuple[str, ...] = ("two-way", "users", "notes")
IntervalMethod = Literal["t", "percentile"]


class Estimate(BaseModel):
    """A point estimate and its bootstrap interval (`None` where undefined, e.g. a rate over zero exposures);
    `se`: the bootstrap standard error, `df`: the interval's degrees of freedom, `p_value`: two-sided, against
    no change (set on comparisons only), `p_adjusted`: after the multiple-testing correction."""

    model_config = ConfigDict(frozen=True)

    value: float | None
    lo: float | None = None
    hi: float | None = None
    se: float | None = None
    df: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None

    def contains(self, x: float) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= x <= self.hi

    def fmt(self, *, percent: bool = False, digits: int = 2, signed: bool = False) -> str:
        """`-11.23 % [-13.10, -9.40]` or `0.0412 [0.0398, 0.0431]`."""
        if self.value is None:
            return "n/a"
        scale, unit = (100.0, " %") if percent else (1.0, "")
        sign = "+" if signed else ""
        main = f"{self.value * scale:{sign}.{digits}f}{unit}"
        if self.lo is None or self.hi is None:
            return main
        return f"{main} [{self.lo * scale:{sign}.{digits}f}, {self.hi * scale:{sign}.{digits}f}]"


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def poisson_weights(clusters: int, reps: int, seed: int) -> np.ndarray:
    """[reps, clusters] Poisson(1) weights, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    return rng.poisson(1.0, size=(reps, clusters)).astype(np.float64)


@dataclass(frozen=True)
class ClusterWeights:
    """Per replicate, a weight per user bucket [reps, U] and per note bucket [reps, V]; a side that is not
    resampled is None (weight 1)."""

    users: np.ndarray | None
    notes: np.ndarray | None
    reps: int


def cluster_weights(unit: BootstrapUnit, user_buckets: int, note_buckets: int, reps: int, seed: int) -> ClusterWeights:
    """Poisson(1) weights of the resampled side(s), reproducible for a seed (users and notes draw from
    independent streams of it)."""
    if unit not in BOOTSTRAP_UNITS:
        raise ValueError(f"bootstrap unit must be one of {BOOTSTRAP_UNITS}, got {unit!r}")
    user_rng, note_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    users = user_rng.poisson(1.0, (reps, user_buckets)).astype(np.float64) if unit != "notes" else None
    notes = note_rng.poisson(1.0, (reps, note_buckets)).astype(np.float64) if unit != "users" else None
    return ClusterWeights(users, notes, reps)


def weighted_sums(cells: np.ndarray, weights: ClusterWeights, chunk: int = 64) -> np.ndarray:
    """[reps, ...] sums of `cells` [U, V, ...] with cell (u, v) weighted by users[r, u] · notes[r, v]; replicates
    go `chunk` at a time so the temporary array stays [chunk, V, ...]. The two-way product runs in float32
    (counts per cell are exact; the replicate sums carry ~1e-7 relative rounding, far below their spread)."""
    n_u, n_v = cells.shape[:2]
    rest = cells.shape[2:]
    if weights.notes is None:
        return (weights.users @ cells.sum(axis=1).reshape(n_u, -1)).reshape(weights.reps, *rest)
    if weights.users is None:
        return (weights.notes @ cells.sum(axis=0).reshape(n_v, -1)).reshape(weights.reps, *rest)
    flat = cells.reshape(n_u, n_v * int(np.prod(rest, dtype=np.int64))).astype(np.float32)
    out = np.empty((weights.reps, int(np.prod(rest, dtype=np.int64))))
    for start in range(0, weights.reps, chunk):
        stop = min(start + chunk, weights.reps)
        by_note = (weights.users[start:stop].astype(np.float32) @ flat).reshape(stop - start, n_v, -1)
        out[start:stop] = np.einsum("rvk,rv->rk", by_note, weights.notes[start:stop].astype(np.float32))
    return out.reshape(weights.reps, *rest)


def _satterthwaite(influence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance Σ z² per statistic and its Satterthwaite degrees of freedom (Σ σ²)² / Σ σ⁴, from [clusters,
    stats] influence values: σ⁴ of a cluster is estimated by z⁴ / 3 (its expectation for a normal z), and the df
    is capped at the number of clusters. Equal clusters give about their number; one dominant cluster gives
    few."""
    z2 = influence**2
    var = z2.sum(axis=0)
    fourth = (z2**2).sum(axis=0) / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(fourth > 0, var**2 / np.where(fourth > 0, fourth, 1.0), np.inf)
    return var, np.minimum(df, float(len(influence)))


def influence_sides(cells: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray]) -> dict[str, tuple]:
    """Per side ("users", "notes"): the statistics' linearized variance Σ z² and its Satterthwaite degrees of
    freedom (Σ z²)² / Σ z⁴, from the influence value z of every bucket (the statistic's change when the bucket's
    sums are added, per unit). `cells` [U, V, K]; `statistic` maps [n, K] sums to [n, S]."""
    total = np.asarray(cells, dtype=np.float64).sum(axis=(0, 1))
    base = statistic(total[None])[0]
    scale = 1e-6
    out = {}
    for name, axis in (("users", 1), ("notes", 0)):
        parts = np.asarray(cells.sum(axis=axis), dtype=np.float64)
        parts = parts[parts.any(axis=1)]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (statistic(total[None] + scale * parts) - base) / scale
        out[name] = _satterthwaite(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0))
    return out


def combined_df(sides: dict[str, tuple], unit: BootstrapUnit) -> np.ndarray:
    """Degrees of freedom of the interval: Satterthwaite over the sides the unit resamples, less one (the
    cluster sums are centred), floored at 1."""
    used = [sides[s] for s in (("users", "notes") if unit == "two-way" else (unit,))]
    var = sum(v for v, _ in used)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = sum(np.where(v > 0, v**2 / d, 0.0) for v, d in used)
        df = np.where(denom > 0, var**2 / np.where(denom > 0, denom, 1.0), np.inf)
    return np.maximum(df - 1.0, 1.0)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite replicates (None when fewer than 10 are finite)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 10:
        return None, None
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def t_interval(value: float, se: float, df: float, confidence: float) -> tuple[float | None, float | None]:
    """value ± t(df) · se, df floored at 1 (df = inf: the normal interval)."""
    from scipy.stats import t

    if not (math.isfinite(value) and math.isfinite(se)):
        return None, None
    q = float(t.ppf(0.5 + confidence / 2.0, max(df, 1.0) if math.isfinite(df) else 1e9))
    return value - q * se, value + q * se


def estimate(
    value: float,
    samples: np.ndarray | None,
    confidence: float,
    *,
    df: float | None = None,
    method: IntervalMethod = "percentile",
) -> Estimate:
    """The estimate with its interval: percentile of the replicates, or (method "t", needs df) the t interval
    with the replicates' standard deviation as standard error."""
    point = _finite(value)
    if point is None or samples is None:
        return Estimate(value=point)
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if len(finite) < 10:
        return Estimate(value=point)
    se = float(np.std(finite, ddof=1))
    if method == "t" and df is not None:
        lo, hi = t_interval(point, se, df, confidence)
        return Estimate(value=point, lo=lo, hi=hi, se=se, df=float(df) if math.isfinite(df) else None)
    lo, hi = percentile_interval(samples, confidence)
    return Estimate(value=point, lo=lo, hi=hi, se=se)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator, NaN where the denominator is 0."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out
