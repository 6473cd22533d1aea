"""Failed console logins, throttled per username and per client: password guessing gets a 429 with Retry-After
instead of unlimited tries. In this process's memory, like the API keys' rate limits (each replica on its own)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LoginThrottle"]

_MAX_TRACKED = 10_000  # names and clients remembered at most (a spray of made-up names cannot grow it forever)


class LoginThrottle:
    """Past `max_per_user` failed logins of one username, or `max_per_client` from one client address, within
    `window_s`, further logins of that name (or from that client) are refused until the oldest of those failures
    is `window_s` old. A success clears the username's failures, not the client's (so an attacker with one
    account cannot reset the count for the others)."""

    def __init__(
        self,
        *,
        max_per_user: int = 5,
        max_per_client: int = 20,
        window_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_user < 1 or max_per_client < 1 or window_s <= 0:
            raise ValueError("the login throttle needs limits of at least 1 and a positive window")
        self.max_per_user = max_per_user
        self.max_per_client = max_per_client
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, username: str, client: str) -> float:
        """0.0 when a login of `username` from `client` may be tried now, else the seconds until it may."""
        now = self._clock()
        with self._lock:
            waits = [
                self._wait(("user", _name(username)), self.max_per_user, now),
                self._wait(("client", client), self.max_per_client, now),
            ]
        return max(waits)

    def failed(self, username: str, client: str) -> None:
        """Count a failed login."""
        now = self._clock()
        with self._lock:
            if len(self._failures) >= _MAX_TRACKED:
                self._forget(now)
            for key in (("user", _name(username)), ("client", client)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        """A login of `username` worked: its failures are forgotten."""
        with self._lock:
            self._failures.pop(("user", _name(username)), None)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < limit:
            return 0.0
        return times[-limit] + self.window_s - now  # when the failure that reached the limit ages out

    def _forget(self, now: float) -> None:
        """Drop expired entries; when still full, the oldest ones."""
        for key in [k for k, times in self._failures.items() if not times or times[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) >= _MAX_TRACKED:
            del self._failures[next(iter(self._failures))]


def _name(username: str) -> str:
    return username.strip().lower()[:64]  # as the store compares names
