"""`NoteQueryMatcher`: grade how relevant a note is to a search query, and rank notes for a query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import Unpack

from redone_sdk.bundle import Bundle
from redone_sdk.errors import InvalidInputError, ModelOutputError
from redone_sdk.inference.options import InferenceOptions, InferenceOverrides
from redone_sdk.lexical import fused_relevance
from redone_sdk.schemas import MatchResult, Note, NoteLike, check_utf8, coerce_note
from redone_sdk.task_model import BundleTaskModel, check_many, chunked, resolve_bundle

__all__ = ["NoteQueryMatcher"]

MAX_QUERY_CHARS = 1_000


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInputError(f"a query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("a query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInputError(f"a query has at most {MAX_QUERY_CHARS} characters, got {len(query)}")
    try:
        return check_utf8(query, "the query")
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _check_pairs(pairs: Iterable[tuple[str, NoteLike]]) -> Iterable[tuple[str, NoteLike]]:
    if isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[0], str):  # one (query, note) pair
        raise InvalidInputError("pass a list of (query, note) pairs; for one pair use score")
    return check_many(pairs, "(query, note) pairs", "score")


def _check_pair(pair: object, index: int) -> tuple[str, Note]:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise InvalidInputError(f"pair at index {index}: expected a (query, note) pair, got {type(pair).__name__}")
    query, note = pair
    return _check_query(query), coerce_note(note, index=index)


class NoteQueryMatcher(BundleTaskModel):
    """Scores (query, note) pairs with a bundle's matching task; build it with `NoteQueryMatcher.load`.

    `score` is the expected relevance: the grade probabilities times each grade's value in the manifest
    (SNS-Bench grades -1, 0, 1, 2, 3 map to 0, 0.25, 0.5, 0.75, 1 in the default bundle). When the bundle's task
    has a lexical fusion (the default bundle does), `score` mixes that with the share of the query's terms found
    anywhere in the note (`lexical_coverage`), and `grade` comes from the fusion's cuts on `score`.
    """

    task_kind = "matching"

    def __init__(self, bundle: Bundle, *, options: InferenceOptions | None = None) -> None:
        super().__init__(bundle, options=options)
        self._grades = [label.name for label in self._task.labels]
        self._values = np.array([label.value for label in self._task.labels], dtype=np.float64)

    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path | None = None,
        *,
        options: InferenceOptions | None = None,
        template: Bundle | str | Path | None = None,
        digest: str | None = None,
        public_key: Any = None,
        **overrides: Unpack[InferenceOverrides],
    ) -> NoteQueryMatcher:
        """Load a bundle (`None`: the shipped one) or a plain checkpoint directory with `template`'s tasks;
        options, keywords, `digest` and `public_key` as in `Moderator.load`."""
        options = InferenceOptions.build(options, **overrides)
        return cls(resolve_bundle(bundle, template, digest=digest, public_key=public_key), options=options)

    def score(self, query: str, note: NoteLike) -> MatchResult:
        return self.score_pairs([(query, note)])[0]

    def score_pairs(self, pairs: Iterable[tuple[str, NoteLike]]) -> list[MatchResult]:
        """Score many (query, note) pairs in one batched pass; results in input order. `InvalidInputError` for
        a bad pair (its index), `ModelOutputError` when the model's output for a pair is not finite."""
        return self._score(list(_check_pairs(pairs)))

    def score_iter(self, pairs: Iterable[tuple[str, NoteLike]]) -> Iterator[MatchResult]:
        """`score_pairs` as a stream: reads `pairs` a few forward passes at a time (bounded memory) and yields
        each chunk's results, in input order, as soon as they are scored."""
        return self._stream(_check_pairs(pairs))

    def _stream(self, pairs: Iterable[tuple[str, NoteLike]]) -> Iterator[MatchResult]:
        start = 0
        for chunk in chunked(pairs, self.chunk_size):
            yield from self._score(chunk, start=start)
            start += len(chunk)

    def _score(self, pairs: list[tuple[str, NoteLike]], *, start: int = 0) -> list[MatchResult]:
        checked = [_check_pair(pair, start + i) for i, pair in enumerate(pairs)]
        probs, truncated = self._engine.score([{"query": q, "note": n.text} for q, n in checked])
        expected = probs.astype(np.float64) @ self._values
        fusion = self._task.lexical
        if fusion is not None:  # a non-finite expectation stays non-finite and is refused below
            relevance, grades, coverage = fused_relevance(
                expected, [q for q, _ in checked], [n.text for _, n in checked], fusion
            )
        else:
            relevance, grades, coverage = expected, probs.argmax(axis=1), None
        results = []
        for i, ((query, note), row, value, cut) in enumerate(zip(checked, probs, relevance, truncated, strict=True)):
            if not (np.isfinite(row).all() and np.isfinite(value)):
                raise ModelOutputError(
                    f"the model's output for pair at index {start + i} (note_id {note.note_id!r}) of task "
                    f"{self._task_name!r} is not finite ({dict(zip(self._grades, row.tolist(), strict=True))})",
                    index=start + i,
                    note_id=note.note_id,
                    task=self._task_name,
                )
            results.append(
                MatchResult(
                    note_id=note.note_id,
                    query=query,
                    grade=int(self._grades[int(grades[i])]),
                    score=float(min(max(value, 0.0), 1.0)),
                    lexical_coverage=None if coverage is None else float(coverage[i]),
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
        check_many(notes, one="score")
        results = self.score_pairs([(query, n) for n in notes])
        ranked = sorted(results, key=lambda r: -r.score)
        return ranked[:top_k] if top_k is not None else ranked
