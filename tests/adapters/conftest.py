"""A real Apache Kafka broker for the adapter tests.

Uses the broker at $KAFKA_BOOTSTRAP (default 127.0.0.1:$KAFKA_PORT, port 9092) when one answers; otherwise
starts one with `scripts/kafka-broker start` and stops it after the session. No Kafka mocks anywhere.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

REPO = Path(__file__).resolve().parents[2]
BROKER_SCRIPT = REPO / "scripts" / "kafka-broker"


def _bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"


def broker_answers(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when a Kafka broker answers a metadata request at `bootstrap`."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms + 1000
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


@dataclass(frozen=True)
class Broker:
    """The test broker; `managed` when `scripts/kafka-broker` controls it (needed to stop and restart it)."""

    bootstrap: str
    port: str
    managed: bool

    def script(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BROKER_SCRIPT), command],
            env={**os.environ, "KAFKA_PORT": self.port},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        result = self.script("stop")
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        result = self.script("start")
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    bootstrap = _bootstrap()
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    started = False
    if not broker_answers(bootstrap):
        if host not in ("127.0.0.1", "localhost"):
            pytest.fail(f"no Kafka broker answers at {bootstrap}")
        broker = Broker(bootstrap, port, managed=True)
        result = broker.script("start")
        if result.returncode != 0:
            pytest.fail(f"scripts/kafka-broker start failed:\n{result.stderr[-4000:]}")
        started = True
    status = Broker(bootstrap, port, managed=False).script("status", timeout=30)
    broker = Broker(bootstrap, port, managed=status.returncode == 0 and "(pid" in status.stdout)
    yield broker
    if started:
        broker.script("stop")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    return kafka_broker.bootstrap
