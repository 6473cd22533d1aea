"""The executor side of Spark scoring: one verified `Moderator` per Python worker, scoring Arrow batches.

Everything here runs in Spark's Python workers: the `ScoringSpec` travels with the task closure (plain data,
no model), the bundle folder travels with `SparkContext.addFile`, and each worker loads it once (cached by
path and digest), refusing it unless its digest is the one the driver pinned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redone_sdk.scores_table import BUNDLE_COLUMNS, NOTE_ID, PAIR_SCORE, QUERY, score_column

if TYPE_CHECKING:
    import pyarrow as pa

    from redone_sdk.matcher import NoteQueryMatcher
    from redone_sdk.moderator import Moderator

__all__ = [
    "ERROR_MARK",
    "ScoringSpec",
    "load_model",
    "load_moderator",
    "score_batches",
    "score_pair_batches",
    "spec_for",
]

ERROR_MARK = "redone-spark-error: "  # the driver finds the one-line reason after this mark in a failed job's trace

_MODELS: dict[tuple[str, str, str], Moderator | NoteQueryMatcher] = {}


@dataclass(frozen=True)
class ScoringSpec:
    """What an executor needs to score: where the bundle is, the digest it must have, the policy and how to run.

    `bundle`: the name `SparkContext.addFile` shipped it under (`shipped=True`) or a path every executor sees.
    """

    bundle: str
    shipped: bool
    digest: str
    name: str
    version: str
    categories: tuple[str, ...]
    policy_json: str
    options: dict[str, Any]
    kind: str = "moderation"  # or "matching": (query, note) pairs scored by the bundle's matcher

    def bundle_path(self) -> str:
        if not self.shipped:
            return self.bundle
        from pyspark import SparkFiles

        return SparkFiles.get(self.bundle)


def load_model(spec: ScoringSpec) -> Moderator | NoteQueryMatcher:
    """The worker's moderator (or matcher) for `spec`, loaded and verified once per (path, digest, kind)."""
    path = spec.bundle_path()
    key = (os.path.realpath(path), spec.digest, spec.kind)
    if key not in _MODELS:
        from redone_sdk.errors import RedOneError
        from redone_sdk.inference.options import InferenceOptions
        from redone_sdk.matcher import NoteQueryMatcher
        from redone_sdk.moderator import Moderator
        from redone_sdk.policy import Policy

        options = InferenceOptions(**spec.options)
        try:
            if spec.kind == "matching":
                _MODELS[key] = NoteQueryMatcher.load(path, digest=spec.digest, options=options)
            else:
                policy = Policy.from_json(spec.policy_json)
                _MODELS[key] = Moderator.load(path, digest=spec.digest, policy=policy, options=options)
        except (RedOneError, OSError) as exc:
            raise RuntimeError(f"{ERROR_MARK}on executor {os.uname().nodename}: {exc}") from None
    return _MODELS[key]


def load_moderator(spec: ScoringSpec) -> Moderator:
    """The worker's moderator for a moderation `spec` (see `load_model`)."""
    return load_model(spec)  # type: ignore[return-value]


def _texts(batch: pa.RecordBatch) -> list[dict[str, str]]:
    columns = batch.to_pydict()
    ids = columns[NOTE_ID]
    titles = columns.get("title") or [None] * len(ids)
    contents = columns.get("content") or [None] * len(ids)
    return [{NOTE_ID: i, "title": t or "", "content": c or ""} for i, t, c in zip(ids, titles, contents, strict=True)]


def score_batches(spec: ScoringSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`mapInArrow`'s function: each batch of (note_id, title, content) becomes a batch of the scores table."""
    import pyarrow as pa

    from redone_sdk.errors import RedOneError

    moderator = load_moderator(spec)
    for batch in batches:
        notes = _texts(batch)
        try:
            results = moderator.classify_batch(notes)
        except RedOneError as exc:
            index = getattr(exc, "index", None)
            where = f"note {notes[index][NOTE_ID]!r}: " if isinstance(index, int) and index < len(notes) else ""
            raise RuntimeError(f"{ERROR_MARK}{where}{exc}") from None
        data: dict[str, Any] = {
            NOTE_ID: pa.array([r.note_id for r in results], pa.string()),
            "action": pa.array([r.action for r in results], pa.string()),
            "label": pa.array([r.label for r in results], pa.string()),
        }
        for category in spec.categories:
            data[score_column(category)] = pa.array([r.scores[category] for r in results], pa.float32())
        for column, value in zip(BUNDLE_COLUMNS, (spec.name, spec.version, spec.digest), strict=True):
            data[column] = pa.array([value] * len(results), pa.string())
        yield pa.RecordBatch.from_pydict(data)


def score_pair_batches(spec: ScoringSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`mapInArrow`'s function for pairs: (query, note_id, title, content) batches become pair scores."""
    import pyarrow as pa

    from redone_sdk.errors import RedOneError

    matcher = load_model(spec)
    for batch in batches:
        queries = batch.column(QUERY).to_pylist()
        notes = _texts(batch)
        try:
            results = matcher.score_pairs(list(zip(queries, notes, strict=True)))
        except RedOneError as exc:
            raise RuntimeError(f"{ERROR_MARK}{exc}") from None
        data: dict[str, Any] = {
            QUERY: pa.array(queries, pa.string()),
            NOTE_ID: pa.array([n[NOTE_ID] for n in notes], pa.string()),
            PAIR_SCORE: pa.array([r.score for r in results], pa.float32()),
        }
        for column, value in zip(BUNDLE_COLUMNS, (spec.name, spec.version, spec.digest), strict=True):
            data[column] = pa.array([value] * len(results), pa.string())
        yield pa.RecordBatch.from_pydict(data)


def spec_for(
    model: Moderator | NoteQueryMatcher, bundle: str, *, shipped: bool, options: dict[str, Any]
) -> ScoringSpec:
    """The spec of a moderator or matcher the driver loaded and verified."""
    b = model.bundle
    moderation = hasattr(model, "categories")
    return ScoringSpec(
        bundle=bundle,
        shipped=shipped,
        digest=b.digest,
        name=b.name,
        version=str(b.version),
        categories=tuple(model.categories) if moderation else (),
        policy_json=model.policy.to_json() if moderation else "",
        options=options,
        kind="moderation" if moderation else "matching",
    )
