"""`ModerationStream`: the Kafka adapter's facade. Consume notes, classify them in micro-batches, produce verdicts.

    from redone_sdk import Moderator
    from redone_sdk.adapters.kafka import ModerationStream, StreamSettings

    stream = ModerationStream(classifier=Moderator.load(), settings=StreamSettings(bootstrap="127.0.0.1:9092"))
    stream.run()  # until SIGTERM/SIGINT or stream.stop()

The loop: poll a batch (while a worker thread decodes and classifies the batch before) → hand it to the worker →
complete the batch before last (acknowledgements, then offsets) → submit the outputs of the batch just
classified → poll again. The model is never idle while this thread polls and delivers; at most one batch is
classified ahead and one is sent but uncommitted. Under exactly-once each batch is one transaction, classified
and completed before the next poll. Scaling out is running
more processes with the same group id: Kafka splits the input partitions between them.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.errors import IllegalStateError, KafkaError

from redone_sdk.inference.options import InferenceOptions

from . import clients
from .admin import ensure_topics, topic_limits
from .at_least_once import AtLeastOnceSink
from .batch import Batch, BatchCollector
from .errors import DeliveryError, ErrorCallback, default_on_error
from .exactly_once import ExactlyOnceSink
from .logs import log_event
from .metrics import StreamMetrics
from .process import BatchClassifier, BatchProcessor, ProcessedBatch
from .prometheus import MetricsServer
from .rebalance import RebalanceHandler
from .retry import Backoff, retry_transient
from .settings import StreamSettings
from .shutdown import ShutdownClock, stop_on_signals
from .sink import Delivery, Sink

__all__ = ["ModerationStream", "RunSummary"]

_log = logging.getLogger("redone_sdk.adapters.kafka")

StopReason = Literal["stopped", "idle", "max_messages"]

_IDLE_CHECK_MS = 5_000  # bound of the end-offsets request when checking that nothing assigned is waiting
_POSITION_CHECK_MS = 500
_IDLE_LOG_EVERY_S = 10.0
_CLOSE_TIMEOUT_S = 30.0  # leaving the group when no stop deadline applies (kafka-python's request timeout)


def _always_ready() -> bool:
    return True


@dataclass(frozen=True)
class RunSummary:
    """What one `run()` did."""

    messages: int
    verdicts: int
    review: int
    dead_letters: int
    batches: int
    aborted_batches: int
    elapsed_s: float
    stopped_by: StopReason


class ModerationStream:
    """Moderates a Kafka topic of notes with any `BatchClassifier` (e.g. `redone_sdk.Moderator`).

    `on_error(error, context) -> bool` decides, for a note the classifier fails on (or an output that cannot
    be produced), whether to skip it (True: dead letter / logged and counted) or stop the stream (False).
    The classifier (and `on_error` for its failures) runs on the stream's worker thread, one batch at a time
    (under exactly-once, on the thread that called `run`).
    """

    def __init__(
        self,
        *,
        classifier: BatchClassifier,
        settings: StreamSettings | None = None,
        on_error: ErrorCallback | None = None,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self._classifier = classifier
        self._settings = settings or StreamSettings.from_env()
        self._on_error = on_error or default_on_error
        self._metrics = metrics or StreamMetrics()
        self._stop = threading.Event()
        self._clock = ShutdownClock(self._settings.shutdown_timeout_s)
        self._started = False
        self._metrics_port: int | None = None
        self._idle_logged = 0.0  # when "idle, but work is waiting" was last logged (monotonic)

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path | None = None,
        *,
        settings: StreamSettings | None = None,
        policy: str | Path | None = None,
        options: InferenceOptions | None = None,
        on_error: ErrorCallback | None = None,
        digest: str | None = None,
        public_key: Any = None,
        **option_fields: Any,
    ) -> ModerationStream:
        """A stream around `Moderator.load(bundle, options=...)` (`None`: the bundle shipped with the SDK);
        `policy` is a policy JSON file replacing the bundle's own. Keywords such as `workers=` or
        `allow_spinning=False` (idle ONNX Runtime threads sleep between batches, leaving the cores to the Kafka
        client threads) replace those fields of `options`, as in `Moderator.load`; `digest` and `public_key` pin
        the bundle as there (docs/bundles.md)."""
        from redone_sdk import Moderator  # heavy (ONNX Runtime): only when asked for

        moderator = Moderator.load(
            bundle,
            policy=policy,
            options=InferenceOptions.build(options, **option_fields),
            digest=digest,
            public_key=public_key,
        )
        return cls(classifier=moderator, settings=settings, on_error=on_error)

    @property
    def settings(self) -> StreamSettings:
        return self._settings

    @property
    def metrics(self) -> StreamMetrics:
        return self._metrics

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is served on while running (useful with `metrics_port=0`)."""
        return self._metrics_port

    def stop(self) -> None:
        """Ask `run()` to finish its current batch, commit, close and return within `shutdown_timeout_s`
        (else it raises `ShutdownTimeoutError`, that batch uncommitted). Thread-safe, idempotent."""
        self._clock.start()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop.is_set()

    def run(
        self,
        *,
        idle_exit_s: float | None = None,
        max_messages: int | None = None,
        handle_signals: bool = True,
    ) -> RunSummary:
        """Process until `stop()`, SIGTERM/SIGINT, `max_messages` handled, or `idle_exit_s` without a message
        (counted from the last message or partition assignment, so a member waiting to join does not quit) once
        nothing is waiting in the partitions assigned to it (each one's position has reached its end).

        Raises `FencedError` when another instance takes over this one's transactional.id,
        `ShutdownTimeoutError` when a stop could not finish the batch in work within `shutdown_timeout_s`,
        `StreamError` when the stream cannot go on; offsets of unfinished work are never committed, so a
        restart loses nothing.
        A stream runs once: build another to run again.
        """
        if self._started:
            raise RuntimeError("a ModerationStream runs once; build a new one")
        self._started = True
        s = self._settings
        backoff = Backoff(s.retry_backoff_ms / 1000, s.retry_backoff_max_ms / 1000, s.retry_timeout_s)
        totals = _Totals(started=time.monotonic())
        if s.create_topics:
            ensure_topics(s, backoff=backoff)
        limits = topic_limits(s, backoff=backoff)
        with ExitStack() as cleanup:  # closes in reverse: producer, consumer (leaves the group), metrics server
            if s.metrics_port is not None:
                server = MetricsServer(self._metrics.registry, host=s.metrics_host, port=s.metrics_port).start()
                cleanup.callback(server.stop)
                self._metrics_port = server.port
            consumer = retry_transient(lambda: clients.consumer(s), backoff=backoff, what="consumer connect")
            # Leaving the group is bounded too: by what is left of the shutdown time once a stop was asked for.
            cleanup.callback(lambda: consumer.close(autocommit=False, timeout_ms=self._close_timeout_ms()))
            producer = retry_transient(lambda: clients.producer(s), backoff=backoff, what="producer connect")
            sink: Sink
            if s.exactly_once:
                sink = ExactlyOnceSink(
                    producer,
                    consumer,
                    transactional_id=s.effective_transactional_id,
                    backoff=backoff,
                    metrics=self._metrics,
                    clock=self._clock,
                )
            else:
                sink = AtLeastOnceSink(
                    producer,
                    consumer,
                    backoff=backoff,
                    on_error=self._on_error,
                    metrics=self._metrics,
                    clock=self._clock,
                )
            cleanup.callback(sink.close)
            collector = BatchCollector(consumer, batch_size=s.batch_size, max_wait_s=s.max_wait_ms / 1000)
            processor = BatchProcessor(
                self._classifier, s, on_error=self._on_error, metrics=self._metrics, topic_limits=limits
            )
            rebalance = RebalanceHandler(consumer, collector, sink, self._metrics)
            cleanup.enter_context(stop_on_signals(self.stop, enabled=handle_signals))
            sink.start()
            consumer.subscribe(topics=[s.input_topic], listener=rebalance)
            log_event(
                _log,
                logging.INFO,
                "stream started",
                input=s.input_topic,
                output=s.output_topic,
                review=s.review_topic,
                dlq=s.dlq_topic,
                group=s.group_id,
                guarantee=s.guarantee,
                batch_size=s.batch_size,
                max_wait_ms=s.max_wait_ms,
                metrics_port=self._metrics_port,
            )
            reason = self._loop(
                consumer,
                collector,
                processor,
                sink,
                rebalance,
                backoff,
                totals,
                idle_exit_s=idle_exit_s,
                max_messages=max_messages,
                worker=cleanup.enter_context(ThreadPoolExecutor(1, thread_name_prefix="redone-classify")),
            )
        summary = totals.summary(reason)
        log_event(_log, logging.INFO, "stream stopped", **summary.__dict__)
        return summary

    def _loop(
        self,
        consumer: KafkaConsumer,
        collector: BatchCollector,
        processor: BatchProcessor,
        sink: Sink,
        rebalance: RebalanceHandler,
        backoff: Backoff,
        totals: _Totals,
        *,
        idle_exit_s: float | None,
        max_messages: int | None,
        worker: ThreadPoolExecutor,
    ) -> StopReason:
        """Poll a batch while the worker classifies the one before → hand the new batch to the worker →
        complete the batch before last (acknowledgements, offsets) and submit the one just classified, all while
        the worker classifies. At most one batch is classified ahead and one is sent-but-uncommitted.
        Exactly-once classifies, submits and completes each batch (one transaction) before the next poll."""
        last_activity: float | None = None  # the idle clock starts once the group gave this member its share
        in_flight: _InFlight | None = None
        classifying: _Classifying | None = None
        while not self._stop.is_set():
            # With work to deliver (a batch in classification, or one sent but uncommitted), poll briefly.
            pending = _always_ready if in_flight is not None else None
            if classifying is not None:
                pending = classifying.work.done
            batch = collector.collect(self._stop, ready=pending)
            if batch is None and classifying is None:
                if in_flight is not None:
                    self._finish(consumer, sink, in_flight, backoff, totals)
                    in_flight = None
                    if max_messages is not None and totals.messages >= max_messages:
                        break
                self._metrics.idle()
                since = max(last_activity or 0.0, rebalance.joined_at or 0.0)
                idle = idle_exit_s is not None and since and time.monotonic() - since >= idle_exit_s
                if idle and not self._work_waiting(consumer):
                    return "idle"
                continue
            if batch is not None:
                last_activity = time.monotonic()
                # Pause the assigned partitions until the next poll: nothing more is fetched meanwhile.
                consumer.pause(*consumer.assignment())
            try:
                done = None
                if classifying is not None:
                    done = self._classified(rebalance, classifying, following=batch)
                    classifying = None
                    if batch is not None and not batch.records:  # all of it rewound with the dropped batch
                        batch = None
                if batch is not None and sink.pipelined:
                    work = worker.submit(processor.process, batch.records)
                    classifying = _Classifying(batch, work, rebalance.revocations)
                elif batch is not None:
                    done = batch, processor.process(batch.records)
                if done is not None:
                    in_flight = self._deliver(consumer, sink, in_flight, done, backoff, totals)
                    if not sink.pipelined:
                        self._finish(consumer, sink, in_flight, backoff, totals)
                        in_flight = None
            finally:
                consumer.resume(*(consumer.paused() & consumer.assignment()))
            if max_messages is not None and totals.messages >= max_messages:
                break
        # A graceful stop completes the batches in work (a crash would redo them).
        if classifying is not None:
            done = self._classified(rebalance, classifying, following=None)
            if done is not None:
                in_flight = self._deliver(consumer, sink, in_flight, done, backoff, totals)
        if in_flight is not None:
            self._finish(consumer, sink, in_flight, backoff, totals)
        return "max_messages" if max_messages is not None and totals.messages >= max_messages else "stopped"

    def _work_waiting(self, consumer: KafkaConsumer) -> bool:
        """True unless every assigned partition's position is known and at its end (the last stable offset
        under read_committed). A partition whose committed offset is held by another process's open
        transaction (it was killed with -9) has no position until the broker aborts that transaction."""
        assigned = consumer.assignment()
        if not assigned:
            return False
        waiting: dict[str, object] = {}
        try:
            ends = consumer.end_offsets(list(assigned), timeout_ms=_IDLE_CHECK_MS)
            for tp in sorted(assigned):
                # Short: an unknown position stays unknown while a dead process's transaction holds it.
                position = consumer.position(tp, timeout_ms=_POSITION_CHECK_MS)
                if position is None or position < ends.get(tp, 0):
                    waiting[f"{tp.topic}[{tp.partition}]"] = {"position": position, "end": ends.get(tp)}
                    break  # one is enough: poll again
        except KafkaError as exc:  # the broker cannot say: assume work is waiting
            waiting["error"] = repr(exc)
        if waiting and time.monotonic() - self._idle_logged >= _IDLE_LOG_EVERY_S:
            self._idle_logged = time.monotonic()
            log_event(_log, logging.INFO, "idle, but assigned partitions still have work; not exiting", **waiting)
        return bool(waiting)

    def _close_timeout_ms(self) -> int:
        return max(1, int(self._clock.remaining(_CLOSE_TIMEOUT_S) * 1000))

    def _deliver(
        self,
        consumer: KafkaConsumer,
        sink: Sink,
        in_flight: _InFlight | None,
        done: tuple[Batch, ProcessedBatch],
        backoff: Backoff,
        totals: _Totals,
    ) -> _InFlight:
        """Complete the batch in flight (acknowledgements, offsets), then submit `done`'s outputs: never two
        batches sent but uncommitted."""
        if in_flight is not None:
            self._finish(consumer, sink, in_flight, backoff, totals)
        batch, processed = done
        return _InFlight(sink.submit(batch, processed.records), processed)

    def _classified(
        self,
        rebalance: RebalanceHandler,
        classifying: _Classifying,
        *,
        following: Batch | None,
    ) -> tuple[Batch, ProcessedBatch] | None:
        """The batch and its outputs once the worker is done; None when some of its partitions were revoked
        meanwhile: the batch is dropped. Its partitions that this member holds (never revoked, or given back
        with their position kept, maybe later in a rebalance still in progress) go back to its first records,
        and the records of its partitions polled since (`following`) are dropped too; the other partitions'
        owners read them from the committed offset."""
        processed = classifying.work.result()
        batch = classifying.batch
        revoked = rebalance.revoked_since(classifying.revocations)
        if not revoked & batch.partitions():
            return batch, processed
        rebalance.rewind(batch.first_offsets())
        if following is not None:
            following.drop(batch.partitions())
        self._metrics.dropped.inc()
        log_event(
            _log,
            logging.INFO,
            "batch dropped: its partitions were revoked while it was classified",
            messages=len(batch),
            partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked & batch.partitions()),
        )
        return None

    def _finish(
        self, consumer: KafkaConsumer, sink: Sink, in_flight: _InFlight, backoff: Backoff, totals: _Totals
    ) -> None:
        """Complete a submitted batch; count it, or back off before its records come round again."""
        batch = in_flight.delivery.batch
        if sink.complete(in_flight.delivery):
            totals.failing_since = None
            totals.add(batch, in_flight.processed)
            self._record(consumer, batch, in_flight.processed)
            return
        totals.aborted += 1
        totals.failing_since = totals.failing_since or time.monotonic()
        if time.monotonic() - totals.failing_since > backoff.timeout_s:
            raise DeliveryError(f"batches kept failing for {backoff.timeout_s:.0f}s; giving up")
        delay = backoff.delay(min(totals.aborted, 16))
        time.sleep(self._clock.remaining(delay))

    def _record(self, consumer: KafkaConsumer, batch: Batch, processed: ProcessedBatch) -> None:
        m = self._metrics
        for action, count in collections.Counter(result.action for result in processed.verdicts).items():
            m.verdicts.inc(count, action=action)
        m.review.inc(processed.review)
        for reason, count in collections.Counter(rejection.reason for rejection in processed.rejections).items():
            m.dead_letters.inc(count, reason=reason)
        m.batch_done(len(batch))
        m.batch_seconds.observe(time.monotonic() - batch.started)
        for tp, next_offset in batch.next_offsets().items():
            try:
                highwater = consumer.highwater(tp)
            except IllegalStateError:  # the partition was lost meanwhile: no lag to report for it
                continue
            if highwater is not None:
                m.lag.set(max(0, highwater - next_offset), topic=tp.topic, partition=str(tp.partition))
        if processed.rejections:
            log_event(
                _log,
                logging.INFO,
                "dead letters",
                count=len(processed.rejections),
                reasons=sorted({r.reason for r in processed.rejections}),
            )
        log_event(
            _log,
            logging.DEBUG,
            "batch done",
            messages=len(batch),
            verdicts=len(processed.verdicts),
            review=processed.review,
            dead_letters=len(processed.rejections),
        )


@dataclass(frozen=True)
class _Classifying:
    batch: Batch
    work: Future[ProcessedBatch]
    revocations: int  # `RebalanceHandler.revocations` when the batch was handed to the worker


@dataclass(frozen=True)
class _InFlight:
    delivery: Delivery
    processed: ProcessedBatch


@dataclass
class _Totals:
    started: float
    failing_since: float | None = None
    messages: int = 0
    verdicts: int = 0
    review: int = 0
    dead_letters: int = 0
    batches: int = 0
    aborted: int = 0

    def add(self, batch: Batch, processed: ProcessedBatch) -> None:
        self.messages += len(batch)
        self.verdicts += len(processed.verdicts)
        self.review += processed.review
        self.dead_letters += len(processed.rejections)
        self.batches += 1

    def summary(self, reason: StopReason) -> RunSummary:
        return RunSummary(
            messages=self.messages,
            verdicts=self.verdicts,
            review=self.review,
            dead_letters=self.dead_letters,
            batches=self.batches,
            aborted_batches=self.aborted,
            elapsed_s=round(time.monotonic() - self.started, 3),
            stopped_by=reason,
        )
