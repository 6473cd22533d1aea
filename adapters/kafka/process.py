"""From a batch of input messages to the messages to produce: decode, classify in one call, route.

Every input message yields either a verdict (plus a review copy when its action is `review` or `block`) or
a dead letter; nothing is dropped. Outputs keep the input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redone_sdk.errors import ModelOutputError
from redone_sdk.schemas import ModerationResult, Note

from .clients import output_message_limit
from .codec import DeadLetterReason, Rejection, decode_note
from .errors import ClassificationError, ErrorCallback, ErrorContext
from .logs import log_event
from .metrics import StreamMetrics
from .records import (
    OutRecord,
    SourceRecord,
    dead_letter_record,
    record_size,
    review_record,
    too_large_record,
    verdict_record,
)
from .settings import StreamSettings

__all__ = ["BatchClassifier", "BatchProcessor", "ProcessedBatch"]

_log = logging.getLogger("redone_sdk.adapters.kafka.process")
_HEADROOM = 16_384  # more than an output's headers and record overhead take


class BatchClassifier(Protocol):
    """What the stream needs from a model: `redone_sdk.Moderator` is one."""

    def classify_batch(self, notes: list[Note]) -> Sequence[ModerationResult]: ...


@dataclass
class ProcessedBatch:
    """The outputs of one batch, and what they hold."""

    records: list[OutRecord] = field(default_factory=list)
    verdicts: list[ModerationResult] = field(default_factory=list)
    review: int = 0
    rejections: list[Rejection] = field(default_factory=list)


class BatchProcessor:
    """Turns input messages into output records with one `classify_batch` call per batch."""

    def __init__(
        self,
        classifier: BatchClassifier,
        settings: StreamSettings,
        *,
        on_error: ErrorCallback,
        metrics: StreamMetrics,
        topic_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._classifier = classifier
        self._settings = settings
        self._on_error = on_error
        self._metrics = metrics
        # Largest record each output topic takes (`admin.topic_limits`); by default the producer's limit.
        self._limits = dict(topic_limits or {})
        self._default_limit = output_message_limit(settings)

    def process(self, records: Sequence[SourceRecord]) -> ProcessedBatch:
        max_bytes = self._settings.max_message_bytes
        decoded = [decode_note(r.value, key=r.key, max_bytes=max_bytes) for r in records]
        valid = [(i, d) for i, d in enumerate(decoded) if isinstance(d, Note)]
        outcomes: list[Note | Rejection | ModerationResult] = list(decoded)
        if valid:
            started = time.perf_counter()
            results = self._classify([records[i] for i, _ in valid], [note for _, note in valid])
            self._metrics.classify_seconds.observe(time.perf_counter() - started)
            for (i, _), outcome in zip(valid, results, strict=True):
                outcomes[i] = outcome
        return self._route(records, decoded, outcomes)

    def _classify(self, records: list[SourceRecord], notes: list[Note]) -> list[ModerationResult | Rejection]:
        """Classify all notes at once; if that fails, one by one, so a single bad note cannot sink its batch."""
        try:
            return list(self._checked(notes))
        except Exception as batch_error:  # the classifier is user code: any error is possible
            log_event(
                _log,
                logging.WARNING,
                "classify_batch failed; classifying the batch's notes one by one",
                error=repr(batch_error),
                notes=len(notes),
            )
        outcomes: list[ModerationResult | Rejection] = []
        for record, note in zip(records, notes, strict=True):
            try:
                outcomes.extend(self._checked([note]))
            except Exception as error:
                if not self._on_error(error, ErrorContext(stage="classify", record=record)):
                    raise ClassificationError(
                        f"classifying note {note.note_id!r} ({record.topic}[{record.partition}]@{record.offset}) "
                        f"failed: {error!r}"
                    ) from error
                reason: DeadLetterReason = "model_output" if isinstance(error, ModelOutputError) else "classify_error"
                outcomes.append(Rejection(reason, f"{type(error).__name__}: {error}"))
        return outcomes

    def _checked(self, notes: list[Note]) -> Sequence[ModerationResult]:
        results = self._classifier.classify_batch(notes)
        if len(results) != len(notes) or any(r.note_id != n.note_id for r, n in zip(results, notes, strict=True)):
            raise ClassificationError(
                f"the classifier returned {len(results)} results for {len(notes)} notes, or in another order"
            )
        return results

    def _route(
        self,
        records: Sequence[SourceRecord],
        decoded: Sequence[Note | Rejection],
        outcomes: Sequence[Note | Rejection | ModerationResult],
    ) -> ProcessedBatch:
        s = self._settings
        out = ProcessedBatch()
        for record, note, outcome in zip(records, decoded, outcomes, strict=True):
            if isinstance(outcome, ModerationResult) and isinstance(note, Note):
                outputs = [verdict_record(s.output_topic, record, outcome)]
                if outcome.action != "allow" and s.review_topic:
                    outputs.append(review_record(s.review_topic, record, note, outcome))
                oversized = self._oversized(outputs)
                if oversized is None:
                    out.records.extend(outputs)
                    out.verdicts.append(outcome)
                    out.review += len(outputs) - 1
                    continue
                outcome = Rejection("too_large", oversized)
            if isinstance(outcome, Rejection):
                out.records.append(self._fitted(dead_letter_record(s.dlq_topic, record, outcome), record))
                out.rejections.append(outcome)
            else:  # a Note left unclassified cannot happen: _classify returns one outcome per note
                raise ClassificationError(f"no outcome for {record.topic}[{record.partition}]@{record.offset}")
        return out

    def _limit(self, topic: str) -> int:
        return self._limits.get(topic, self._default_limit)

    def _oversized(self, outputs: Sequence[OutRecord]) -> str | None:
        """Why one of a note's outputs cannot be produced (over its topic's limit), or None when all fit.
        Checked before anything is sent: a record over the limit would fail its whole batch, every time."""
        for output in outputs:
            limit = self._limit(output.topic)
            if len(output.key or b"") + len(output.value or b"") + _HEADROOM < limit:
                continue  # far below the limit: skip the exact count
            size = record_size(output)
            if size > limit:
                return f"its output to {output.topic} would take {size} bytes; that topic accepts {limit}"
        return None

    def _fitted(self, dead_letter: OutRecord, source: SourceRecord) -> OutRecord:
        """The dead letter, or a `too_large` envelope when the copy does not fit the dead-letter topic."""
        detail = self._oversized([dead_letter])
        return dead_letter if detail is None else too_large_record(dead_letter.topic, source, detail)
