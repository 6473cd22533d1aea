"""Requests in flight, draining on shutdown, and the per-request metrics: the outermost ASGI middleware.

While draining (after SIGTERM) new API requests get 503 `shutting_down` and `/readyz` says not ready, while
requests already in flight finish; `wait_idle` tells the server when the last one is done.
"""

from __future__ import annotations

import asyncio
import time

from .errors import HTTPError, ShuttingDownError
from .limits import ASGIApp, ErrorSender, Message, Receive, Scope, Send
from .metrics import ServeMetrics

__all__ = ["Gate", "Lifecycle"]

# paths answered while draining (probes and scrapes) and the metric route names of known paths
_ALWAYS_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})
_ROUTES = frozenset(
    {"/v1/moderations", "/v1/classify", "/v1/match", "/v1/rank", "/docs", "/openapi.json", *_ALWAYS_OPEN}
)
_DOCS_ASSETS = "/docs/assets/"  # the Swagger UI files (serve/docs_ui.py), one route label for all of them


class Lifecycle:
    """Shared by the middleware, the app's readiness probe and the server's signal handling."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when no request is in flight any more, False when `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class Gate:
    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle, metrics: ServeMetrics, send_error: ErrorSender) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in _ROUTES else "/docs/assets" if path.startswith(_DOCS_ASSETS) else "other"
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await send(message)

        counted = path not in _ALWAYS_OPEN
        try:
            if counted and self.lifecycle.draining:
                error: HTTPError = ShuttingDownError("the service is shutting down; retry elsewhere", retry_after=1)
                await self.send_error(error, scope, receive, observed_send)
                return
            if counted:
                self.lifecycle.enter()
                self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, observed_send)
            finally:
                if counted:
                    self.lifecycle.leave()
                    self.metrics.in_flight.dec()
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
