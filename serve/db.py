"""The service's database through SQLAlchemy: its tables and the engine (SQLite file or PostgreSQL by URL).

Kept apart from the HTTP layer so that later parts on the same database (the review console) share the models
and `Database`. Tables are created when missing (`create_all`); there is no migration tool yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, Float, String, create_engine, event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import DatabaseUnavailableError

__all__ = ["ApiKey", "Base", "Database", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every table of the service."""


class ApiKey(Base):
    """An API key: only its SHA-256 digest is stored, with a short prefix to recognise it in listings."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    rate_limit: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Database:
    """An engine and a session factory for one URL; every failure to reach it is a `DatabaseUnavailableError`."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseUnavailableError(f"not a database URL: {url!r}") from None
        self.url = parsed
        kwargs: dict[str, object] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": connect_timeout_s, "check_same_thread": False}
        elif parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": max(1, int(connect_timeout_s))}
            kwargs["pool_timeout"] = connect_timeout_s
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseUnavailableError(f"cannot use database {self.safe_url}: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden (for messages and logs)."""
        return self.url.render_as_string(hide_password=True)

    def connect(self, *, create: bool = True) -> None:
        """Check that the database answers (and create missing tables); raise a clear error when it does not."""
        if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            folder = Path(self.url.database).expanduser().parent
            if create:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseUnavailableError(f"cannot create the database folder {folder}: {exc}") from None
        try:
            if create:
                Base.metadata.create_all(self.engine)
            with self.engine.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(f"database {self.safe_url} is unavailable: {_reason(exc)}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success; database failures come out as `DatabaseUnavailableError`."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(f"database {self.safe_url} is unavailable: {_reason(exc)}") from None

    def dispose(self) -> None:
        self.engine.dispose()


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line, without SQLAlchemy's statement dump and link."""
    origin = getattr(exc, "orig", None) or exc
    text = str(origin).strip().splitlines()
    return text[0] if text else type(origin).__name__


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
