"""The stream's Prometheus metrics: throughput, batch latency, dead letters, consumer lag, retries, rebalances."""

from __future__ import annotations

import threading
import time

from .prometheus import Counter, Gauge, Histogram, Registry

__all__ = ["StreamMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RATE_WINDOW_S = 5.0


class StreamMetrics:
    """All metrics of one stream, registered in their own `Registry` (or a shared one)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        p = "redone_stream_"
        self.messages = Counter(p + "messages_total", "Messages consumed from the input topic.")
        self.verdicts = Counter(p + "verdicts_total", "Verdicts produced, by action.", ["action"])
        self.review = Counter(p + "review_total", "Notes copied to the review topic.")
        self.dead_letters = Counter(p + "dead_letters_total", "Messages sent to the dead-letter topic.", ["reason"])
        self.skipped = Counter(p + "skipped_total", "Records skipped by the error callback, by stage.", ["stage"])
        self.batches = Counter(p + "batches_total", "Micro-batches done (outputs acknowledged, offsets committed).")
        self.aborted = Counter(p + "aborted_batches_total", "Batches aborted and redone (exactly-once).")
        self.retries = Counter(p + "retries_total", "Retries after transient Kafka errors.")
        self.rebalances = Counter(p + "rebalances_total", "Partition revocations seen by this consumer.")
        self.dropped = Counter(
            p + "dropped_batches_total",
            "Classified batches dropped because their partitions were revoked meanwhile (their owner redoes them).",
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds", "From a batch's first message polled to its offsets committed.", _LATENCY_BUCKETS
        )
        self.classify_seconds = Histogram(p + "classify_seconds", "Time in classify_batch per batch.", _LATENCY_BUCKETS)
        self.notes_per_second = Gauge(p + "notes_per_second", f"Messages handled per second over ~{_RATE_WINDOW_S:g}s.")
        self.lag = Gauge(
            p + "consumer_lag", "Messages behind the partition's end after the last batch.", ["topic", "partition"]
        )
        self.assigned = Gauge(p + "assigned_partitions", "Input partitions assigned to this consumer.")
        for metric in list(vars(self).values()):  # every metric attribute above, in definition order
            if isinstance(metric, (Counter, Gauge, Histogram)):
                self.registry.register(metric)
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._window_count = 0.0

    def batch_done(self, messages: int) -> None:
        """Count a finished batch's messages and refresh the notes/s gauge once per window."""
        self.batches.inc()
        self.messages.inc(messages)
        self._tick(messages)

    def idle(self) -> None:
        """Called when a poll brought nothing: lets the notes/s gauge fall to zero."""
        self._tick(0)

    def _tick(self, messages: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._window_count += messages
            elapsed = now - self._window_start
            if elapsed >= _RATE_WINDOW_S:
                self.notes_per_second.set(self._window_count / elapsed)
                self._window_start, self._window_count = now, 0.0
