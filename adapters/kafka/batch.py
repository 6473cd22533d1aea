"""Micro-batching: poll the consumer until a batch is full or its oldest message has waited `max_wait`.

The batch being filled is shared with the rebalance listener, which drops the records of revoked partitions
from it (their new owner reads them again from the committed offset), hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

__all__ = ["Batch", "BatchCollector"]

_READY_POLL_MS = 5  # while the batch before is classified: how often to look whether it is done


@dataclass
class Batch:
    """Records polled together, in poll order; `started` is when the first of them arrived (monotonic)."""

    records: list[ConsumerRecord] = field(default_factory=list)
    started: float = 0.0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ConsumerRecord]:
        return iter(self.records)

    def partitions(self) -> set[TopicPartition]:
        return {TopicPartition(r.topic, r.partition) for r in self.records}

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit once the batch is done: the last record's offset + 1."""
        offsets: dict[TopicPartition, int] = {}
        for record in self.records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, -1), record.offset + 1)
        return offsets

    def first_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the first record's offset: where to seek back to redo the batch."""
        offsets: dict[TopicPartition, int] = {}
        for record in self.records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = min(offsets.get(tp, record.offset), record.offset)
        return offsets

    def drop(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """Remove the records of `partitions`; returns, per partition, the first offset removed."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        removed = Batch([r for r in self.records if (r.topic, r.partition) in gone])
        self.records = [r for r in self.records if (r.topic, r.partition) not in gone]
        return removed.first_offsets()


class BatchCollector:
    """Fills batches from `consumer.poll`, never asking for more records than the batch has room for."""

    def __init__(self, consumer: KafkaConsumer, *, batch_size: int, max_wait_s: float, idle_poll_s: float = 0.5):
        self._consumer = consumer
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._idle_poll_ms = int(idle_poll_s * 1000)
        self._lock = threading.Lock()
        self._filling: Batch | None = None

    def collect(self, stop: threading.Event, *, ready: Callable[[], bool] | None = None) -> Batch | None:
        """The next batch, or None when a poll of `idle_poll_s` brought nothing (or `stop` was set). With
        `ready` (the batch before is being classified), it polls in short slices and returns what it has, maybe
        nothing, once `ready()` is true, so that batch is delivered without waiting for this one to fill."""
        batch = Batch()
        with self._lock:
            self._filling = batch
        try:
            deadline: float | None = None
            while not stop.is_set():
                if deadline is None:
                    timeout_ms = self._idle_poll_ms
                else:
                    timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
                if ready is not None:
                    timeout_ms = min(timeout_ms, _READY_POLL_MS)
                polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._batch_size - len(batch))
                with self._lock:
                    for records in polled.values():
                        batch.records.extend(records)
                    size = len(batch)
                if size and deadline is None:
                    batch.started = time.monotonic()
                    deadline = batch.started + self._max_wait_s
                if size >= self._batch_size or (deadline is not None and time.monotonic() >= deadline):
                    break  # full, or waited long enough (a revocation may have emptied it meanwhile)
                if ready is not None and ready():
                    break  # the batch before is classified: deliver it; this one goes to the worker as it is
                if not size and not polled and ready is None:
                    break
            return batch if len(batch) else None
        finally:
            with self._lock:
                self._filling = None

    def drop(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """Forget buffered records of revoked partitions (called from the rebalance listener); returns, per
        partition, the first offset forgotten."""
        with self._lock:
            return self._filling.drop(partitions) if self._filling is not None else {}
