"""Helpers of the serve tests (imported by name: tests/serve is on sys.path): a service in a thread, the
PostgreSQL script, the `python -m redone_sdk.serve` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from redone_sdk.serve import KeyStore, ServeSettings
from redone_sdk.serve.server import bind

REPO = Path(__file__).resolve().parents[2]
POSTGRES_SCRIPT = REPO / "scripts" / "postgres"


def postgres(command: str, *, port: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `scripts/postgres COMMAND` (on another port: another private cluster)."""
    env = {**os.environ, **({"POSTGRES_PORT": str(port)} if port else {})}
    return subprocess.run(
        [str(POSTGRES_SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Service:
    """A running service: its base URL, key store and settings, and an HTTP client helper."""

    def __init__(self, app: Any, store: KeyStore, settings: ServeSettings) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app.state.asgi, lifespan="on", log_level="warning", access_log=False, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died during start-up"
            assert time.monotonic() < deadline, "the server did not start within 30 s"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def key(self, name: str = "test", **kwargs: Any) -> str:
        return self.store.add(name, **kwargs)[1]

    def post(self, path: str, body: Any = None, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.post(self.url + path, json=body, headers=headers, timeout=60, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent), read in-process: /metrics needs a key, and a key of
        the test's own would count in its rate limit (tests/serve/test_route_auth.py covers the route itself)."""
        text = self.app.state.serve.metrics.render().decode()
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if sample == want or _sorted_labels(sample) == want:
                return float(value)
        return 0.0


def _sorted_labels(sample: str) -> str:
    name, _, rest = sample.partition("{")
    if not rest:
        return sample
    pairs = sorted(rest.rstrip("}").split(","))
    return name + "{" + ",".join(pairs) + "}"


def serve_command(*args: str) -> list[str]:
    """`python -m redone_sdk.serve ARGS` with this interpreter."""
    return [sys.executable, "-m", "redone_sdk.serve", *args]
