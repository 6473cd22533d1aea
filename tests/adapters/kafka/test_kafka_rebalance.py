"""Scaling out: two consumers of one group share the partitions; a third joining takes its share, and the
rebalance loses nothing (each member commits what it finished before giving partitions up).

The notes arrive in two waves: the first is still in work when the third member joins (the rebalance
happens mid-stream), the second is produced only once the third member holds partitions, so it gets work
however fast the first two drain the first wave."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from redone_sdk import ModerationResult, Moderator, Note
from redone_sdk.adapters.kafka import ModerationStream

pytestmark = pytest.mark.kafka

PARTITIONS = 6
BATCH = 32


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_consumers_share_partitions_and_a_third_joins_without_loss(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    notes = sample_notes[:6000]
    first_wave, second_wave = notes[:4000], notes[4000:]
    settings = stream_settings(topic_partitions=PARTITIONS, batch_size=BATCH)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, first_wave)
    progress = kit.watch(settings.output_topic)

    a = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    b = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    members = [a, b]

    def assigned() -> list[float]:
        return [m.stream.metrics.assigned.value() for m in members]

    _until(lambda: all(n > 0 for n in assigned()) and sum(assigned()) == PARTITIONS, 60, "a split between two")
    progress.wait_for(1000, timeout=60, alive=lambda: a.alive and b.alive)
    assert progress.count() < len(first_wave), "the first wave was done before the third consumer joined"

    c = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    members.append(c)
    _until(lambda: all(n > 0 for n in assigned()) and sum(assigned()) == PARTITIONS, 60, "a split between three")
    kit.produce_notes(settings.input_topic, second_wave)
    progress.wait_for_keys({n["note_id"] for n in notes}, timeout=180, alive=lambda: a.alive and b.alive and c.alive)
    summaries = [m.stop() for m in members]

    assert all(s.messages > 0 for s in summaries), [s.messages for s in summaries]
    verdicts = kit.read_all(settings.output_topic)
    assert set(kit.verdict_counts(verdicts)) == {n["note_id"] for n in notes}
    duplicates = kit.duplicates_by_source_partition(verdicts)
    assert all(d <= BATCH for d in duplicates.values()), duplicates
    assert sum(s.messages for s in summaries) == len(verdicts)


class _GatedClassifier:
    """The real moderator, but its second batch waits for `release`: the test makes a rebalance meanwhile."""

    def __init__(self, moderator: Moderator) -> None:
        self._moderator = moderator
        self.calls = 0
        self.second_entered = threading.Event()
        self.release = threading.Event()

    def classify_batch(self, notes: list[Note]) -> list[ModerationResult]:
        self.calls += 1
        if self.calls == 2:
            self.second_entered.set()
            assert self.release.wait(120), "the test never released the second batch"
        return self._moderator.classify_batch(notes)


def test_a_batch_whose_partitions_are_revoked_while_classified_is_dropped_and_redone(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    # Batches of 50 out of 120 notes: the first member polls for a third batch (which does not fill: it waits
    # up to max_wait) while its second batch is held in classification, so it sees the rebalance meanwhile.
    # Afterwards it keeps one partition, whose position kafka-python keeps past the dropped batch: the member
    # must go back to that batch's records, or they would never get a verdict.
    notes = sample_notes[:120]
    settings = stream_settings(topic_partitions=2, batch_size=50, max_wait_ms=10_000)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)
    gated = _GatedClassifier(moderator)
    a = stream_threads(ModerationStream(classifier=gated, settings=settings))
    assert gated.second_entered.wait(60), "the first member never classified a second batch"

    b = stream_threads(ModerationStream(classifier=moderator, settings=settings.model_copy(update={"max_wait_ms": 50})))
    _until(lambda: a.stream.metrics.rebalances.value() > 0, 60, "the first member to see the revocation")
    gated.release.set()
    _until(lambda: a.stream.metrics.dropped.value() == 1, 60, "the held batch to be dropped")
    kit.watch(settings.output_topic).wait_for_keys(
        {n["note_id"] for n in notes}, timeout=120, alive=lambda: a.alive and b.alive
    )
    summaries = [a.stop(), b.stop()]

    verdicts = kit.read_all(settings.output_topic)
    assert set(kit.verdict_counts(verdicts)) == {n["note_id"] for n in notes}
    assert sum(s.messages for s in summaries) == len(verdicts)  # the dropped batch made no verdicts
    assert all(d <= settings.batch_size for d in kit.duplicates_by_source_partition(verdicts).values())
