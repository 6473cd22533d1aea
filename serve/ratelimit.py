"""Per-key rate limit: a token bucket per key, in this process's memory (each replica limits on its own)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """`rate` requests per second per key, up to `burst` at once; `take` says how long to wait when refused."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, time of last refill)

    def take(self, key: object, *, rate: float | None = None) -> float:
        """Spend one token of `key`'s bucket: 0.0 when allowed, else the seconds until a token is back."""
        rate = rate or self._rate
        burst = self._burst
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
