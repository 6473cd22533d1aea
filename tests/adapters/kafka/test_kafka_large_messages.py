"""One oversized message never stops the stream: an input topic that accepts 12 MB carries 5 MB values and
3 MB keys among ordinary notes; each of them becomes a small `too_large` envelope in the dead-letter topic,
every ordinary note gets its verdict, and no transaction or batch fails, in both guarantees."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from redone_sdk import Moderator
from redone_sdk.adapters.kafka import ModerationStream, header_map

pytestmark = pytest.mark.kafka

TOPIC_LIMIT = 12 * 1024 * 1024
MB = 1024 * 1024
ENVELOPE_BOUND = 16 * 1024  # what a dead letter for an oversized message may take, key included


def _oversized() -> dict[str, tuple[bytes, bytes]]:
    """label: (key, value); every one is over the stream's default 1 MiB limit by its value, its key or both."""
    huge_note = json.dumps({"note_id": "huge-note", "content": "长" * (5 * MB // 3)}, ensure_ascii=False).encode()
    return {
        "5mb-valid-note": (b"huge-note", huge_note),
        "5mb-not-utf8": (b"huge-junk", b"\xff" * (5 * MB)),
        "3mb-key-8b-value": (b"K" * (3 * MB), b"12345678"),
        "3mb-key-valid-note": (b"k" * (3 * MB), json.dumps({"note_id": "big-key", "content": "hello"}).encode()),
    }


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_5mb_values_and_3mb_keys_become_bounded_dead_letters(
    guarantee: str, moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    settings = stream_settings(guarantee=guarantee, topic_partitions=2, batch_size=16, instance_id="large")
    kit.create_topic(settings.input_topic, partitions=2, configs={"max.message.bytes": str(TOPIC_LIMIT)})
    kit.delete_after(settings)  # the stream creates its output topics itself
    good = sample_notes[:40]
    oversized = _oversized()
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, note in enumerate(good):
        messages.append((note["note_id"].encode(), json.dumps(note, ensure_ascii=False).encode()))
        if i % 10 == 5:  # good notes before and after each oversized one, in the same batches
            messages.append(oversized[list(oversized)[i // 10]])
    kit.produce(settings.input_topic, messages, max_request_size=TOPIC_LIMIT)

    isolation = "read_committed" if settings.exactly_once else "read_uncommitted"
    running = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    kit.watch(settings.output_topic, isolation=isolation).wait_for(len(good), 90, alive=lambda: running.alive)
    kit.watch(settings.dlq_topic, isolation=isolation).wait_for(len(oversized), 60, alive=lambda: running.alive)
    summary = running.stop()
    assert (summary.verdicts, summary.dead_letters, summary.aborted_batches) == (len(good), len(oversized), 0)

    verdicts = kit.read_all(settings.output_topic, isolation=isolation)
    assert kit.verdict_counts(verdicts) == {n["note_id"]: 1 for n in good}
    dead = kit.read_all(settings.dlq_topic, isolation=isolation)
    assert len(dead) == len(oversized)
    originals = {(len(key), len(value)): (key, value) for key, value in oversized.values()}
    seen = set()
    for record in dead:
        assert header_map(record.headers)["reason"] == "too_large"
        assert len(record.value) + len(record.key or b"") <= ENVELOPE_BOUND, "the envelope is bounded"
        envelope = json.loads(record.value)
        assert envelope["reason"] == "too_large" and envelope["source_topic"] == settings.input_topic
        assert str(envelope["source_offset"]) == header_map(record.headers)["source_offset"]
        sizes = (envelope["key_bytes"], envelope["value_bytes"])
        seen.add(sizes)
        key, value = originals[sizes]
        key_prefix, value_prefix = (base64.b64decode(envelope[f]) for f in ("key_prefix", "value_prefix"))
        assert 0 < len(key_prefix) < 2048 and key.startswith(key_prefix)
        assert 0 < len(value_prefix) < 2048 and value.startswith(value_prefix)
    assert seen == set(originals)

    # Topics the stream created accept whatever it writes: more than the note limit, plus its headers.
    for topic in (settings.output_topic, settings.review_topic, settings.dlq_topic):
        assert int(kit.topic_config(topic, "max.message.bytes")) > settings.max_message_bytes
