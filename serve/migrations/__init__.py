"""Alembic migrations of the service's database, run from code (no alembic.ini needed).

`upgrade(engine)` brings a database to the newest revision: an empty one is built from 0001; one created by
an older `redone serve` (tables made by `create_all`, no `alembic_version` table) is adopted: stamped as 0001,
whose schema it has, then upgraded, keeping its rows. On PostgreSQL an advisory lock serialises two services
starting at once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from ..errors import DatabaseUnavailableError

__all__ = ["BASELINE", "HEAD", "current", "head", "upgrade"]

BASELINE = "0001"  # the schema of `redone serve` before migrations: api_keys
HEAD = "head"
_LOCK_ID = 0x7265646F6E65  # "redone": pg_advisory_xact_lock key of the migration run


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision these migrations know."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's revision (None: not under migrations, empty or created before them)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = HEAD) -> tuple[str | None, str | None]:
    """Upgrade (adopting a pre-migration database first); returns the revisions before and after."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        config = _config(connection)
        before = MigrationContext.configure(connection).get_current_revision()
        try:
            if before is None and inspect(connection).has_table("api_keys"):
                command.stamp(config, BASELINE)  # adopt: the tables of 0001 are there already
            command.upgrade(config, revision)
        except CommandError as exc:
            raise DatabaseUnavailableError(
                f"cannot migrate the database (revision {before}): {exc}; is it from a newer redone serve?"
            ) from None
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after
