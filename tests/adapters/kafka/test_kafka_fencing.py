"""Zombie fencing under exactly-once: an instance that stalls while a successor with the same
transactional.id takes over must not write anything when it wakes up; it stops with `FencedError`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from redone_sdk import ModerationResult, Moderator, Note
from redone_sdk.adapters.kafka import FencedError, ModerationStream

pytestmark = pytest.mark.kafka


class _StallsOnce:
    """The real moderator, but the first call waits until released: an instance stuck mid-batch (a long GC
    pause, a frozen VM) that the group gives up on. Only the stall is staged; classification is real."""

    def __init__(self, moderator: Moderator) -> None:
        self._moderator = moderator
        self.stalled = threading.Event()
        self.release = threading.Event()

    def classify_batch(self, notes: list[Note]) -> Sequence[ModerationResult]:
        if not self.stalled.is_set():
            self.stalled.set()
            assert self.release.wait(120)
        return self._moderator.classify_batch(notes)


def test_a_stalled_instance_is_fenced_by_its_successor(
    moderator: Moderator, sample_notes: list[dict[str, Any]], stream_settings, kit, stream_threads
) -> None:
    notes = sample_notes[:600]
    settings = stream_settings(
        guarantee="exactly-once",
        instance_id="only-one",
        topic_partitions=1,
        batch_size=50,
        session_timeout_ms=6000,
        max_poll_interval_ms=6000,
    )
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)

    stalling = _StallsOnce(moderator)
    zombie = stream_threads(ModerationStream(classifier=stalling, settings=settings))
    assert stalling.stalled.wait(60), "the first instance never got a batch"

    successor = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    kit.watch(settings.output_topic, isolation="read_committed").wait_for(
        len(notes), timeout=120, alive=lambda: successor.alive
    )

    stalling.release.set()  # the zombie wakes up and tries to deliver its stale batch
    with pytest.raises(FencedError):
        zombie.join(60)
    successor.stop()

    committed = kit.read_all(settings.output_topic, isolation="read_committed")
    assert kit.verdict_counts(committed) == {n["note_id"]: 1 for n in notes}
