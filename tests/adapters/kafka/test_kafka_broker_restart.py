"""The broker goes away mid-stream and comes back: the stream waits it out and loses nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from redone_sdk import Moderator
from redone_sdk.adapters.kafka import ModerationStream

pytestmark = pytest.mark.kafka

BATCH = 64


def test_broker_stop_and_restart_mid_stream_loses_nothing(
    kafka_broker, moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    if not kafka_broker.managed:
        # Only an explicitly external broker may excuse this test; the project's own runs always manage theirs.
        if os.environ.get("REDONE_KAFKA_EXTERNAL_BROKER") != "1":
            pytest.fail("the broker was not started by scripts/kafka-broker, so this test cannot restart it")
        pytest.skip("REDONE_KAFKA_EXTERNAL_BROKER=1: cannot restart a broker this project does not run")
    notes = sample_notes[:3000]
    before, after = notes[:1500], notes[1500:]
    settings = stream_settings(batch_size=BATCH)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, before)

    stream = ModerationStream(classifier=moderator, settings=settings)
    running = stream_threads(stream)
    progress = kit.watch(settings.output_topic)
    progress.wait_for(300, timeout=60, alive=lambda: running.alive)

    kafka_broker.stop()
    assert kafka_broker.script("status", timeout=30).returncode != 0, "the broker should be down now"
    assert running.alive, "the stream must survive the outage"
    kafka_broker.start()

    kit.produce_notes(settings.input_topic, after)  # new notes after the restart reach the same stream
    progress.wait_for_keys({n["note_id"] for n in notes}, timeout=180, alive=lambda: running.alive)
    summary = running.stop()

    verdicts = kit.read_all(settings.output_topic)
    assert set(kit.verdict_counts(verdicts)) == {n["note_id"] for n in notes}
    duplicates = kit.duplicates_by_source_partition(verdicts)
    assert all(d <= BATCH for d in duplicates.values()), duplicates
    assert summary.messages >= len(notes)
