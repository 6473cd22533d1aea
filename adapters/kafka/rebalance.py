"""React to partition reassignment: commit what is done, drop what is not, keep the metrics right."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from kafka import ConsumerRebalanceListener, TopicPartition

from .batch import BatchCollector
from .logs import log_event
from .metrics import StreamMetrics
from .sink import Sink

__all__ = ["RebalanceHandler"]

_log = logging.getLogger("redone_sdk.adapters.kafka.rebalance")


def _names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class RebalanceHandler(ConsumerRebalanceListener):
    """kafka-python calls this on its IO thread, while the stream's thread waits in `poll()` (no batch is in
    work then: batches are delivered between polls). It must not block."""

    def __init__(self, collector: BatchCollector, sink: Sink, metrics: StreamMetrics) -> None:
        self._collector = collector
        self._sink = sink
        self._metrics = metrics
        self._assigned: set[TopicPartition] = set()
        self.joined_at: float | None = None  # monotonic time of the last completed assignment

    def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if not revoked:  # the first join of a member revokes nothing
            return
        self._metrics.rebalances.inc()
        self._sink.revoked(revoked)
        dropped = self._collector.drop(revoked)
        self._forget(revoked)
        log_event(_log, logging.INFO, "partitions revoked", partitions=_names(revoked), dropped_unprocessed=dropped)

    def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.joined_at = time.monotonic()
        self._assigned |= set(assigned)
        self._metrics.assigned.set(len(self._assigned))
        log_event(_log, logging.INFO, "partitions assigned", partitions=_names(assigned))

    def on_partitions_lost(self, lost: Collection[TopicPartition]) -> None:
        """The group evicted this member: nothing may be committed any more, buffered records are dropped."""
        if not lost:
            return
        self._metrics.rebalances.inc()
        dropped = self._collector.drop(lost)
        self._forget(lost)
        log_event(_log, logging.WARNING, "partitions lost", partitions=_names(lost), dropped_unprocessed=dropped)

    def _forget(self, partitions: Collection[TopicPartition]) -> None:
        self._assigned -= set(partitions)
        self._metrics.assigned.set(len(self._assigned))
        for tp in partitions:
            self._metrics.lag.remove(topic=tp.topic, partition=str(tp.partition))
