"""`NoteQueryMatcher`: grade how relevant a note is to a search query, and rank notes for a query."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.errors import BundleFormatError, InvalidInputError
from redone_sdk.inference.backend import BackendName
from redone_sdk.inference.engine import InferenceOptions, TaskEngine, open_backend
from redone_sdk.moderator import resolve_bundle
from redone_sdk.schemas import MatchResult, ModelInfo, NoteLike, coerce_note

__all__ = ["NoteQueryMatcher"]

MAX_QUERY_CHARS = 1_000


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInputError(f"a query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("a query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInputError(f"a query has at most {MAX_QUERY_CHARS} characters, got {len(query)}")
    return query


class NoteQueryMatcher:
    """Scores (query, note) pairs with a bundle's matching task; build it with `NoteQueryMatcher.load`.

    `score` is the expected relevance: the grade probabilities times each grade's value in the manifest
    (SNS-Bench grades -1, 0, 1, 2, 3 map to 0, 0.25, 0.5, 0.75, 1 in the default bundle).
    """

    def __init__(self, bundle: Bundle, *, options: InferenceOptions | None = None) -> None:
        found = bundle.manifest.task_of_kind("matching")
        if found is None:
            raise BundleFormatError(f"bundle {bundle.name} has no matching task")
        name, task = found
        options = options or InferenceOptions()
        self._bundle = bundle
        self._engine = TaskEngine(bundle, name, open_backend(bundle, options), options.batch_size)
        self._grades = [label.name for label in task.labels]
        self._values = np.array([label.value for label in task.labels], dtype=np.float64)
        self._model = ModelInfo(name=bundle.name, version=bundle.version)

    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path | None = None,
        *,
        backend: BackendName = "auto",
        precision: Literal["fp32", "int8"] | None = None,
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool | None = None,
        providers: Sequence[str] | None = None,
        torch_dtype: Literal["float32", "bfloat16"] = "float32",
        template: Bundle | str | Path | None = None,
        workers: int | None = None,
    ) -> NoteQueryMatcher:
        """Load a bundle (`None`: the shipped one) or a plain checkpoint directory with `template`'s tasks."""
        options = InferenceOptions(
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            allow_spinning=allow_spinning,
            providers=tuple(providers) if providers else None,
            torch_dtype=torch_dtype,
            workers=workers,
        )
        return cls(resolve_bundle(bundle, template), options=options)

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def score(self, query: str, note: NoteLike) -> MatchResult:
        return self.score_pairs([(query, note)])[0]

    def score_pairs(self, pairs: Iterable[tuple[str, NoteLike]]) -> list[MatchResult]:
        """Score many (query, note) pairs in one batched pass; results in input order."""
        checked = [(_check_query(q), coerce_note(n, index=i)) for i, (q, n) in enumerate(pairs)]
        probs, truncated = self._engine.score([{"query": q, "note": n.text} for q, n in checked])
        expected = probs.astype(np.float64) @ self._values
        results = []
        for (query, note), row, value, cut in zip(checked, probs, expected, truncated, strict=True):
            results.append(
                MatchResult(
                    note_id=note.note_id,
                    query=query,
                    grade=int(self._grades[int(row.argmax())]),
                    score=float(min(max(value, 0.0), 1.0)),
                    grade_probabilities={g: float(p) for g, p in zip(self._grades, row, strict=True)},
                    model=self._model,
                    truncated=cut,
                )
            )
        return results

    def rank(self, query: str, notes: Iterable[NoteLike], top_k: int | None = None) -> list[MatchResult]:
        """Notes sorted by expected relevance to `query`, best first (ties keep input order)."""
        if top_k is not None and top_k < 1:
            raise InvalidInputError("top_k must be at least 1")
        results = self.score_pairs([(query, n) for n in notes])
        ranked = sorted(results, key=lambda r: -r.score)
        return ranked[:top_k] if top_k is not None else ranked
