"""Graceful shutdown on SIGTERM/SIGINT: the first signal asks the stream to finish its batch and stop;
a second one interrupts at once (KeyboardInterrupt), for when a broker outage holds the last batch."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .logs import log_event

__all__ = ["stop_on_signals"]

_log = logging.getLogger("redone_sdk.adapters.kafka.shutdown")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
