"""`scripts/kafka-broker`: status reports the running broker and start is idempotent (and fast on re-runs)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "kafka-broker"


def test_script_parses_and_prints_usage() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    usage = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    for command in ("start", "stop", "status", "KAFKA_PORT", "KAFKA_WORK"):
        assert command in usage
    wrong = subprocess.run([str(SCRIPT), "bogus"], capture_output=True, text=True, timeout=30, check=False)
    assert wrong.returncode == 2


def test_status_is_zero_and_start_is_idempotent(kafka_broker) -> None:
    status = kafka_broker.script("status", timeout=30)
    assert status.returncode == 0 and status.stdout.startswith("running:")
    started = time.monotonic()
    again = kafka_broker.script("start", timeout=60)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 10, "a second start must not fetch or launch anything"
    assert "already running" in again.stderr or "already answers" in again.stderr
    assert kafka_broker.script("status", timeout=30).returncode == 0
