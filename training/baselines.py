"""Baselines a user would try first, trained on the same data as the model, for honest comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TfidfLogReg"]


class TfidfLogReg:
    """Char 1–3-gram TF-IDF + logistic regression over the harm taxonomy (sklearn defaults, sublinear tf)."""

    name = "tfidf-logreg"

    def __init__(self) -> None:
        self._pipeline: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfLogReg:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self._pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
            LogisticRegression(C=1.0, max_iter=1000),
        )
        self._pipeline.fit(list(texts), list(labels))
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._pipeline is None:
            raise RuntimeError("fit the baseline first")
        return [str(label) for label in self._pipeline.predict(list(texts))]
