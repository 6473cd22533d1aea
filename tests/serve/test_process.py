"""`redone serve` as a real process: keys on the command line, SIGTERM with requests in flight, and the
database gone at start and during a run."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_helpers import Service, postgres, serve_command


def _keys(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command("keys", *args, "--db", db_url), capture_output=True, text=True, timeout=60, check=False
    )


def test_keys_on_the_command_line(db_url: str) -> None:
    added = _keys(db_url, "add", "team-a", "--rate-limit", "5")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert re.fullmatch(r"rdn_[A-Za-z0-9_-]{43}", key), key
    assert "shown only now" in added.stderr
    assert _keys(db_url, "add", "team-b").returncode == 0

    listed = _keys(db_url, "list")
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout and key[:12] in listed.stdout  # the prefix, never the key
    assert re.search(r"1\s+rdn_\S+\s+\S+ \S+\s+active\s+5\s+team-a", listed.stdout), listed.stdout

    assert _keys(db_url, "revoke", key[:12]).returncode == 0
    assert re.search(r"1\s+\S+\s+\S+ \S+\s+revoked\s+5\s+team-a", _keys(db_url, "list").stdout)
    assert "team-a" not in _keys(db_url, "list", "--active").stdout
    missing = _keys(db_url, "revoke", "rdn_nothing1")
    assert missing.returncode == 2 and "no key matches" in missing.stderr


class Process:
    """`python -m redone_sdk.serve` on a free port; its log goes to a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(serve_command("--port", "0", "--no-access-log", *args), stderr=self._log_handle)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"listening on (http://\S+)", log.read_text())):
            assert self.proc.poll() is None, f"the service exited: {log.read_text()}"
            assert time.monotonic() < deadline, "the service did not start within 60 s"
            time.sleep(0.05)
        self.url = found.group(1)
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log_handle.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(
    db_url: str, tmp_path: Path, texts: list[str], processes: list[Process]
) -> None:
    key = _keys(db_url, "add", "drain").stdout.strip()
    scraper = {"Authorization": f"Bearer {_keys(db_url, 'add', 'scraper').stdout.strip()}"}  # /metrics needs a key
    service = Process(tmp_path / "serve.log", "--db", db_url)
    processes.append(service)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"input": (texts * 3)[:200]}

    def moderate() -> httpx.Response:
        return httpx.post(service.url + "/v1/moderations", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(moderate) for _ in range(3)]
        deadline = time.monotonic() + 10
        while _gauge(service.url, "redone_serve_in_flight_requests", scraper) < 3:
            assert time.monotonic() < deadline, "the requests never got in flight"
            time.sleep(0.01)
        service.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        refused = httpx.post(service.url + "/v1/moderations", json={"input": "好"}, headers=headers, timeout=10)
        not_ready = httpx.get(service.url + "/readyz", timeout=10)
        answers = [future.result() for future in in_flight]

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down" and refused.headers["Retry-After"] == "1"
    assert not_ready.status_code == 503 and not_ready.json()["draining"] is True
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 200
    assert service.proc.wait(30) == 0
    log = service.log.read_text()
    assert "SIGTERM: draining 3 request(s) in flight" in log and "stopped" in log
    assert "Traceback" not in log
    assert texts[0] not in log  # nothing about a note is logged unless asked


def _gauge(url: str, name: str, headers: dict[str, str]) -> float:
    for line in httpx.get(url + "/metrics", headers=headers, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://redone@127.0.0.1:1/redone", ["database postgresql+psycopg://redone@127.0.0.1:1/redone"]),
        ("sqlite:////proc/no-such-dir/keys.sqlite3", ["cannot create the database folder /proc/no-such-dir"]),
        ("nonsense://x", ["cannot use database", "nonsense"]),
    ],
)
def test_the_database_gone_at_start_is_a_clear_error(url: str, words: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        serve_command("--db", url, "--port", "0"), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "cannot start:" in result.stderr and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert time.monotonic() - started < 30
    keys = subprocess.run(serve_command("keys", "list", "--db", url), capture_output=True, text=True, timeout=60)
    assert keys.returncode == 2 and "Traceback" not in keys.stderr and "redone serve keys: error:" in keys.stderr


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[int]:
    """A private PostgreSQL cluster of this test's own (it is stopped mid-test), on the next port."""
    port = 55_433
    result = postgres("start", port=port)
    if result.returncode != 0:
        pytest.fail(f"scripts/postgres start failed:\n{result.stderr[-4000:]}")
    yield port
    postgres("stop", port=port)


@pytest.mark.postgres
# the service's database is own_postgres's; db_url only feeds make_service
@pytest.mark.parametrize("db_url", [pytest.param("sqlite", id="own-postgres")], indirect=True)
def test_the_database_gone_during_a_run(own_postgres: int, make_service: Callable[..., Service], db_url: str) -> None:
    url = f"postgresql://redone@127.0.0.1:{own_postgres}/redone"
    service = make_service(db=url, key_cache_s=0.0, key_grace_s=60.0)
    seen, unseen = service.key("seen"), service.key("unseen")
    assert service.post("/v1/moderations", {"input": "好"}, key=seen).status_code == 200

    assert postgres("stop", port=own_postgres).returncode == 0
    # a key checked within the grace period keeps working: moderation goes on
    for _ in range(3):
        assert service.post("/v1/moderations", {"input": "好"}, key=seen).status_code == 200
    # keys that need the database fail cleanly
    for key in (unseen, "rdn_made-up"):
        gone = service.post("/v1/moderations", {"input": "好"}, key=key)
        assert gone.status_code == 503, gone.text
        assert "key database is unavailable" in gone.json()["error"]["message"]
        assert int(gone.headers["Retry-After"]) >= 1
    ready = httpx.get(service.url + "/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["database"] is False
    assert httpx.get(service.url + "/healthz").status_code == 200

    assert postgres("start", port=own_postgres).returncode == 0
    assert service.post("/v1/moderations", {"input": "好"}, key=unseen).status_code == 200
    assert httpx.get(service.url + "/readyz", timeout=30).json()["database"] is True


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_sqlite_file_that_stops_being_a_database(make_service: Callable[..., Service], db_url: str) -> None:
    service = make_service(key_cache_s=0.0, key_grace_s=60.0)
    seen, unseen = service.key("seen"), service.key("unseen")
    assert service.post("/v1/moderations", {"input": "好"}, key=seen).status_code == 200
    path = Path(db_url.removeprefix("sqlite:///"))
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if part.exists():
            part.write_bytes(b"\0" * part.stat().st_size)  # overwritten in place: every connection sees it
    assert service.post("/v1/moderations", {"input": "好"}, key=seen).status_code == 200
    gone = service.post("/v1/moderations", {"input": "好"}, key=unseen)
    assert gone.status_code == 503 and "key database is unavailable" in gone.json()["error"]["message"]
