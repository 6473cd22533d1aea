"""Bad messages never stop the stream: each kind lands in the dead-letter topic with its reason and its
original bytes, while the good notes around it get their verdicts. The error callback decides skip or stop."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from redone_sdk import InvalidInputError, ModerationResult, Moderator, Note
from redone_sdk.adapters.kafka import ClassificationError, ModerationStream, header_map

pytestmark = pytest.mark.kafka

MAX_BYTES = 4096

BAD_MESSAGES: dict[str, tuple[bytes | None, str]] = {
    # key: (value, expected reason)
    "bad-not-json": (b"this is not json {", "not_json"),
    "bad-truncated-json": (b'{"note_id": "x1", "content": "cut', "not_json"),
    "bad-utf8": (b'{"note_id": "x2", "content": "\xff\xfe\xfd"}', "invalid_utf8"),
    "bad-missing-id": (json.dumps({"title": "no id", "content": "hello"}).encode(), "missing_fields"),
    "bad-unknown-field": (json.dumps({"note_id": "x3", "content": "hi", "likes": 3}).encode(), "invalid_schema"),
    "bad-wrong-type": (json.dumps({"note_id": "x4", "content": ["a", "list"]}).encode(), "invalid_schema"),
    "bad-not-object": (b"[1, 2, 3]", "invalid_schema"),
    "bad-empty-text": (json.dumps({"note_id": "x5", "title": " ", "content": ""}).encode(), "invalid_schema"),
    "bad-too-large": (json.dumps({"note_id": "x6", "content": "长" * MAX_BYTES}).encode(), "too_large"),
    "bad-tombstone": (None, "empty"),
}


def _interleaved(good: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    """good, bad, good, bad, … then the rest of the good notes."""
    messages: list[tuple[bytes | None, bytes | None]] = []
    good_iter = iter(good)
    for key, (value, _) in BAD_MESSAGES.items():
        note = next(good_iter)
        messages.append((note["note_id"].encode(), json.dumps(note, ensure_ascii=False).encode()))
        messages.append((key.encode(), value))
    messages.extend((n["note_id"].encode(), json.dumps(n, ensure_ascii=False).encode()) for n in good_iter)
    return messages


def test_each_malformed_kind_goes_to_the_dlq_with_its_reason(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    good = sample_notes[:40]
    settings = stream_settings(max_message_bytes=MAX_BYTES, topic_partitions=2)
    kit.create_topics(settings)
    kit.produce(settings.input_topic, _interleaved(good))

    running = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    kit.watch(settings.output_topic).wait_for(len(good), timeout=60, alive=lambda: running.alive)
    kit.watch(settings.dlq_topic).wait_for(len(BAD_MESSAGES), timeout=60, alive=lambda: running.alive)
    summary = running.stop()

    assert summary.verdicts == len(good) and summary.dead_letters == len(BAD_MESSAGES)
    verdicts = kit.verdict_counts(kit.read_all(settings.output_topic))
    assert verdicts == {n["note_id"]: 1 for n in good}

    dead = {r.key.decode(): r for r in kit.read_all(settings.dlq_topic)}
    assert set(dead) == set(BAD_MESSAGES)
    for key, (value, reason) in BAD_MESSAGES.items():
        record = dead[key]
        headers = header_map(record.headers)
        assert headers["reason"] == reason, (key, headers)
        assert headers["detail"], key
        assert headers["source_topic"] == settings.input_topic
        assert int(headers["source_offset"]) >= 0
        if reason == "too_large":  # never copied whole: a bounded envelope with the sizes and a prefix
            envelope = json.loads(record.value)
            assert (envelope["value_bytes"], envelope["source_offset"]) == (len(value), int(headers["source_offset"]))
        else:
            assert record.value == value, "a dead letter keeps the original bytes"
    assert "note_id" in header_map(dead["bad-missing-id"].headers)["detail"]


class _RejectsSome:
    """The real moderator, except that it refuses notes whose id starts with `poison` the way a moderator
    refuses invalid input. Only here to drive the error callback; classification is the real model's."""

    def __init__(self, moderator: Moderator, error: type[Exception] = InvalidInputError) -> None:
        self._moderator = moderator
        self._error = error

    def classify_batch(self, notes: list[Note]) -> Sequence[ModerationResult]:
        for note in notes:
            if note.note_id.startswith("poison"):
                raise self._error(f"cannot classify {note.note_id}")
        return self._moderator.classify_batch(notes)


def test_error_callback_skips_to_the_dlq_or_stops_without_losing_notes(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    notes = [dict(n) for n in sample_notes[:30]]
    notes[7]["note_id"] = "poison-7"
    notes[21]["note_id"] = "poison-21"
    ids = [n["note_id"] for n in notes]

    # Default callback: InvalidInputError skips the note (dead letter "classify_error"), its batch-mates pass.
    skip = stream_settings(topic_partitions=1)
    kit.create_topics(skip)
    kit.produce_notes(skip.input_topic, notes)
    running = stream_threads(ModerationStream(classifier=_RejectsSome(moderator), settings=skip))
    kit.watch(skip.output_topic).wait_for(len(notes) - 2, timeout=60, alive=lambda: running.alive)
    kit.watch(skip.dlq_topic).wait_for(2, timeout=60, alive=lambda: running.alive)
    running.stop()
    assert set(kit.verdict_counts(kit.read_all(skip.output_topic))) == set(ids) - {"poison-7", "poison-21"}
    dead = kit.read_all(skip.dlq_topic)
    assert {header_map(r.headers)["reason"] for r in dead} == {"classify_error"}
    assert sorted(json.loads(r.value)["note_id"] for r in dead) == ["poison-21", "poison-7"]

    # A callback that says stop: the stream raises and commits nothing of the failing batch …
    stop = stream_settings(
        topic_partitions=1,
        batch_size=100,
        **{
            f: getattr(skip, f) + "-2" for f in ("input_topic", "output_topic", "review_topic", "dlq_topic", "group_id")
        },
    )
    kit.create_topics(stop)
    kit.produce_notes(stop.input_topic, notes)
    seen: list[str] = []

    def on_error(error: Exception, context: Any) -> bool:
        seen.append(context.stage)
        return False

    failing = stream_threads(
        ModerationStream(classifier=_RejectsSome(moderator, RuntimeError), settings=stop, on_error=on_error)
    )
    with pytest.raises(ClassificationError):
        failing.join(timeout=60)
    assert seen == ["classify"]
    # … so a healthy restart of the same group gives every note a verdict, the poisoned ones included.
    healthy = stream_threads(ModerationStream(classifier=moderator, settings=stop))
    kit.watch(stop.output_topic).wait_for(len(notes), timeout=60, alive=lambda: healthy.alive)
    healthy.stop()
    assert kit.verdict_counts(kit.read_all(stop.output_topic)) == dict.fromkeys(ids, 1)
    assert kit.read_all(stop.dlq_topic) == []
