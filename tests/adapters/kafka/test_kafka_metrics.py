"""The dependency-free Prometheus exporter and the stream's metric set (no broker needed)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from redone_sdk.adapters.kafka import StreamMetrics
from redone_sdk.adapters.kafka.prometheus import Counter, Gauge, Histogram, MetricsServer, Registry


def test_text_exposition_format() -> None:
    registry = Registry()
    hits = Counter("app_hits_total", "Hits.", ["route"])
    depth = Gauge("app_depth", "Depth.")
    latency = Histogram("app_seconds", "Latency.", [0.1, 1.0])
    for metric in (hits, depth, latency):
        registry.register(metric)
    hits.inc(route="/a")
    hits.inc(2, route='/b"q')
    depth.set(3.5)
    latency.observe(0.05)
    latency.observe(0.5)
    latency.observe(5)
    text = registry.render()
    assert "# TYPE app_hits_total counter\n" in text
    assert 'app_hits_total{route="/a"} 1\n' in text
    assert 'app_hits_total{route="/b\\"q"} 2\n' in text
    assert "app_depth 3.5\n" in text
    assert 'app_seconds_bucket{le="0.1"} 1\n' in text
    assert 'app_seconds_bucket{le="1"} 2\n' in text
    assert 'app_seconds_bucket{le="+Inf"} 3\n' in text
    assert "app_seconds_count 3\n" in text and "app_seconds_sum 5.55\n" in text
    with pytest.raises(ValueError):
        hits.inc(route="/a", extra="x")
    with pytest.raises(ValueError):
        hits.inc(-1, route="/a")
    with pytest.raises(ValueError):
        registry.register(Counter("app_hits_total", "again"))


def test_metrics_server_serves_the_stream_metrics() -> None:
    metrics = StreamMetrics()
    metrics.verdicts.inc(action="block")
    metrics.dead_letters.inc(reason="not_json")
    metrics.batch_done(10)
    server = MetricsServer(metrics.registry, port=0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = response.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
    finally:
        server.stop()
    assert 'redone_stream_verdicts_total{action="block"} 1' in body
    assert 'redone_stream_dead_letters_total{reason="not_json"} 1' in body
    assert "redone_stream_messages_total 10" in body
    for name in ("notes_per_second", "batch_seconds_bucket", "consumer_lag", "retries_total", "rebalances_total"):
        assert f"# HELP redone_stream_{name.removesuffix('_bucket')}" in body
