"""The project's own char 1–3-gram TF-IDF + logistic-regression baseline (`redone_sdk.training.baselines`), trained
here on the bundle's moderation training data: the train parts of COLD, SWSR and Davidson, same taxonomy."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redone_sdk.training.baselines import TfidfLogReg
from redone_sdk.training.datasets import harm_examples

__all__ = ["TfidfLogRegPeer", "HARM_SOURCES"]

HARM_SOURCES = ("cold", "swsr", "davidson")


class TfidfLogRegPeer:
    """`TfidfLogReg`: TfidfVectorizer(char, 1–3, min_df=2, sublinear tf) + LogisticRegression(C=1), four classes.
    Library defaults, nothing tuned on any dev part."""

    name = "tfidf-logreg"
    languages: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self._model = TfidfLogReg()
        self.training: dict[str, Any] = {}

    def fit_on_bundle_data(self, data_dir: Path, *, max_examples: int = 0, seed: int = 13) -> TfidfLogRegPeer:
        """Train on what the pipeline's moderation task trains on (`harm_examples(..., "train")` per source)."""
        examples = [e for source in HARM_SOURCES for e in harm_examples(data_dir, source, "train")]
        if max_examples and len(examples) > max_examples:
            examples = random.Random(seed).sample(examples, max_examples)
        started = time.perf_counter()
        self._model.fit([e.record["text"] for e in examples], [e.label for e in examples])
        self.training = {
            "implementation": "redone_sdk.training.baselines.TfidfLogReg",
            "examples": len(examples),
            "features": len(getattr(self._model, "_pipeline", [{}])[0].vocabulary_),
            "seconds": round(time.perf_counter() - started, 1),
            "data": "train parts of " + ", ".join(HARM_SOURCES) + " (redone_sdk.training.datasets.harm_examples)",
        }
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return self._model.predict(texts)
