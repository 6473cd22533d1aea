"""The HTTP service on the real default bundle, in-process on a free loopback port, over SQLite and PostgreSQL.

PostgreSQL: the database at $REDONE_TEST_POSTGRES_URL (`.ci/run` exports it) when set; otherwise the private
cluster of `scripts/postgres`, started here when it is not running and stopped after the session. No mocks: the
service is uvicorn on a socket, called over HTTP.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Service, postgres
from sqlalchemy import text

from redone_sdk import Moderator
from redone_sdk.serve import Database, KeyStore, ServeSettings, create_app
from redone_sdk.serve.db import Base


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("REDONE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    started = postgres("status", timeout=30).returncode != 0
    if started:
        result = postgres("start")
        if result.returncode != 0:
            pytest.fail(f"scripts/postgres start failed:\n{result.stderr[-4000:]}")
    yield postgres("url", timeout=30).stdout.strip()
    if started:
        postgres("stop")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables, no migration revision): a fresh SQLite file, or the PostgreSQL database
    emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    url = ServeSettings(db=request.getfixturevalue("postgres_url")).db
    db = Database(url)
    Base.metadata.drop_all(db.engine)
    with db.engine.begin() as connection:  # the migrations' revision goes too: the next start rebuilds it all
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    return url


@pytest.fixture(scope="session")
def moderator() -> Moderator:
    """The shipped default bundle, as `redone serve` loads it with no --bundle."""
    return Moderator.load()


@pytest.fixture(scope="session")
def texts(data_dir: Path) -> list[str]:
    """Real note texts (COLD dev) from the committed test data."""
    with (data_dir / "cold" / "dev.csv").open(encoding="utf-8-sig", newline="") as handle:
        found = [row["TEXT"] for row in csv.DictReader(handle) if row["TEXT"].strip()]
    assert len(found) >= 100
    return found


@pytest.fixture
def make_service(moderator: Moderator, db_url: str) -> Iterator[Callable[..., Service]]:
    """Start services on the test's database with settings overrides; all are stopped after the test."""
    started: list[Service] = []

    def make(*, policies: dict[str, Any] | None = None, **overrides: Any) -> Service:
        settings = ServeSettings(**{"db": db_url, "key_cache_s": 0.0, **overrides})
        db = Database(settings.db)
        db.connect()
        store = KeyStore(db, cache_s=settings.key_cache_s, grace_s=settings.key_grace_s)
        service = Service(create_app(moderator, settings, store, policies=policies), store, settings)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup all); `playwright install` is never used
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven by Playwright (tests marked `browser`)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup all (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
