"""Who may call `/v1/*`: the `Authorization: Bearer <key>` header checked against the key store, then the
key's rate limit."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .errors import DatabaseUnavailableError, RateLimitedError, UnauthorizedError, UnavailableError
from .keys import KeyInfo, KeyStore
from .ratelimit import RateLimiter

__all__ = ["Authenticator"]


class Authenticator:
    """A FastAPI dependency: returns the caller's key (None when auth is off) or raises 401/429/503."""

    def __init__(self, store: KeyStore, limiter: RateLimiter, *, enabled: bool, rate: float) -> None:
        self.store = store
        self.limiter = limiter
        self.enabled = enabled
        self.rate = rate

    async def __call__(self, request: Request) -> KeyInfo | None:
        if not self.enabled:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError("no API key: send the header 'Authorization: Bearer <key>'")
        try:
            key = self.store.cached(token)
            if key is False:  # not checked recently: ask the database, off the event loop
                key = await run_in_threadpool(self.store.verify, token)
        except DatabaseUnavailableError:
            raise UnavailableError("the key database is unavailable; retry later", retry_after=5) from None
        if key is None:
            raise UnauthorizedError("invalid or revoked API key")
        rate = key.rate_limit or self.rate
        wait = self.limiter.take(key.id, rate=rate)
        if wait > 0:
            raise RateLimitedError(f"rate limit exceeded for this key ({rate:g} requests/s)", retry_after=wait)
        return key
