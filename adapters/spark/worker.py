"""The executor side of Spark scoring: one verified `Moderator` per Python worker, scoring Arrow batches.

Everything here runs in Spark's Python workers: the `ScoringSpec` travels with the task closure (plain data,
no model), the bundle folder travels with `SparkContext.addFile`, and each worker loads it once (cached by
path and digest), refusing it unless its digest is the one the driver pinned. Before scoring, `check_batches`
validates each note as the local engine does (`Note`): an invalid note is set aside with its reason, not scored
and not allowed to stop the job.
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
    "ERROR_COLUMN",
    "ERROR_MARK",
    "check_batches",
    "ScoringSpec",
    "load_model",
    "load_moderator",
    "score_batches",
    "score_pair_batches",
    "spec_for",
]

ERROR_COLUMN = "error"  # why a note was set aside (null: valid); the bad-rows table's reason column
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


def _note_error(note: dict[str, Any]) -> str | None:
    """Why `Note` refuses this (note_id, title, content) row, in one line; None when it is a valid note."""
    from pydantic import ValidationError

    from redone_sdk.schemas import Note

    try:
        Note.model_validate({k: v for k, v in note.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'note'}: {first['msg']}"
    return None


def check_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`mapInArrow`'s function: each (note_id, title, content, ...) batch comes back with an `error` column, the
    reason `Note` refuses the row (null: a valid note), so invalid notes are skipped and reported, not scored."""
    import pyarrow as pa

    for batch in batches:
        columns = batch.to_pydict()
        ids = columns[NOTE_ID]
        rows = [{name: columns[name][i] for name in columns} for i in range(len(ids))]
        errors = [_note_error({k: r.get(k) for k in (NOTE_ID, "title", "content")}) for r in rows]
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(errors, pa.string())], names=[*batch.schema.names, ERROR_COLUMN]
        )


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
