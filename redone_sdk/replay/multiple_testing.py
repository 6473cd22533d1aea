"""p-values of the replay's comparisons and their correction for multiplicity (statsmodels' multipletests):
Holm (family-wise error) by default, Benjamini–Hochberg (false discovery rate) on request."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["t_p_value", "adjust"]

_METHODS = {"holm": "holm", "bh": "fdr_bh"}


def t_p_value(value: float | None, se: float | None, df: float | None) -> float | None:
    """Two-sided p-value of 'no change' for an estimate with standard error se (t with df; None or inf df: normal)."""
    from scipy.stats import t

    if value is None or se is None or not math.isfinite(value) or not math.isfinite(se) or se <= 0:
        return None
    dof = df if df is not None and math.isfinite(df) else 1e9
    return float(2.0 * t.sf(abs(value) / se, max(dof, 1.0)))


def adjust(p_values: Sequence[float | None], method: str) -> list[float | None]:
    """Corrected p-values (None stays None, and is not counted as a test)."""
    from statsmodels.stats.multitest import multipletests

    if method not in _METHODS:
        raise ValueError(f"correction must be one of {sorted(_METHODS)}, got {method!r}")
    index = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not index:
        return out
    raw = np.array([p_values[i] for i in index], dtype=np.float64)
    _, corrected, _, _ = multipletests(raw, method=_METHODS[method])
    for i, p in zip(index, corrected, strict=True):
        out[i] = float(p)
    return out
