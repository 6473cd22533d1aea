"""The service's Prometheus metrics (prometheus_client, one registry per app): requests, latency, batches,
queue depth and errors by kind."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Every metric of one app, in its own registry (two apps in one process do not mix their counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        p, r = "redone_serve_", self.registry
        self.requests = Counter(
            p + "requests", "HTTP requests answered, by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            p + "request_seconds", "From request received to response started, by route.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter(p + "errors", "Error answers by kind (the error body's code).", ["kind"], registry=r)
        self.notes = Counter(p + "notes", "Notes classified, by action.", ["action"], registry=r)
        self.batch_notes = Histogram(
            p + "batch_notes", "Notes per classify pass (dynamic batching).", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            p + "batch_requests", "Requests gathered into one classify pass.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds", "Time in classify_batch per pass.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_notes = Gauge(p + "queue_notes", "Notes waiting for or in a classify pass.", registry=r)
        self.passes_in_flight = Gauge(
            p + "passes_in_flight", "Gathered classify passes running now (at most --max-passes).", registry=r
        )
        self.in_flight = Gauge(p + "in_flight_requests", "Requests being handled now.", registry=r)
        self.disconnects = Counter(
            p + "client_disconnects", "Requests whose client went away before the answer.", registry=r
        )
        self.skipped_notes = Counter(
            p + "skipped_notes", "Queued notes not classified because their request was gone.", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
