"""API keys: random 256-bit tokens, stored as their SHA-256 digest; add, list, revoke and verify them.

A password hash (bcrypt, scrypt, argon2) exists to slow down guessing of low-entropy secrets. These keys are
32 random bytes: no dictionary exists and 2^256 guesses are out of reach even against a plain digest, so a
fast SHA-256 is as safe here and costs microseconds instead of tens of milliseconds per request.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select

from .db import ApiKey, Database, utcnow
from .errors import DatabaseUnavailableError

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyStore", "digest"]

KEY_PREFIX = "rdn_"
_SHOWN_CHARS = len(KEY_PREFIX) + 8


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """What the service knows about a key (never the key itself)."""

    id: int
    name: str
    prefix: str
    rate_limit: float | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.prefix, row.rate_limit, row.created_at, row.revoked_at)


class KeyStore:
    """Keys in the database, with a short cache of verifications.

    A verification is reused for `cache_s` (so a revocation takes effect within that time). When the database
    fails, a key verified as valid within the last `grace_s` keeps working; any other key check raises
    `DatabaseUnavailableError`.
    """

    def __init__(self, db: Database, *, cache_s: float = 5.0, grace_s: float = 300.0) -> None:
        self._db = db
        self._cache_s = cache_s
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[KeyInfo | None, float]] = {}

    @property
    def database(self) -> Database:
        """The database the keys live in (the review console shares it)."""
        return self._db

    @property
    def database_url(self) -> str:
        """The database's URL, password hidden."""
        return self._db.safe_url

    def ping(self) -> None:
        """Raise `DatabaseUnavailableError` unless the database answers now."""
        self._db.connect(create=False)

    def add(self, name: str, *, rate_limit: float | None = None) -> tuple[KeyInfo, str]:
        """Create a key; returns its record and the key itself, which is shown once and never stored."""
        if not name.strip():
            raise ValueError("a key needs a non-empty name")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("a key's rate limit must be positive")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db.session() as session:
            row = ApiKey(name=name, prefix=secret[:_SHOWN_CHARS], digest=digest(secret), rate_limit=rate_limit)
            session.add(row)
            session.flush()
            return _info(row), secret

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        with self._db.session() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [_info(row) for row in session.scalars(query)]

    def revoke(self, key: str) -> KeyInfo | None:
        """Revoke a key given by its id, its shown prefix or the key itself; None when no key matches."""
        with self._db.session() as session:
            if key.isdigit():
                rows = list(session.scalars(select(ApiKey).where(ApiKey.id == int(key))))
            elif len(key) > _SHOWN_CHARS:
                rows = list(session.scalars(select(ApiKey).where(ApiKey.digest == digest(key))))
            else:
                rows = list(session.scalars(select(ApiKey).where(ApiKey.prefix == key)))
            if len(rows) > 1:
                raise ValueError(f"{len(rows)} keys start with {key!r}: revoke by id")
            if not rows:
                return None
            row = rows[0]
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            info = _info(row)
        with self._lock:
            self._checked.clear()
        return info

    def cached(self, secret: str) -> KeyInfo | Literal[False] | None:
        """The answer `verify` would give from its cache, or False when it would ask the database."""
        with self._lock:
            cached = self._checked.get(digest(secret))
        if cached is not None and time.monotonic() - cached[1] < self._cache_s:
            return cached[0]
        return False

    def verify(self, secret: str) -> KeyInfo | None:
        """The active key matching `secret`, or None. May raise `DatabaseUnavailableError` (see the class)."""
        key_digest = digest(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._checked.get(key_digest)
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        try:
            with self._db.session() as session:
                row = session.scalars(select(ApiKey).where(ApiKey.digest == key_digest)).one_or_none()
                info = _info(row) if row is not None and row.revoked_at is None else None
        except DatabaseUnavailableError:
            if cached is not None and cached[0] is not None and now - cached[1] < self._grace_s:
                return cached[0]
            raise
        with self._lock:
            if len(self._checked) > 100_000:  # a flood of made-up keys must not grow memory without bound
                self._checked.clear()
            self._checked[key_digest] = (info, now)
        return info
