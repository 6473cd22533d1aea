"""What a user tries first for query–note relevance: TF-IDF cosine or BM25, cut into the five SNS-Bench grades.

Both score a (query, note) pair with one number; `GradeCuts` turns it into a grade -1 … 3 with four ordered
thresholds fitted on the *train* part of QueryCorr: start at the score quantiles that reproduce the train
grade shares, then coordinate ascent — each threshold in turn moves to the train-score quantile (2.5 % steps,
kept between its neighbours) that maximizes train macro-F1 — three sweeps. The dev part is never looked at.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.training.datasets import querycorr_examples
from redone_sdk.training.grade_cuts import CUTS_RULE, GRADES, GradeCuts

__all__ = ["GRADES", "CUTS_RULE", "GradeCuts", "TfidfCosinePeer", "Bm25Peer"]


_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _RelevancePeer:
    name = "relevance"
    method = ""

    def __init__(self) -> None:
        self.cuts = GradeCuts()
        self.training: dict[str, Any] = {}

    def _fit_scorer(self, pairs: Sequence[tuple[str, str]]) -> None:
        raise NotImplementedError

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        raise NotImplementedError

    def fit_on_querycorr(self, data_dir: Path) -> _RelevancePeer:
        examples = querycorr_examples(data_dir, "train")
        pairs = [(e.record["query"], e.record["note"]) for e in examples]
        self._fit_scorer(pairs)
        train_f1 = self.cuts.fit(self.score(pairs), [e.label for e in examples])
        self.training = {
            "examples": len(pairs),
            "method": self.method,
            "grade_cuts": [round(float(c), 4) for c in self.cuts.cuts],
            "train_macro_f1": round(train_f1, 4),
            "cuts_rule": CUTS_RULE,
        }
        return self

    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        return self.cuts.grades(self.score(pairs))


class TfidfCosinePeer(_RelevancePeer):
    """Word TF-IDF (sklearn defaults + sublinear tf) fitted on train queries and notes; cosine(query, note)."""

    name = "tfidf-cosine"
    method = "cosine of word TF-IDF vectors (fitted on QueryCorr train queries + notes), cut into grades on train"

    def _fit_scorer(self, pairs: Sequence[tuple[str, str]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(sublinear_tf=True).fit([t for pair in pairs for t in pair])

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        queries = self._vectorizer.transform([q for q, _ in pairs])
        notes = self._vectorizer.transform([n for _, n in pairs])
        return np.asarray(queries.multiply(notes).sum(axis=1)).ravel()  # rows are L2-normalized


class Bm25Peer(_RelevancePeer):
    """Okapi BM25 (k1 = 1.5, b = 0.75) of the note for the query; IDF and mean length from the train notes."""

    name = "bm25"
    method = "Okapi BM25 (k1=1.5, b=0.75, IDF from QueryCorr train notes) of note for query, cut into grades on train"
    k1, b = 1.5, 0.75

    def _fit_scorer(self, pairs: Sequence[tuple[str, str]]) -> None:
        notes = {n for _, n in pairs}
        frequency: Counter[str] = Counter()
        lengths = []
        for note in notes:
            words = _words(note)
            lengths.append(len(words))
            frequency.update(set(words))
        total = len(notes)
        self._idf = {w: math.log(1 + (total - df + 0.5) / (df + 0.5)) for w, df in frequency.items()}
        self._default_idf = math.log(1 + (total + 0.5) / 0.5)
        self._mean_length = float(np.mean(lengths)) if lengths else 1.0

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        out = np.zeros(len(pairs))
        for i, (query, note) in enumerate(pairs):
            words = _words(note)
            tf = Counter(words)
            norm = self.k1 * (1 - self.b + self.b * len(words) / self._mean_length)
            out[i] = sum(
                self._idf.get(w, self._default_idf) * tf[w] * (self.k1 + 1) / (tf[w] + norm)
                for w in set(_words(query))
                if w in tf
            )
        return out
