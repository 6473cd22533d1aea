"""At-least-once: commit a partition's offset only after the broker acknowledged every output up to it.

A crash between the acknowledgements and the commit makes that batch run again; since the stream submits a
batch only after the previous one is committed, duplicates can only come from the one batch in flight.
Outputs whose send failed transiently are sent again (only those).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from .batch import Batch
from .errors import DeliveryError, ErrorCallback, ErrorContext, ShutdownTimeoutError
from .logs import log_event
from .metrics import StreamMetrics
from .records import OutRecord
from .retry import Backoff, is_transient, retry_transient
from .shutdown import ShutdownClock
from .sink import Delivery, commit_map, send

__all__ = ["AtLeastOnceSink"]

_log = logging.getLogger("redone_sdk.adapters.kafka.delivery")
_FLUSH_SLICE_S = 1.0  # flush() waits in slices of this, so a stop asked for meanwhile is noticed

# The group moved on: these partitions may belong to another member now, which redoes the batch.
_LOST_OWNERSHIP = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
    FencedInstanceIdError,
)


class AtLeastOnceSink:
    """Idempotent producer (acks=all) + synchronous offset commits after the acknowledgements."""

    pipelined = True

    def __init__(
        self,
        producer: KafkaProducer,
        consumer: KafkaConsumer,
        *,
        backoff: Backoff,
        on_error: ErrorCallback,
        metrics: StreamMetrics,
        clock: ShutdownClock,
        commit_timeout_ms: int = 30_000,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._backoff = backoff
        self._clock = clock
        self._on_error = on_error
        self._metrics = metrics
        self._commit_timeout_ms = commit_timeout_ms
        self._lock = threading.Lock()
        self._in_flight: Delivery | None = None

    def start(self) -> None:
        return None

    def submit(self, batch: Batch, outputs: Sequence[OutRecord]) -> Delivery:
        delivery = Delivery(batch=batch, sent=[(record, self._send(record)) for record in outputs])
        with self._lock:
            self._in_flight = delivery
        return delivery

    def complete(self, delivery: Delivery) -> bool:
        self._await_acks(delivery)
        with self._lock:
            self._in_flight = None
            if delivery.committed:  # already committed on revocation, while the stream was polling
                return True
            # Commit only partitions this member still owns: a revoked one restarts from its committed offset
            # with its new owner, and a late commit from here could move that owner's offset.
            assigned = self._consumer.assignment()
            offsets = {tp: o for tp, o in delivery.batch.next_offsets().items() if tp in assigned}
        self._commit(offsets)
        delivery.committed = True
        return True

    def _send(self, record: OutRecord) -> object:
        return retry_transient(
            lambda: send(self._producer, record),
            backoff=self._backoff,
            what="send",
            on_retry=lambda _e: self._metrics.retries.inc(),
            stop_by=lambda: self._clock.deadline,
        )

    def _await_acks(self, delivery: Delivery) -> None:
        """Wait for every output's acknowledgement; send again those that failed transiently. During a shutdown,
        only until its deadline (then `ShutdownTimeoutError`: nothing of the batch is committed)."""
        deadline = time.monotonic() + self._backoff.timeout_s
        attempt = 0
        pending = delivery.sent
        while pending:
            self._flush()  # every future is done afterwards (delivery_timeout_ms bounds it)
            again: list[OutRecord] = []
            for record, future in pending:
                if future.succeeded():
                    continue
                error = future.exception if isinstance(future.exception, Exception) else DeliveryError("send failed")
                if is_transient(error) and time.monotonic() < deadline:
                    again.append(record)
                elif self._on_error(error, ErrorContext(stage="produce", record=None, output=record)):
                    self._metrics.skipped.inc(stage="produce")
                    log_event(
                        _log,
                        logging.ERROR,
                        "output skipped by the error callback",
                        topic=record.topic,
                        key=record.key,
                        headers=dict(record.headers),
                        error=repr(error),
                    )
                else:
                    raise DeliveryError(f"could not produce to {record.topic}: {error!r}") from error
            if again:
                self._metrics.retries.inc()
                wait = self._backoff.delay(attempt)
                log_event(
                    _log,
                    logging.WARNING,
                    "re-sending outputs after transient errors",
                    count=len(again),
                    wait_s=round(wait, 3),
                )
                time.sleep(min(wait, self._clock.remaining(wait)))
                attempt += 1
            pending = [(record, self._send(record)) for record in again]

    def _flush(self) -> None:
        """`producer.flush()`, until the shutdown deadline once a stop was asked for (checked in slices, so a
        stop asked for during a long wait for the broker is noticed)."""
        while True:
            if self._clock.expired:
                raise ShutdownTimeoutError("outputs still unacknowledged when the shutdown timeout passed")
            try:
                self._producer.flush(timeout=self._clock.remaining(_FLUSH_SLICE_S))
                return
            except KafkaTimeoutError:
                continue

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        if self._clock.expired:
            raise ShutdownTimeoutError("the offsets could not be committed before the shutdown timeout passed")
        try:
            retry_transient(
                lambda: self._consumer.commit(
                    commit_map(offsets),
                    timeout_ms=max(1, int(self._clock.remaining(self._commit_timeout_ms / 1000) * 1000)),
                ),
                backoff=self._backoff,
                what="commit",
                on_retry=lambda _e: self._metrics.retries.inc(),
                stop_by=lambda: self._clock.deadline,
            )
        except _LOST_OWNERSHIP as exc:
            log_event(
                _log,
                logging.WARNING,
                "offset commit refused: the group moved on; the partitions' new owner redoes this batch",
                error=repr(exc),
                offsets={str(tp): o for tp, o in offsets.items()},
            )

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Commit the in-flight batch's offsets for the revoked partitions if all its outputs are acknowledged
        (asynchronously: this runs on kafka-python's IO thread, which must not wait on itself). If some are
        not, the new owner redoes that batch."""
        with self._lock:
            delivery = self._in_flight
            if delivery is None or not all(future.succeeded() for _, future in delivery.sent):
                return
            offsets = {tp: o for tp, o in delivery.batch.next_offsets().items() if tp in set(partitions)}
            if len(offsets) == len(delivery.batch.partitions()):
                delivery.committed = True
        if not offsets:
            return
        log_event(
            _log,
            logging.INFO,
            "committing the finished batch of revoked partitions",
            offsets={str(tp): o for tp, o in offsets.items()},
        )

        def report(_offsets: object, response: object) -> None:
            if isinstance(response, Exception):
                log_event(
                    _log,
                    logging.WARNING,
                    "commit on revocation failed; the new owner redoes that batch",
                    error=repr(response),
                )

        self._consumer.commit_async(commit_map(offsets), callback=report)

    def close(self) -> None:
        try:
            self._producer.close(timeout=self._clock.remaining(10.0))
        except KafkaError as exc:  # unacknowledged at the deadline: their offsets were not committed
            log_event(_log, logging.WARNING, "producer closed with outputs unacknowledged", error=repr(exc))
