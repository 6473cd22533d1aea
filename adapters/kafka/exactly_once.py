"""Exactly-once: one Kafka transaction per batch holds its verdicts, review copies, dead letters and offsets.

A `read_committed` reader sees all of a batch or nothing of it. A failed transaction is aborted and the
consumer rewound to the batch's first offsets, so the batch is redone. Zombie fencing works two ways:
`init_transactions` with the same transactional.id bumps the producer epoch (the older instance gets
`ProducerFencedError` on its next transactional call and stops), and the offsets are sent with the consumer's
group metadata (KIP-447), so a member the group has moved past cannot commit offsets for partitions it lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

from .batch import Batch
from .errors import DeliveryError, FencedError, ShutdownTimeoutError, StreamError
from .logs import log_event
from .metrics import StreamMetrics
from .records import OutRecord
from .retry import Backoff, retry_transient
from .shutdown import ShutdownClock
from .sink import Delivery, commit_map, send

__all__ = ["ExactlyOnceSink"]

_log = logging.getLogger("redone_sdk.adapters.kafka.delivery")
_FENCED = (ProducerFencedError, InvalidProducerEpochError)
_WAIT_SLICE_S = 1.0  # how often a wait for a transactional call looks whether a stop was asked for


def _fenced_cause(error: BaseException) -> BaseException | None:
    """The fencing error behind `error`, if any. kafka-python often reports it wrapped: a plain `KafkaError`
    ("a previous transactional request has failed") whose args or cause hold the `ProducerFencedError`."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _FENCED):
            return item
        pending.extend([*item.args, item.__cause__, item.__context__])
    return None


class ExactlyOnceSink:
    """A transactional producer; `submit` runs begin → send → send_offsets_to_transaction → commit.

    Not pipelined: the next batch's offsets must not be read before this transaction's outcome is known.
    """

    pipelined = False

    def __init__(
        self,
        producer: KafkaProducer,
        consumer: KafkaConsumer,
        *,
        transactional_id: str,
        backoff: Backoff,
        metrics: StreamMetrics,
        clock: ShutdownClock,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._transactional_id = transactional_id
        self._backoff = backoff
        self._clock = clock
        self._metrics = metrics
        self._in_transaction = False

    def start(self) -> None:
        """Fence any older producer with this transactional.id and abort its open transaction."""
        try:
            retry_transient(
                lambda: self._bounded(self._producer.init_transactions, "initialise transactions"),
                backoff=self._backoff,
                what="init_transactions",
                on_retry=lambda _e: self._metrics.retries.inc(),
                stop_by=lambda: self._clock.deadline,
            )
        except KafkaError as exc:
            if _fenced_cause(exc) is not None:
                raise self._fenced(exc) from exc
            raise
        log_event(_log, logging.INFO, "transactions initialised", transactional_id=self._transactional_id)

    def submit(self, batch: Batch, outputs: Sequence[OutRecord]) -> Delivery:
        return Delivery(batch=batch, committed=self._transact(batch, outputs))

    def complete(self, delivery: Delivery) -> bool:
        return bool(delivery.committed)

    def _transact(self, batch: Batch, outputs: Sequence[OutRecord]) -> bool:
        try:
            self._producer.begin_transaction()
            self._in_transaction = True
            futures = [send(self._producer, record) for record in outputs]
            offsets, group = commit_map(batch.next_offsets()), self._consumer.group_metadata()
            self._bounded(lambda: self._producer.send_offsets_to_transaction(offsets, group), "send offsets")
            self._bounded(self._producer.commit_transaction, "commit the transaction")
            self._in_transaction = False
        except KafkaError as exc:
            if _fenced_cause(exc) is not None:
                raise self._fenced(exc) from exc
            self._abort(exc)
            self._rewind(batch)
            return False
        failed = [f.exception for f in futures if not f.succeeded()]
        if failed:  # cannot happen after a successful commit; if it did, the guarantee would be broken
            raise DeliveryError(f"transaction committed but {len(failed)} sends failed: {failed[0]!r}")
        return True

    def _bounded(self, call: Callable[[], object], what: str) -> None:
        """Run a transactional call that kafka-python lets block without a timeout (while the broker is
        down, say) on a daemon thread, and wait for it until the shutdown deadline once a stop is asked for.
        Past the deadline, `ShutdownTimeoutError`: the transaction's outcome is left to the broker (it commits
        whole or aborts whole, at the latest after transaction_timeout_ms)."""
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # handed to the waiting thread
                outcome.append(exc)

        worker = threading.Thread(target=target, name=f"redone-txn-{what}", daemon=True)
        worker.start()
        while worker.is_alive():
            if self._clock.expired:
                raise ShutdownTimeoutError(f"could not {what} before the shutdown timeout passed")
            worker.join(self._clock.remaining(_WAIT_SLICE_S))
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _abort(self, cause: KafkaError) -> None:
        self._metrics.aborted.inc()
        log_event(_log, logging.WARNING, "transaction failed; aborting it and redoing the batch", error=repr(cause))
        if not self._in_transaction:
            return
        try:
            self._bounded(self._producer.abort_transaction, "abort the transaction")
        except KafkaError as exc:
            if _fenced_cause(exc) is not None:
                raise self._fenced(exc) from exc
            raise StreamError(f"could not abort the transaction after {cause!r}: {exc!r}") from exc
        finally:
            self._in_transaction = False

    def _rewind(self, batch: Batch) -> None:
        """Seek back to the batch's first offsets so the next poll returns its records again."""
        assigned = self._consumer.assignment()
        for tp, offset in batch.first_offsets().items():
            if tp in assigned:  # a revoked partition restarts from its committed offset with its new owner
                self._consumer.seek(tp, offset)

    def _fenced(self, exc: KafkaError) -> FencedError:
        self._in_transaction = False
        return FencedError(
            f"transactional.id {self._transactional_id!r} was taken over by another instance ({exc}); this "
            "instance stops. Give each process of the group its own --instance-id."
        )

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Nothing to do: offsets are committed inside each batch's transaction, none is left half-done here."""
        return None

    def close(self) -> None:
        if self._in_transaction:
            try:
                self._bounded(self._producer.abort_transaction, "abort the transaction")
            except (KafkaError, ShutdownTimeoutError) as exc:
                log_event(
                    _log,
                    logging.WARNING,
                    "could not abort the open transaction on close; the broker "
                    "aborts it after transaction_timeout_ms or when this transactional.id restarts",
                    error=repr(exc),
                )
            self._in_transaction = False
        try:
            self._producer.close(timeout=self._clock.remaining(10.0))
        except KafkaError as exc:  # records still unsent at the deadline: they belong to no committed transaction
            log_event(_log, logging.WARNING, "producer closed with records unsent", error=repr(exc))
