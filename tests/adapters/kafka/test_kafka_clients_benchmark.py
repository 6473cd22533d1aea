"""`python -m benchmarks.kafka_clients` drains a small backlog with each client: the output's structure, never
its speed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]


def test_every_client_is_measured_or_shown_unavailable(
    kafka_bootstrap: str, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    results = run_benchmark(
        "kafka_clients", "--bootstrap", kafka_bootstrap, "--notes", "400", "--batch-size", "32", "--rounds", "1"
    )
    assert results["notes"] == 400
    runs = {row["client"]: row for row in results["runs"]}
    assert set(runs) == {"kafka-python", "confluent-kafka"}
    measured = runs["kafka-python"]  # the adapter's own client is always installed with the kafka extra
    assert measured["notes"] == 400
    assert measured["notes_per_s"] > 0 and measured["client_cpu_us_per_note"] > 0
    assert measured["local_broker_cpu_us_per_note"] is None or measured["local_broker_cpu_us_per_note"] >= 0
    other = runs["confluent-kafka"]
    assert ("unavailable" in other) != ("notes_per_s" in other)
    if "notes_per_s" in other:
        assert other["notes"] == 400 and other["client_cpu_us_per_note"] > 0
    assert results["bundle"] is None and all("ratio" not in row for row in results["runs"])


def test_with_a_bundle_each_drain_gets_its_ratio_to_classify_batch_alone(
    tiny_bundle: Path, kafka_bootstrap: str, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    results = run_benchmark(
        "kafka_clients",
        "--bootstrap",
        kafka_bootstrap,
        "--bundle",
        str(tiny_bundle),
        "--notes",
        "300",
        "--batch-size",
        "32",
        "--rounds",
        "1",
        "--clients",
        "kafka-python",
    )
    (run,) = results["runs"]
    assert results["bundle"] == str(tiny_bundle) and run["notes"] == 300
    assert run["classify_batch_notes_per_s"] > 0
    assert run["ratio"] == pytest.approx(run["notes_per_s"] / run["classify_batch_notes_per_s"], abs=2e-3)


def test_an_unknown_client_is_refused(kafka_bootstrap: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.kafka_clients", "--bootstrap", kafka_bootstrap, "--clients", "pykafka"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown clients ['pykafka']" in done.stderr
