"""`python -m benchmarks.kafka_e2e` runs end to end on a small sample: the output's structure, never its speed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kafka


def test_benchmark_reports_ratio_and_latency(
    tiny_bundle: Path, kafka_bootstrap: str, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    results = run_benchmark(
        "kafka_e2e",
        "--bundle",
        str(tiny_bundle),
        "--bootstrap",
        kafka_bootstrap,
        "--notes",
        "300",
        "--batch-size",
        "32",  # several batches from 300 notes: the rate is measured from the first batch to the last
        "--latency-rate",
        "50",
        "--latency-seconds",
        "2",
        "--threads",
        "1",
        "--drains",
        "2",
    )
    assert results["notes"] == 300
    # two drains, each between two baselines; the headline figures are those of the median drain
    assert [d["drain"] for d in results["drains"]] == [1, 2]
    assert results["ratio_drains"] == [d["ratio"] for d in results["drains"]]
    median = sorted(results["drains"], key=lambda d: d["ratio"])[0]  # of an even count, the lower
    assert results["median_drain"] == median["drain"] and results["ratio"] == median["ratio"]
    assert (
        results["drains"][0]["classify_batch_before_after"][1] == results["drains"][1]["classify_batch_before_after"][0]
    )
    assert results["classify_batch_notes_per_s"] > 0 and results["kafka_e2e_notes_per_s"] > 0
    assert results["ratio"] == pytest.approx(
        results["kafka_e2e_notes_per_s"] / results["classify_batch_notes_per_s"], rel=0.01, abs=1e-3
    )
    # where the ratio comes from: cores kept busy x CPU per note, both read from the processes themselves
    assert results["classify_batch_cpu_us_per_note"] > 0 and results["stream_cpu_us_per_note"] > 0
    assert results["kafka_cpu_us_per_note"] == pytest.approx(
        results["stream_cpu_us_per_note"] - results["classify_batch_cpu_us_per_note"], abs=0.2
    )
    assert results["ratio_from_cores"] * results["ratio_from_cpu_per_note"] == pytest.approx(results["ratio"], rel=0.02)
    # the broker runs on this machine in the tests: its CPU over the drain is read too
    assert results["local_broker_cores"] is not None and results["local_broker_cores"] >= 0
    assert results["latency_rate_achieved_notes_per_s"] > 0
    assert results["latency_samples"] >= 90
    assert 0 < results["latency_p50_ms"] <= results["latency_p99_ms"]
