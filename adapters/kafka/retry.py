"""Retry transient Kafka errors with exponential backoff and full jitter, within a time budget.

A broker restart, a leader election or a coordinator move shows up as a retriable `KafkaError`; the stream
waits it out instead of crashing. Anything not transient is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kafka.errors import KafkaError

from .errors import ShutdownTimeoutError
from .logs import log_event

__all__ = ["Backoff", "is_transient", "retry_transient"]

T = TypeVar("T")
_log = logging.getLogger("redone_sdk.adapters.kafka.retry")


def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: kafka-python marks them `retriable` (timeouts, lost connections,
    leader or coordinator changes, rebalances in progress)."""
    return isinstance(error, KafkaError) and bool(error.retriable)


@dataclass(frozen=True)
class Backoff:
    """Waits of `initial_s * 2**n` capped at `max_s`, each drawn uniformly below that (full jitter)."""

    initial_s: float
    max_s: float
    timeout_s: float

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_s, self.initial_s * (2**attempt)))


def retry_transient(
    action: Callable[[], T],
    *,
    backoff: Backoff,
    what: str,
    on_retry: Callable[[BaseException], None] | None = None,
    stop_by: Callable[[], float | None] | None = None,
) -> T:
    """Run `action` until it succeeds; retry transient errors until `backoff.timeout_s` has passed, then raise.

    `stop_by()` is a monotonic deadline (a shutdown in progress) or None: past it, retrying stops with
    `ShutdownTimeoutError`."""
    deadline = time.monotonic() + backoff.timeout_s
    attempt = 0
    while True:
        try:
            return action()
        except KafkaError as exc:
            if not is_transient(exc):
                raise
            shutdown = stop_by() if stop_by is not None else None
            if shutdown is not None and time.monotonic() >= shutdown:
                raise ShutdownTimeoutError(f"{what} still failing when the shutdown timeout passed: {exc}") from exc
            if time.monotonic() >= deadline:
                raise
            if shutdown is not None:
                deadline = min(deadline, shutdown)
            if on_retry is not None:
                on_retry(exc)
            wait = min(backoff.delay(attempt), max(0.0, deadline - time.monotonic()))
            log_event(
                _log,
                logging.WARNING,
                "transient error, retrying",
                what=what,
                error=str(exc),
                attempt=attempt + 1,
                wait_s=round(wait, 3),
            )
            time.sleep(wait)
            attempt += 1
