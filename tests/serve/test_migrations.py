"""Schema migrations (Alembic): a fresh database is built by them, a database made before them (by
`create_all`, no revision table) is adopted with its keys, and an unknown newer revision is a clear error.
On SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from serve_helpers import serve_command
from sqlalchemy import inspect, text

from redone_sdk.serve import Database, DatabaseUnavailableError, KeyStore, migrations
from redone_sdk.serve.db import ApiKey, Base
from redone_sdk.serve.review import ReviewStore

REVIEW_TABLES = {"reviewers", "review_items", "review_decisions", "review_audit", "review_sessions"}


def test_a_fresh_database_is_built_by_the_migrations(db_url: str) -> None:
    db = Database(db_url)
    assert migrations.current(db.engine) is None
    db.connect()
    assert migrations.current(db.engine) == migrations.head() == "0002"
    assert {"api_keys", "alembic_version", *REVIEW_TABLES} <= set(inspect(db.engine).get_table_names())
    with db.engine.connect() as connection:  # what the migrations build is what the models describe
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.connect()  # a second start changes nothing
    assert migrations.current(db.engine) == "0002"
    db.dispose()


def test_a_database_from_before_migrations_is_adopted_keeping_its_keys(db_url: str) -> None:
    db = Database(db_url)
    ApiKey.__table__.create(db.engine)  # what `redone serve` made before migrations: create_all of api_keys
    old = KeyStore(db, cache_s=0)
    kept, secret = old.add("kept", rate_limit=7.0)
    gone, gone_secret = old.add("gone")
    old.revoke(str(gone.id))
    assert migrations.current(db.engine) is None
    assert not REVIEW_TABLES & set(inspect(db.engine).get_table_names())

    db.connect()  # what the service does at start

    assert migrations.current(db.engine) == "0002"
    assert set(inspect(db.engine).get_table_names()) >= REVIEW_TABLES
    store = KeyStore(db, cache_s=0)
    found = store.verify(secret)
    assert found is not None and (found.id, found.name, found.rate_limit) == (kept.id, "kept", 7.0)
    assert store.verify(gone_secret) is None
    assert [k.name for k in store.list()] == ["kept", "gone"]
    assert ReviewStore(db).add_reviewer("alice", "a long password").username == "alice"
    db.dispose()


def test_a_database_from_a_newer_version_is_a_clear_error(db_url: str) -> None:
    db = Database(db_url)
    db.connect()
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseUnavailableError, match="9999"):
        db.connect()
    db.dispose()


def test_db_upgrade_and_current_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = Database(url)
    ApiKey.__table__.create(db.engine)
    secret = KeyStore(db).add("kept")[1]
    db.dispose()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(serve_command(*args, "--db", url), capture_output=True, text=True, timeout=120)

    assert run("db", "current").stdout.strip() == "none"
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "none -> 0002" in upgraded.stderr
    assert run("db", "current").stdout.strip() == "0002"
    assert KeyStore(Database(url)).verify(secret) is not None
