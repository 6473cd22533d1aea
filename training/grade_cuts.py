"""Four ordered thresholds that cut a relevance score into the five SNS-Bench grades, fitted for macro-F1.

Used by the relevance peers (`benchmarks/peers/relevance.py`) and by a bundle's lexical fusion
(`training/lexical_fusion.py`), so both are graded by the same rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from redone_sdk.labeled_data import QUERYCORR_GRADES as GRADES
from redone_sdk.training.evaluate import classification_metrics

__all__ = ["GRADES", "CUTS_RULE", "GradeCuts"]

CUTS_RULE = (
    "4 ordered thresholds fitted on QueryCorr train only: start at the score quantiles matching the train grade "
    "shares, then 3 sweeps of coordinate ascent over train-score quantiles (2.5 % steps) maximizing train macro-F1"
)


class GradeCuts:
    """Four ordered thresholds on a relevance score -> grade."""

    def __init__(self) -> None:
        self.cuts = np.zeros(len(GRADES) - 1)

    def grades(self, scores: np.ndarray) -> list[str]:
        return [GRADES[i] for i in np.searchsorted(self.cuts, scores, side="right")]

    def _f1(self, scores: np.ndarray, gold: Sequence[str]) -> float:
        return classification_metrics(gold, self.grades(scores), GRADES)["macro_f1"]

    def fit(self, scores: np.ndarray, gold: Sequence[str], sweeps: int = 3) -> float:
        counts = Counter(gold)
        shares = np.cumsum([counts[g] for g in GRADES])[:-1] / len(gold)
        self.cuts = np.quantile(scores, shares)
        candidates = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, 41)))
        best = self._f1(scores, gold)
        for _ in range(sweeps):
            for k in range(len(self.cuts)):
                low = self.cuts[k - 1] if k else -np.inf
                high = self.cuts[k + 1] if k + 1 < len(self.cuts) else np.inf
                for value in candidates[(candidates >= low) & (candidates <= high)]:
                    trial = self.cuts.copy()
                    trial[k] = value
                    old, self.cuts = self.cuts, trial
                    f1 = self._f1(scores, gold)
                    if f1 > best:
                        best = f1
                    else:
                        self.cuts = old
        return best
