"""End to end on the real broker: every note gets exactly one verdict; flagged notes reach the review topic."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from redone_sdk import ModerationResult, Moderator
from redone_sdk.adapters.kafka import ModerationStream, ReviewItem, header_map

pytestmark = pytest.mark.kafka


def test_5000_notes_get_one_verdict_each_and_flagged_ones_go_to_review(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    notes = sample_notes[:5000]
    settings = stream_settings(batch_size=128, metrics_port=0)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)

    stream = ModerationStream(classifier=moderator, settings=settings)
    running = stream_threads(stream)
    kit.watch(settings.output_topic).wait_for_keys(
        {n["note_id"] for n in notes}, timeout=120, alive=lambda: running.alive
    )
    deadline = time.monotonic() + 30
    while stream.metrics.messages.value() < len(notes):  # the last batch is counted just after its commit
        assert time.monotonic() < deadline
        time.sleep(0.05)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stream.metrics_port}/metrics", timeout=10).read().decode()
    summary = running.stop()

    verdicts = kit.read_all(settings.output_topic)
    counts = kit.verdict_counts(verdicts)
    assert set(counts) == {n["note_id"] for n in notes}
    assert max(counts.values()) == 1, "a note got more than one verdict"
    assert summary.messages == summary.verdicts == len(notes) and summary.dead_letters == 0

    results = {r.key.decode(): ModerationResult.model_validate_json(r.value) for r in verdicts}
    flagged = {note_id for note_id, result in results.items() if result.flagged}
    assert 0 < len(flagged) < len(notes), "the test policy should flag some notes, not all"
    assert {r.action for r in results.values()} == {"allow", "review", "block"}

    review = kit.read_all(settings.review_topic)
    items = {r.key.decode(): ReviewItem.model_validate_json(r.value) for r in review}
    assert len(review) == len(items) == len(flagged)
    assert set(items) == flagged
    by_id = {n["note_id"]: n for n in notes}
    for note_id, item in list(items.items())[:50]:
        assert item.note.content == by_id[note_id]["content"]
        assert item.result == results[note_id]

    headers = header_map(verdicts[0].headers)
    assert headers["model_name"] == moderator.bundle.name
    assert headers["model_version"] == moderator.bundle.version
    assert headers["model_digest"] == moderator.bundle.digest == results[verdicts[0].key.decode()].model.digest
    assert headers["source_topic"] == settings.input_topic
    assert headers["action"] == results[verdicts[0].key.decode()].action
    sources = {(header_map(r.headers)["source_partition"], header_map(r.headers)["source_offset"]) for r in verdicts}
    assert len(sources) == len(notes), "each verdict names its own source message"
    for r in verdicts[:20]:
        assert json.loads(r.value)["note_id"] == r.key.decode()

    assert kit.read_all(settings.dlq_topic) == []
    assert "redone_stream_messages_total 5000" in metrics
    assert f'redone_stream_verdicts_total{{action="allow"}} {sum(not r.flagged for r in results.values())}' in metrics
    assert "redone_stream_batch_seconds_count" in metrics
    assert 'redone_stream_consumer_lag{topic="' in metrics


def test_max_messages_returns_once_an_exact_backlog_is_done(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    """The last batch is completed while the input is idle; the stream must notice the count there too."""
    notes = sample_notes[:50]
    settings = stream_settings(batch_size=16, max_wait_ms=20)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)

    summary = stream_threads(ModerationStream(classifier=moderator, settings=settings), max_messages=len(notes)).join(
        timeout=60
    )

    assert summary.stopped_by == "max_messages"
    assert summary.messages == summary.verdicts == len(notes)
    assert set(kit.verdict_counts(kit.read_all(settings.output_topic))) == {n["note_id"] for n in notes}


def test_collect_returns_a_partial_batch_once_the_batch_before_is_done(
    sample_notes: list[dict[str, Any]], stream_settings, kit
) -> None:
    import threading

    from redone_sdk.adapters.kafka import clients
    from redone_sdk.adapters.kafka.batch import BatchCollector

    settings = stream_settings(batch_size=64, max_wait_ms=60_000, topic_partitions=1)
    kit.create_topics(settings)
    consumer = clients.consumer(settings)
    consumer.subscribe([settings.input_topic])
    collector = BatchCollector(consumer, batch_size=64, max_wait_s=60.0)
    stop = threading.Event()
    got: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while not consumer.assignment():  # join the group first (an empty topic: idle polls return nothing)
            assert time.monotonic() < deadline, "never joined the group"
            assert collector.collect(stop) is None
        kit.produce_notes(settings.input_topic, sample_notes[:3])
        while len(got) < 3:
            assert time.monotonic() < deadline, f"only {got} after 60 s"
            started = time.monotonic()
            batch = collector.collect(stop, ready=lambda: True)
            # without `ready` a batch of 3 would wait for 61 more notes up to max_wait (60 s)
            assert time.monotonic() - started < 30
            got += [json.loads(r.value)["note_id"] for r in batch or []]
    finally:
        consumer.close(autocommit=False)
    assert got == [n["note_id"] for n in sample_notes[:3]]
