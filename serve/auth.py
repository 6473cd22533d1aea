"""Who may call what: `Authenticator` checks the `Authorization: Bearer <key>` header against the key store, then
the key's rate limit; `RouteGuard` puts every route but the probes behind it (or a review-console session).

Routes: `/healthz` and `/readyz` are open (orchestrators' probes, which often cannot send a header); `/v1/*` need
an API key; the console (`/review...`) checks its own sessions (its login page and two static files are open);
everything else (`/metrics`, `/docs`, `/docs/assets/*`, `/openapi.json`, unknown paths) needs an API key or a
console session. With auth off (`--no-auth`) only the console keeps its login. See docs/review.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .errors import DatabaseUnavailableError, HTTPError, RateLimitedError, UnauthorizedError, UnavailableError
from .keys import KeyInfo, KeyStore
from .ratelimit import RateLimiter

__all__ = ["KEY_SCOPE", "OPEN_PATHS", "Authenticator", "RouteGuard"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
KEY_SCOPE = "redone.key"  # the ASGI scope entry where the guard leaves the caller's checked key

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
ErrorSender = Callable[[HTTPError, Scope, Any, Any], Awaitable[None]]
SessionCheck = Callable[[Request], Awaitable[Any]]


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


class RouteGuard:
    """A pure ASGI middleware in front of the app's routes: refuses (401, or the key's 429/503) a request that
    needs a caller and has none (see the module's docstring for the table). A checked key is left in the scope
    (`KEY_SCOPE`), so the `/v1/*` handlers do not check (and rate-limit) it twice."""

    def __init__(
        self, app: ASGIApp, *, authenticate: Authenticator, session: SessionCheck | None, send_error: ErrorSender
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.session = session
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        console = path == "/review" or path.startswith("/review/")
        if path in OPEN_PATHS or (console and self.session is not None):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            if path == "/v1" or path.startswith("/v1/"):
                scope[KEY_SCOPE] = await self.authenticate(request)
            elif self.session is None or await self.session(request) is None:
                scope[KEY_SCOPE] = await self._key_or_login(request)
        except HTTPError as exc:
            await self.send_error(exc, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _key_or_login(self, request: Request) -> KeyInfo | None:
        try:
            return await self.authenticate(request)
        except UnauthorizedError as exc:
            if self.session is None:
                raise
            raise UnauthorizedError(f"{exc.message}; or log in to the review console at /review/login") from None
