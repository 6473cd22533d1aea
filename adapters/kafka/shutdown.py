"""Graceful shutdown on SIGTERM/SIGINT: the first signal asks the stream to finish its batch and stop, within
`shutdown_timeout_s` (`ShutdownClock`); a second one interrupts at once (KeyboardInterrupt)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .logs import log_event

__all__ = ["ShutdownClock", "stop_on_signals"]

_log = logging.getLogger("redone_sdk.adapters.kafka.shutdown")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownClock:
    """When a stop was asked for, and how much of the shutdown time is left. Thread-safe to start."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start counting (the first call wins)."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.timeout_s

    @property
    def started(self) -> bool:
        return self._deadline is not None

    @property
    def deadline(self) -> float | None:
        """Monotonic time by which the stream must have stopped; None while no stop was asked for."""
        return self._deadline

    def remaining(self, default: float) -> float:
        """Seconds left before the deadline (at least 0), or `default` while no stop was asked for."""
        if self._deadline is None:
            return default
        return max(0.0, min(default, self._deadline - time.monotonic()))

    @property
    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline


@contextmanager
def stop_on_signals(request_stop: Callable[[], None], *, enabled: bool = True) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT call `request_stop`; previous handlers come back afterwards.

    Python only lets the main thread install handlers; elsewhere (or with `enabled=False`) this does nothing.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping now")
        log_event(
            _log,
            logging.INFO,
            "signal received: finishing the current batch, then stopping",
            signal=signal.Signals(signum).name,
        )
        request_stop()

    previous = {sig: signal.signal(sig, handle) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
