"""Cluster bootstrap: Poisson weights per cluster (user bucket, query) and percentile intervals.

Each replicate gives every cluster an independent Poisson(1) weight (the Poisson bootstrap: a streaming-
friendly stand-in for resampling clusters with replacement). Statistics are ratios of weighted sums, so a
replicate is one matrix product of the weights with per-cluster sums.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["Estimate", "poisson_weights", "percentile_interval", "estimate"]


class Estimate(BaseModel):
    """A point estimate and its bootstrap interval (`None` where undefined, e.g. a rate over zero exposures)."""

    model_config = ConfigDict(frozen=True)

    value: float | None
    lo: float | None = None
    hi: float | None = None

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


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite replicates (None when fewer than 10 are finite)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 10:
        return None, None
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def estimate(value: float, samples: np.ndarray | None, confidence: float) -> Estimate:
    point = _finite(value)
    if point is None or samples is None:
        return Estimate(value=point)
    lo, hi = percentile_interval(np.asarray(samples, dtype=np.float64), confidence)
    return Estimate(value=point, lo=lo, hi=hi)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator, NaN where the denominator is 0."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out
