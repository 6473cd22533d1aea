"""React to partition reassignment: commit what is done, drop what is not (and go back to it if the partition
comes back), keep the metrics right."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from .batch import BatchCollector
from .logs import log_event
from .metrics import StreamMetrics
from .sink import Sink

__all__ = ["RebalanceHandler"]

_log = logging.getLogger("redone_sdk.adapters.kafka.rebalance")


def _names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class RebalanceHandler(ConsumerRebalanceListener):
    """kafka-python calls this on its IO thread while the stream's thread waits in `poll()` (the worker may be
    classifying the batch before then: `revoked_since` tells the stream to drop it). It must not block."""

    def __init__(self, consumer: KafkaConsumer, collector: BatchCollector, sink: Sink, metrics: StreamMetrics) -> None:
        self._consumer = consumer
        self._collector = collector
        self._sink = sink
        self._metrics = metrics
        self._assigned: set[TopicPartition] = set()
        self._revoked: list[frozenset[TopicPartition]] = []  # one entry per revocation or loss, in order
        # First offset of the records dropped from a revoked partition: where to resume if it comes back here.
        self._rewind: dict[TopicPartition, int] = {}
        self._rebalancing = False  # between a revocation (or loss) and the next assignment
        self.joined_at: float | None = None  # monotonic time of the last completed assignment

    @property
    def revocations(self) -> int:
        """How many revocations (or losses) so far: a mark for `revoked_since`."""
        return len(self._revoked)

    def revoked_since(self, mark: int) -> set[TopicPartition]:
        """Partitions revoked or lost after `revocations` was `mark` (a batch in work then must not be
        delivered for them)."""
        return set().union(*self._revoked[mark:])

    def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if not revoked:  # the first join of a member revokes nothing
            return
        self._metrics.rebalances.inc()
        self._revoked.append(frozenset(revoked))
        self._sink.revoked(revoked)
        dropped = self._drop(revoked)
        self._forget(revoked)
        log_event(_log, logging.INFO, "partitions revoked", partitions=_names(revoked), dropped_from=dropped)

    def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        # A partition that comes back to this member keeps its position (kafka-python keeps the state of a
        # partition in both the old and the new assignment), which is past the records dropped on revocation:
        # go back to them. The others' new owners start from the committed offsets.
        for tp in assigned:
            if tp in self._rewind:
                self._consumer.seek(tp, self._rewind[tp])
        self._rewind.clear()
        self._rebalancing = False
        self.joined_at = time.monotonic()
        self._assigned |= set(assigned)
        self._metrics.assigned.set(len(self._assigned))
        log_event(_log, logging.INFO, "partitions assigned", partitions=_names(assigned))

    def on_partitions_lost(self, lost: Collection[TopicPartition]) -> None:
        """The group evicted this member: nothing may be committed any more, buffered records are dropped."""
        if not lost:
            return
        self._metrics.rebalances.inc()
        self._revoked.append(frozenset(lost))
        dropped = self._drop(lost)
        self._forget(lost)
        log_event(_log, logging.WARNING, "partitions lost", partitions=_names(lost), dropped_from=dropped)

    def rewind(self, offsets: dict[TopicPartition, int]) -> None:
        """Go back to `offsets` (a dropped batch's first records) in the partitions held now and, while a
        rebalance is in progress, in those that come back to this member when it ends."""
        if self._rebalancing:
            self._remember(offsets)
        assigned = self._consumer.assignment()
        for tp, offset in offsets.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _drop(self, partitions: Collection[TopicPartition]) -> dict[str, int]:
        """Drop the batch being filled's records of `partitions`; remember where they started."""
        self._rebalancing = True
        first = self._collector.drop(partitions)
        self._remember(first)
        return {f"{tp.topic}[{tp.partition}]": offset for tp, offset in sorted(first.items())}

    def _remember(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._rewind[tp] = min(offset, self._rewind.get(tp, offset))

    def _forget(self, partitions: Collection[TopicPartition]) -> None:
        self._assigned -= set(partitions)
        self._metrics.assigned.set(len(self._assigned))
        for tp in partitions:
            self._metrics.lag.remove(topic=tp.topic, partition=str(tp.partition))
