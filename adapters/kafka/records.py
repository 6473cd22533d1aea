"""What the stream writes: verdicts, review copies and dead letters, each with its headers.

Every output names its source (`source_topic`, `source_partition`, `source_offset` headers), so any verdict
or dead letter can be traced back to the input message, and duplicates can be told apart from re-sends.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel, ConfigDict

from redone_sdk.schemas import ModerationResult, Note

from .codec import Rejection

__all__ = [
    "ENVELOPE_MAX_BYTES",
    "ENVELOPE_PREFIX_BYTES",
    "HEADER_ACTION",
    "HEADER_DETAIL",
    "HEADER_MODEL_NAME",
    "HEADER_MODEL_VERSION",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "OutRecord",
    "ReviewItem",
    "SourceRecord",
    "dead_letter_record",
    "header_map",
    "record_size",
    "review_record",
    "too_large_record",
    "verdict_record",
]

HEADER_MODEL_NAME = "model_name"
HEADER_MODEL_VERSION = "model_version"
HEADER_MODEL_DIGEST = "model_digest"
HEADER_ACTION = "action"
HEADER_SOURCE_TOPIC = "source_topic"
HEADER_SOURCE_PARTITION = "source_partition"
HEADER_SOURCE_OFFSET = "source_offset"
HEADER_REASON = "reason"
HEADER_DETAIL = "detail"

_MAX_DETAIL_BYTES = 2000
_MAX_ENVELOPE_KEY_BYTES = 256  # the envelope's own key: the original key when it is at most this long
ENVELOPE_PREFIX_BYTES = 1024  # of the key and of the value, in a too_large envelope
# Envelope JSON (two base64 prefixes, a 500-char detail, the source: < 4.5 KiB) + headers (< 2.5 KiB) + key.
ENVELOPE_MAX_BYTES = 8192

Headers = tuple[tuple[str, bytes], ...]


class SourceRecord(Protocol):
    """The fields of a consumed Kafka message that the stream reads (kafka-python's `ConsumerRecord` has them)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class OutRecord:
    """A message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


class ReviewItem(BaseModel):
    """The value of a review-topic message: the note itself, for the human reviewer, and its verdict."""

    model_config = ConfigDict(frozen=True)

    note: Note
    result: ModerationResult


def _source_headers(record: SourceRecord) -> Headers:
    return (
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
    )


def _model_headers(result: ModerationResult) -> Headers:
    """Which bundle decided (its digest too, when it was loaded from a manifest: a name and version can be reused
    by a rebuilt bundle, the digest cannot) and what it decided."""
    digest = ((HEADER_MODEL_DIGEST, result.model.digest.encode()),) if result.model.digest else ()
    return (
        (HEADER_MODEL_NAME, result.model.name.encode()),
        (HEADER_MODEL_VERSION, result.model.version.encode()),
        *digest,
        (HEADER_ACTION, result.action.encode()),
    )


def verdict_record(topic: str, source: SourceRecord, result: ModerationResult) -> OutRecord:
    """The verdict on one note: keyed by note_id, the `ModerationResult` as JSON."""
    return OutRecord(
        topic=topic,
        key=result.note_id.encode(),
        value=result.model_dump_json().encode(),
        headers=_model_headers(result) + _source_headers(source),
    )


def review_record(topic: str, source: SourceRecord, note: Note, result: ModerationResult) -> OutRecord:
    """A copy for human review of a note whose action is `review` or `block`: the note and its verdict as JSON."""
    item = ReviewItem(note=note, result=result)
    return OutRecord(
        topic=topic,
        key=result.note_id.encode(),
        value=item.model_dump_json().encode(),
        headers=_model_headers(result) + _source_headers(source),
    )


def dead_letter_record(topic: str, source: SourceRecord, rejection: Rejection) -> OutRecord:
    """The original key and bytes, unchanged, with a `reason` code and a human-readable `detail` header;
    for `too_large`, a bounded envelope instead (`too_large_record`)."""
    if rejection.reason == "too_large":
        return too_large_record(topic, source, rejection.detail)
    detail = rejection.detail.encode()[:_MAX_DETAIL_BYTES]
    return OutRecord(
        topic=topic,
        key=source.key,
        value=source.value,
        headers=((HEADER_REASON, rejection.reason.encode()), (HEADER_DETAIL, detail), *_source_headers(source)),
    )


def too_large_record(topic: str, source: SourceRecord, detail: str) -> OutRecord:
    """A dead letter for a message too large to copy: a JSON envelope with the sizes, the source and the first
    `ENVELOPE_PREFIX_BYTES` of the key and the value (base64); its key is the original only when that is short.
    At most `ENVELOPE_MAX_BYTES` whatever the input, so it fits any topic the stream accepts."""
    key, value = source.key, source.value
    envelope = {
        "reason": "too_large",
        "detail": detail[:500],
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "key_bytes": None if key is None else len(key),
        "value_bytes": None if value is None else len(value),
        "key_prefix": None if key is None else base64.b64encode(key[:ENVELOPE_PREFIX_BYTES]).decode(),
        "value_prefix": None if value is None else base64.b64encode(value[:ENVELOPE_PREFIX_BYTES]).decode(),
    }
    return OutRecord(
        topic=topic,
        key=key if key is not None and len(key) <= _MAX_ENVELOPE_KEY_BYTES else None,
        value=json.dumps(envelope).encode(),
        headers=(
            (HEADER_REASON, b"too_large"),
            (HEADER_DETAIL, detail.encode()[:_MAX_DETAIL_BYTES]),
            *_source_headers(source),
        ),
    )


def record_size(record: OutRecord) -> int:
    """Bytes the record takes in a record batch of its own (what the broker compares with `max.message.bytes`)."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, list(record.headers))


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers of a consumed message as text, for readers of the output topics (last value wins)."""
    return {name: value.decode("utf-8", "replace") for name, value in headers or ()}
