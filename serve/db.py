"""The service's database through SQLAlchemy: its tables and the engine (SQLite file or PostgreSQL by URL).

Kept apart from the HTTP layer so that the review console shares the models and `Database`. The schema is
managed by Alembic migrations (`serve/migrations/`): `Database.connect` upgrades the database to the newest
revision, adopting a database created before migrations existed (see docs/review.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import DatabaseUnavailableError

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "ReviewAudit",
    "ReviewDecision",
    "ReviewItem",
    "ReviewSession",
    "Reviewer",
    "utcnow",
]


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


class Reviewer(Base):
    """A human moderator of the review console; only an Argon2id hash of the password is stored."""

    __tablename__ = "reviewers"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ReviewItem(Base):
    """A note the model sent to `review`, waiting for (or holding) a human decision.

    Unique on note id + bundle version + bundle digest, so the same verdict enqueued twice is one item. A claim
    (`claimed_by` until `claim_expires`, Unix seconds) gives one reviewer the item for a while.
    """

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("note_id", "bundle_version", "bundle_digest", name="uq_review_items_note"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[str] = mapped_column(String(256))
    title: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[str] = mapped_column(Text, default="")
    label: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    bundle_name: Mapped[str] = mapped_column(String(200))
    bundle_version: Mapped[str] = mapped_column(String(64))
    bundle_digest: Mapped[str] = mapped_column(String(64), default="")
    policy: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id"), default=None)
    claim_expires: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ReviewDecision(Base):
    """A reviewer's decision on an item: approve (the note is fine), remove (the model's label stands) or
    relabel (another category); `label` is the reviewer's label, `model_label` the model's."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), unique=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(64))
    model_label: Mapped[str] = mapped_column(String(64))
    bundle_version: Mapped[str] = mapped_column(String(64))
    bundle_digest: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewAudit(Base):
    """The audit trail of the console: who did what, when, on which item and against which bundle."""

    __tablename__ = "review_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    reviewer_id: Mapped[int | None] = mapped_column(Integer, default=None)
    username: Mapped[str] = mapped_column(String(64), default="")
    event: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int | None] = mapped_column(Integer, default=None)
    bundle_version: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(String(500), default="")


class ReviewSession(Base):
    """A console login: the SHA-256 digest of the session token (never the token), its CSRF token, its expiry."""

    __tablename__ = "review_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires: Mapped[float] = mapped_column(Float)


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
        """Check that the database answers (and, with `create`, upgrade its schema to the newest migration);
        raise a clear error when it does not."""
        if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            folder = Path(self.url.database).expanduser().parent
            if create:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseUnavailableError(f"cannot create the database folder {folder}: {exc}") from None
        try:
            if create:
                from .migrations import upgrade

                upgrade(self.engine)
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
