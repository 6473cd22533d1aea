"""The review feed: `redone stream`'s review topic into the review console's queue (`redone serve review-feed`).

At-least-once, without duplicates in the queue: a batch's rows are committed to the database first, its dead
letters acknowledged by the broker next, its offsets committed last. A crash in between redelivers the batch and
the queue's unique key (note id + bundle version + bundle digest, `ReviewStore.enqueue`) makes the second write a
no-op. The queue itself is anything with the `ReviewQueue` methods: `redone serve review-feed` passes the review
console's (`redone_sdk.serve.review.feed.ConsoleQueue`), so this adapter imports only the core. A message that
is not a review item goes to the dead-letter topic with its reason (`codec.py` codes, the
stream's `dead_letter_record`); the database gone makes the feed rewind the batch and retry with backoff, never
exit. SIGTERM/SIGINT finish the batch in work, commit and leave the group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from redone_sdk.schemas import ModerationResult, Note

from . import clients
from .admin import ensure_topics
from .batch import Batch
from .codec import Rejection, decode_json
from .errors import DeliveryError
from .logs import log_event
from .records import OutRecord, ReviewItem, dead_letter_record
from .retry import Backoff, retry_transient
from .settings import SecuritySettings, StreamSettings
from .shutdown import stop_on_signals
from .sink import commit_map, send

__all__ = ["FeedSummary", "ReviewFeed", "ReviewFeedSettings", "ReviewQueue", "decode_review_item"]

_log = logging.getLogger("redone_sdk.adapters.kafka.review_feed")

_POLL_MS = 500
_LOST_OWNERSHIP = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
    FencedInstanceIdError,
)


class ReviewQueue(Protocol):
    """Where the feed writes: `connect` and `write` raise one of `unavailable` while the store cannot be reached
    (the feed then retries with backoff); `write` is idempotent per note id + bundle version + digest and returns
    how many items were new."""

    unavailable: tuple[type[Exception], ...]

    def connect(self) -> None: ...

    def write(
        self, notes: Sequence[Note], results: Sequence[ModerationResult], *, policy: str, actions: Collection[str]
    ) -> int: ...


class ReviewFeedSettings(BaseModel):
    """What the feed reads, where its dead letters go and how it retries; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(default="127.0.0.1:9092", min_length=1, description="HOST:PORT[,HOST:PORT...]")
    topic: str = Field(default="notes-review", min_length=1, description="The review topic of `redone stream`.")
    dlq_topic: str = Field(default="notes-review-dlq", min_length=1, description="Messages that are not items.")
    group_id: str = Field(default="redone-review-feed", min_length=1, description="Not the stream's group.")
    client_id: str = "redone-review-feed"
    actions: tuple[Literal["review", "block"], ...] = Field(
        default=("review", "block"), min_length=1, description="Verdict actions queued (the topic holds both)."
    )
    policy: str = Field(
        default="stream", min_length=1, max_length=200, description="Policy name stored on the rows (not in messages)."
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Most messages written in one transaction.")
    max_message_bytes: int = Field(default=1_048_576, ge=64, description="Larger messages go to the DLQ.")
    create_topics: bool = True
    topic_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    reconnect_backoff_max_ms: int = Field(default=1_000, ge=50)
    retry_backoff_ms: int = Field(default=200, ge=1, description="First wait before a retry (Kafka or database).")
    retry_backoff_max_ms: int = Field(default=5_000, ge=1)
    retry_timeout_s: float = Field(default=300.0, gt=0, description="Give up on a transient Kafka error after this.")
    db_backoff_max_s: float = Field(default=30.0, gt=0, description="Longest wait between database retries.")
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    security: SecuritySettings = SecuritySettings()

    @model_validator(mode="after")
    def _distinct_topics(self) -> ReviewFeedSettings:
        if self.topic == self.dlq_topic:
            raise ValueError(f"the review topic {self.topic!r} cannot also be the dead-letter topic")
        return self

    def stream_settings(self) -> StreamSettings:
        """The same connection as `StreamSettings`, so that the stream's clients, topic creation and retries are
        reused: the feed's input is the review topic and its only output the dead-letter topic."""
        return StreamSettings(
            bootstrap=self.bootstrap,
            input_topic=self.topic,
            output_topic=self.dlq_topic,
            review_topic=None,
            dlq_topic=self.dlq_topic,
            group_id=self.group_id,
            client_id=self.client_id,
            batch_size=self.batch_size,
            max_message_bytes=self.max_message_bytes,
            create_topics=self.create_topics,
            topic_partitions=self.topic_partitions,
            replication_factor=self.replication_factor,
            auto_offset_reset=self.auto_offset_reset,
            session_timeout_ms=self.session_timeout_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            reconnect_backoff_max_ms=self.reconnect_backoff_max_ms,
            retry_backoff_ms=self.retry_backoff_ms,
            retry_backoff_max_ms=max(self.retry_backoff_max_ms, self.retry_backoff_ms),
            retry_timeout_s=self.retry_timeout_s,
            shutdown_timeout_s=self.shutdown_timeout_s,
            security=self.security,
        )


@dataclass
class FeedSummary:
    """What one `run()` did."""

    messages: int = 0
    queued: int = 0  # new queue rows
    already_queued: int = 0  # items the queue held already (a redelivery, a re-sent copy)
    dead_letters: int = 0
    skipped: int = 0  # valid items with an action not in `actions`
    db_retries: int = 0
    batches: int = 0
    stopped_by: Literal["stopped", "idle"] = "stopped"


def decode_review_item(value: bytes | None, *, max_bytes: int, key: bytes | None = None) -> ReviewItem | Rejection:
    """One review-topic message as a `ReviewItem` (`records.review_record`'s format), or why it is not one."""
    decoded = decode_json(value, ReviewItem, max_bytes=max_bytes, key=key, what="review item")
    if isinstance(decoded, ReviewItem) and decoded.note.note_id != decoded.result.note_id:
        return Rejection(
            "invalid_schema",
            f"the note's id {decoded.note.note_id[:100]!r} is not its result's {decoded.result.note_id[:100]!r}",
        )
    return decoded


class ReviewFeed:
    """Consumes the review topic into a `ReviewQueue`; `run()` until `stop()` or a signal."""

    def __init__(self, queue: ReviewQueue, settings: ReviewFeedSettings | None = None) -> None:
        self.queue = queue
        self.settings = settings or ReviewFeedSettings()
        self._stop = threading.Event()
        s = self.settings
        self._kafka_backoff = Backoff(s.retry_backoff_ms / 1000, s.retry_backoff_max_ms / 1000, s.retry_timeout_s)
        self._db_backoff = Backoff(s.retry_backoff_ms / 1000, s.db_backoff_max_s, float("inf"))
        self.summary = FeedSummary()

    def stop(self) -> None:
        """Ask `run()` to finish its batch, commit and return. Thread-safe, idempotent."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, idle_exit_s: float | None = None, handle_signals: bool = True) -> FeedSummary:
        """Feed the queue until `stop()`, SIGTERM/SIGINT, or `idle_exit_s` without a message. Raises `StreamError`
        (`DeliveryError`) when dead letters cannot be delivered, a `KafkaError` when the broker stays unreachable
        past `retry_timeout_s`; offsets of unfinished work are never committed."""
        with stop_on_signals(self.stop, enabled=handle_signals):
            if self._connect_db():  # False: stopped while waiting for the database
                self._consume(idle_exit_s)
        log_event(_log, logging.INFO, "review feed stopped", **vars(self.summary))
        return self.summary

    def _consume(self, idle_exit_s: float | None) -> None:
        s = self.settings
        stream = s.stream_settings()
        if s.create_topics:
            ensure_topics(stream, backoff=self._kafka_backoff)
        consumer = retry_transient(
            lambda: clients.consumer(stream), backoff=self._kafka_backoff, what="consumer connect"
        )
        try:
            producer = retry_transient(
                lambda: clients.producer(stream), backoff=self._kafka_backoff, what="producer connect"
            )
            try:
                consumer.subscribe([s.topic])
                log_event(_log, logging.INFO, "review feed started", topic=s.topic, group=s.group_id)
                self._loop(consumer, producer, idle_exit_s)
            finally:
                producer.close(timeout=s.shutdown_timeout_s)
        finally:
            consumer.close(autocommit=False)

    def _connect_db(self) -> bool:
        """Connect to (and migrate) the database, retrying with backoff while it is unavailable; False when a
        stop came first."""
        attempt = 0
        while not self._stop.is_set():
            try:
                self.queue.connect()
                return True
            except self.queue.unavailable as exc:
                wait = self._db_wait(attempt)
                log_event(
                    _log, logging.ERROR, "review database unavailable; retrying", error=str(exc), wait_s=round(wait, 2)
                )
                self._stop.wait(wait)
                attempt += 1
        return False

    def _db_wait(self, attempt: int) -> float:
        # at least the first step (full jitter alone could retry a dead database in a tight loop); the exponent is
        # capped, so an outage of any length never overflows the float
        return max(self._db_backoff.initial_s, self._db_backoff.delay(min(attempt, 32)))

    def _loop(self, consumer: KafkaConsumer, producer: KafkaProducer, idle_exit_s: float | None) -> None:
        last = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=_POLL_MS, max_records=self.settings.batch_size)
            batch = Batch([record for records in polled.values() for record in records])
            if not batch:
                if idle_exit_s is not None and time.monotonic() - last >= idle_exit_s:
                    self.summary.stopped_by = "idle"
                    return
                continue
            last = time.monotonic()
            if self._handle(batch, consumer, producer):
                failures = 0
                continue
            failures += 1
            self.summary.db_retries += 1
            self._rewind(consumer, batch)
            self._pause(consumer, self._db_wait(failures - 1))

    def _handle(self, batch: Batch, consumer: KafkaConsumer, producer: KafkaProducer) -> bool:
        """Write, dead-letter and commit one batch; False (nothing committed) when the database failed."""
        s = self.settings
        items: list[ReviewItem] = []
        dead: list[OutRecord] = []
        skipped = 0
        for record in batch:
            decoded = decode_review_item(record.value, max_bytes=s.max_message_bytes, key=record.key)
            if isinstance(decoded, Rejection):
                dead.append(dead_letter_record(s.dlq_topic, record, decoded))
            elif decoded.result.action not in s.actions:
                skipped += 1
            else:
                items.append(decoded)
        try:
            new = self._write(items)
        except self.queue.unavailable as exc:
            log_event(
                _log,
                logging.ERROR,
                "review database unavailable; the batch is not committed and will be retried",
                error=str(exc),
                messages=len(batch),
            )
            return False
        self._dead_letters(producer, dead)
        self._commit(consumer, batch)
        self.summary.messages += len(batch)
        self.summary.queued += new
        self.summary.already_queued += len(items) - new
        self.summary.dead_letters += len(dead)
        self.summary.skipped += skipped
        self.summary.batches += 1
        if dead:
            log_event(
                _log, logging.WARNING, "messages sent to the dead-letter topic", count=len(dead), topic=s.dlq_topic
            )
        return True

    def _write(self, items: Sequence[ReviewItem]) -> int:
        """Queue the items in one transaction; returns the rows that were new."""
        if not items:
            return 0
        return self.queue.write(
            [item.note for item in items],
            [item.result for item in items],
            policy=self.settings.policy,
            actions=self.settings.actions,
        )

    def _dead_letters(self, producer: KafkaProducer, records: Sequence[OutRecord]) -> None:
        """Produce the dead letters and wait for the broker's acknowledgements (before any offset commit)."""
        if not records:
            return
        futures = [
            retry_transient(lambda r=r: send(producer, r), backoff=self._kafka_backoff, what="dead letter send")
            for r in records
        ]
        producer.flush(timeout=self.settings.retry_timeout_s)
        failed = [f.exception for f in futures if not f.succeeded()]
        if failed:
            raise DeliveryError(f"could not produce {len(failed)} dead letter(s) to {self.settings.dlq_topic}: "
                                f"{failed[0]!r}")  # fmt: skip

    def _commit(self, consumer: KafkaConsumer, batch: Batch) -> None:
        """Commit the batch's offsets for the partitions this member still owns (a revoked one is redone by its
        new owner, harmlessly: the rows exist)."""
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in batch.next_offsets().items() if tp in assigned}
        if not offsets:
            return
        try:
            retry_transient(lambda: consumer.commit(commit_map(offsets)), backoff=self._kafka_backoff, what="commit")
        except _LOST_OWNERSHIP as exc:
            log_event(
                _log, logging.WARNING, "offset commit refused: the group moved on; the batch is redone", error=repr(exc)
            )

    @staticmethod
    def _rewind(consumer: KafkaConsumer, batch: Batch) -> None:
        """Seek back to the batch's first offsets, so the next poll delivers it again."""
        assigned = consumer.assignment()
        for tp, offset in batch.first_offsets().items():
            if tp in assigned:
                consumer.seek(tp, offset)

    def _pause(self, consumer: KafkaConsumer, seconds: float) -> None:
        """Wait `seconds` (or until a stop) while staying in the group: poll with every partition paused, and seek
        back anything a rebalance hands over meanwhile, so nothing is skipped."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            consumer.pause(*consumer.assignment())
            remaining_ms = int(max(1.0, (deadline - time.monotonic()) * 1000))
            polled: dict[TopicPartition, list[Any]] = consumer.poll(timeout_ms=min(_POLL_MS, remaining_ms))
            for tp, records in polled.items():
                consumer.seek(tp, records[0].offset)
        consumer.resume(*consumer.paused())
