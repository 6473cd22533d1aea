"""The delivery contract shared by the two guarantees: put a batch's outputs in Kafka, then its offsets.

Delivery has two steps so that at-least-once can overlap them with work: `submit` starts sending a batch's
outputs, `complete` waits for the broker's acknowledgements and commits the offsets. The stream classifies
the next batch in between; it never submits a batch before the previous one is complete, so at most one
batch is ever sent-but-uncommitted, which bounds the duplicates a crash can cause to that one batch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kafka import KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.producer.future import FutureRecordMetadata

from .batch import Batch
from .records import OutRecord

__all__ = ["Delivery", "Sink", "commit_map", "send"]


@dataclass
class Delivery:
    """A submitted batch: its outputs' futures (at-least-once) or its known outcome (exactly-once)."""

    batch: Batch
    sent: list[tuple[OutRecord, FutureRecordMetadata]] = field(default_factory=list)
    committed: bool | None = None


class Sink(Protocol):
    """Delivers a batch's outputs and commits its offsets (at-least-once or exactly-once)."""

    pipelined: bool
    """True when the stream may classify the next batch between `submit` and `complete`."""

    def start(self) -> None:
        """Prepare the producer (exactly-once: `init_transactions`, which fences older instances)."""

    def submit(self, batch: Batch, outputs: Sequence[OutRecord]) -> Delivery:
        """Start delivering a batch's outputs."""
        ...

    def complete(self, delivery: Delivery) -> bool:
        """True once the outputs are acknowledged and the offsets committed; False when the batch was rolled
        back and the consumer rewound to redo it."""
        ...

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Partitions are being taken away (called on kafka-python's IO thread): commit what is done."""

    def close(self) -> None:
        """Roll back anything unfinished and release the producer."""


def send(producer: KafkaProducer, record: OutRecord) -> FutureRecordMetadata:
    return producer.send(record.topic, key=record.key, value=record.value, headers=list(record.headers))


def commit_map(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
