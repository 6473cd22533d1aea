"""Decoding messages into notes, and the records the stream writes (no broker needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from redone_sdk import ModerationResult, Note
from redone_sdk.adapters.kafka import (
    REASONS,
    Rejection,
    ReviewItem,
    StreamMetrics,
    StreamSettings,
    decode_note,
    default_on_error,
    header_map,
)
from redone_sdk.adapters.kafka.process import BatchProcessor
from redone_sdk.adapters.kafka.records import (
    ENVELOPE_MAX_BYTES,
    dead_letter_record,
    record_size,
    review_record,
    verdict_record,
)
from redone_sdk.schemas import ModelInfo


@dataclass(frozen=True)
class Message:
    topic: str = "notes"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"k"
    value: bytes | None = None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"x" * 65, "too_large"),
        (b'{"note_id": "1", "content": "\xc3\x28"}', "invalid_utf8"),
        (b"not json", "not_json"),
        (b'{"note_id": "1", "content": "cut', "not_json"),
        (b'{"title": "no id"}', "missing_fields"),
        (b'{"note_id": "1", "content": "x", "extra": 1}', "invalid_schema"),
        (b'{"note_id": "1", "content": 5}', "invalid_schema"),
        (b'{"note_id": "1"}', "invalid_schema"),
        (b"[1, 2]", "invalid_schema"),
        (b'"just a string"', "invalid_schema"),
    ],
)
def test_each_kind_of_bad_message_has_its_reason(value: bytes | None, reason: str) -> None:
    outcome = decode_note(value, max_bytes=64)
    assert isinstance(outcome, Rejection)
    assert outcome.reason == reason
    assert outcome.reason in REASONS and outcome.detail


def test_a_valid_note_decodes() -> None:
    raw = json.dumps({"note_id": 7, "title": "标题", "content": "正文", "tags": ["a"]}, ensure_ascii=False).encode()
    note = decode_note(raw, max_bytes=1000)
    assert note == Note(note_id="7", title="标题", content="正文", tags=("a",))


def _result(action: str = "review") -> ModerationResult:
    return ModerationResult(
        note_id="n1",
        flagged=action != "allow",
        label="offensive",
        scores={"offensive": 0.7},
        action=action,
        model=ModelInfo(name="bundle-x", version="1.2.3"),
        truncated=False,
    )


def test_verdict_record_is_keyed_by_note_id_with_model_and_source_headers() -> None:
    record = verdict_record("verdicts", Message(), _result())
    assert record.topic == "verdicts" and record.key == b"n1"
    assert ModerationResult.model_validate_json(record.value) == _result()
    assert header_map(record.headers) == {
        "model_name": "bundle-x",
        "model_version": "1.2.3",
        "action": "review",
        "source_topic": "notes",
        "source_partition": "2",
        "source_offset": "41",
    }


def test_a_verdict_from_a_manifest_bundle_names_its_digest() -> None:
    digest = "ab" * 32
    result = _result().model_copy(update={"model": ModelInfo(name="bundle-x", version="1.2.3", digest=digest)})
    headers = header_map(verdict_record("verdicts", Message(), result).headers)
    assert headers["model_digest"] == digest
    assert header_map(review_record("review", Message(), Note(note_id="n1", content="t"), result).headers) == headers


def test_review_record_carries_the_note_and_its_verdict() -> None:
    note = Note(note_id="n1", content="text")
    record = review_record("review", Message(), note, _result("block"))
    item = ReviewItem.model_validate_json(record.value)
    assert item.note == note and item.result.action == "block"


def test_dead_letter_keeps_key_and_bytes_and_says_why() -> None:
    message = Message(key=b"orig-key", value=b"\xff\xfe raw")
    record = dead_letter_record("dlq", message, Rejection("invalid_utf8", "not UTF-8 at byte 0" + "!" * 5000))
    assert (record.key, record.value) == (b"orig-key", b"\xff\xfe raw")
    headers = header_map(record.headers)
    assert headers["reason"] == "invalid_utf8"
    assert headers["detail"].startswith("not UTF-8") and len(headers["detail"]) <= 2000
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == ("notes", "2", "41")


def test_the_key_counts_toward_the_size_limit() -> None:
    value = b'{"note_id": "1", "content": "x"}'
    assert isinstance(decode_note(value, key=b"k" * 10, max_bytes=64), Note)
    outcome = decode_note(value, key=b"k" * 40, max_bytes=64)
    assert isinstance(outcome, Rejection) and outcome.reason == "too_large"


def test_a_dead_letter_over_the_dlq_topics_limit_becomes_a_bounded_envelope() -> None:
    """An existing dead-letter topic with a smaller limit than the stream's: the copy would be refused by the
    broker and fail its batch on every try, so the processor sends the envelope instead."""
    settings = StreamSettings(max_message_bytes=1_048_576)
    processor = BatchProcessor(
        _NoNotes(), settings, on_error=default_on_error, metrics=StreamMetrics(), topic_limits={"notes-dlq": 50_000}
    )
    big, small = Message(offset=7, value=b"\xff" * 200_000), Message(offset=8, value=b"\xff" * 100)
    out = processor.process([big, small])
    assert [header_map(r.headers)["reason"] for r in out.records] == ["too_large", "invalid_utf8"]
    envelope = json.loads(out.records[0].value)
    assert (envelope["value_bytes"], envelope["source_offset"]) == (200_000, 7)
    assert record_size(out.records[0]) <= ENVELOPE_MAX_BYTES
    assert out.records[1].value == small.value, "what fits is still copied unchanged"


class _NoNotes:
    def classify_batch(self, notes: list[Note]) -> list[ModerationResult]:
        raise AssertionError("no valid note in these batches")
