"""The stream's JSON logs: kafka-python's repeated warnings are held back, the adapter's own events never (no
broker needed)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from redone_sdk.adapters.kafka.logs import RepeatFilter, configure_json_logging, log_event


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_kafka_warning_passes_once_per_window_then_says_how_many_were_held() -> None:
    clock = _Clock()
    gate = RepeatFilter(window_s=30, clock=clock)
    passed = []
    for _ in range(50):  # a broker down: ten a second for five seconds
        passed.append(gate.filter(_record("kafka.cluster", "No node available for metadata refresh - backoff/retry")))
        clock.now += 0.1
    assert passed.count(True) == 1 and passed[0]
    clock.now += 30
    later = _record("kafka.cluster", "No node available for metadata refresh - backoff/retry")
    assert gate.filter(later)
    assert later.fields == {"repeated": 49}  # type: ignore[attr-defined]
    clock.now += 31
    quiet = _record("kafka.cluster", "No node available for metadata refresh - backoff/retry")
    assert gate.filter(quiet) and not hasattr(quiet, "fields"), "nothing was held back in the last window"


def test_the_key_is_the_template_logger_and_level_not_the_arguments() -> None:
    gate = RepeatFilter(clock=_Clock())
    assert gate.filter(_record("kafka.net.connection", "%s: Connection lost: %s", "node 1", "refused"))
    assert not gate.filter(_record("kafka.net.connection", "%s: Connection lost: %s", "node 2", "reset"))
    assert gate.filter(_record("kafka.net.connection", "%s: Connection lost: %s", "n", "e", level=logging.ERROR))
    assert gate.filter(_record("kafka.cluster", "%s: Connection lost: %s", "node 1", "refused"))
    assert gate.filter(_record("kafka.net.connection", "Something else"))


def test_other_loggers_are_never_held_back() -> None:
    gate = RepeatFilter(clock=_Clock())
    for name in ("redone_sdk.adapters.kafka", "redone_sdk.adapters.kafka.rebalance", "kafkaesque", "root"):
        assert all(gate.filter(_record(name, "dead letters")) for _ in range(5)), name


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    saved = list(root.handlers), root.level, kafka.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    kafka.setLevel(saved[2])


@pytest.mark.usefixtures("restore_logging")
def test_the_cli_logging_holds_back_kafka_python_repeats_but_not_at_debug() -> None:
    out = io.StringIO()
    configure_json_logging("INFO", stream=out)
    for _ in range(20):
        logging.getLogger("kafka.cluster").warning("No node available for metadata refresh - backoff/retry")
        log_event(logging.getLogger("redone_sdk.adapters.kafka"), logging.INFO, "dead letters", count=1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sum(line["logger"] == "kafka.cluster" for line in lines) == 1
    assert sum(line["msg"] == "dead letters" and line["count"] == 1 for line in lines) == 20

    out = io.StringIO()
    configure_json_logging("DEBUG", stream=out)  # debugging the client: every line
    for _ in range(20):
        logging.getLogger("kafka.cluster").warning("No node available for metadata refresh - backoff/retry")
    assert len(out.getvalue().splitlines()) == 20
