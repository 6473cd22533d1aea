"""Run the app under uvicorn with a graceful stop: on SIGTERM or Ctrl-C the service drains, then exits.

Draining: `/readyz` turns 503 and new API requests get 503 `shutting_down` while the requests in flight finish
(at most `drain_timeout_s`); then uvicorn closes the listener and the batcher classifies what it still holds.
A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from .lifecycle import Lifecycle

__all__ = ["DrainingServer", "bind", "run_server"]

_log = logging.getLogger("redone_sdk.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first exit signal drains before stopping (uvicorn alone stops accepting at once)."""

    def __init__(self, config: uvicorn.Config, *, lifecycle: Lifecycle, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.lifecycle.draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self.lifecycle.draining
            return
        self.lifecycle.draining = True
        _log.info("%s: draining %d request(s) in flight", signal.Signals(sig).name, self.lifecycle.in_flight)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        if not await self.lifecycle.wait_idle(self.drain_timeout_s):
            left, waited = self.lifecycle.in_flight, self.drain_timeout_s
            _log.warning("%d request(s) still in flight after %gs; stopping", left, waited)
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one); `OSError` when the address is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(
    app: Any, *, sock: socket.socket, lifecycle: Lifecycle, drain_timeout_s: float, access_log: bool, log_level: str
) -> None:
    """Serve `app` on the bound socket until a signal; returns after the graceful stop."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_level=log_level.lower(),
        log_config=None,  # keep the process's logging set-up (the CLI's)
        timeout_keep_alive=5,
        timeout_graceful_shutdown=max(1, int(drain_timeout_s)),
        server_header=False,
    )
    server = DrainingServer(config, lifecycle=lifecycle, drain_timeout_s=drain_timeout_s)
    server.run(sockets=[sock])
