"""The review console at `/review`: server-rendered pages (Jinja2, autoescaped) and one small script.

Security: a login makes a server-side session (token in a signed, HttpOnly, SameSite=Strict cookie; only its
digest is stored; the cookie also opens `/docs` and `/metrics`, see `serve/auth.py`); failed logins are
throttled per username and per client (`throttle.py`: 429 with Retry-After); every form carries the session's
CSRF token (the login form a double-submit token) and a cross-origin `Origin` is refused; every page is sent
with a strict Content-Security-Policy (scripts and styles from this origin only, no inline code) and no
caching. Note text is untrusted: it is only ever autoescaped text, with bidirectional control characters
(U+202E and kin) shown as visible markers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from ..errors import DatabaseUnavailableError
from .store import ClaimLostError, ReviewError, ReviewStore, SessionInfo
from .throttle import LoginThrottle

__all__ = ["SECURITY_HEADERS", "SessionCheck", "add_review_routes", "visible_controls"]

_log = logging.getLogger("redone_sdk.serve.review")

SessionCheck = Callable[[Request], Awaitable[SessionInfo | None]]
"""`await check(request)`: the reviewer whose live console session the request's cookie holds, else None."""

_HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "redone_review"
LOGIN_COOKIE = "redone_review_login"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null` on forms
    "Cache-Control": "no-store",
}
# bidirectional controls (embeddings, overrides, isolates, marks): shown, never obeyed
_BIDI = {c for c in map(chr, range(0x200B, 0x2070)) if unicodedata.category(c) == "Cf"} | {"\u061c", "\ufeff"}


def visible_controls(text: str) -> str:
    """`text` with bidi and other invisible format characters replaced by a visible `[U+XXXX]` (then escaped)."""
    if not any(c in _BIDI for c in text):
        return text
    return "".join(f"[U+{ord(c):04X}]" if c in _BIDI else c for c in text)


class _ConsoleDatabaseDown(Exception):
    """The database failed during a console request (answered with a 503 page)."""


async def _db(function: Any, *args: Any) -> Any:
    """`function(*args)` off the event loop; a database failure becomes `_ConsoleDatabaseDown`."""
    try:
        return await run_in_threadpool(function, *args)
    except DatabaseUnavailableError:
        raise _ConsoleDatabaseDown from None


class _Signer:
    """HMAC-SHA256 signatures of cookie values with the console's secret."""

    def __init__(self, secret: str | None) -> None:
        self._key = hashlib.sha256((secret or secrets.token_urlsafe(32)).encode()).digest()

    def sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return value + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def unsign(self, signed: str | None) -> str | None:
        if not signed or "." not in signed:
            return None
        value, _, _mac = signed.rpartition(".")
        return value if hmac.compare_digest(self.sign(value).encode(), signed.encode()) else None


def add_review_routes(
    app: FastAPI,
    store: ReviewStore,
    *,
    secret: str | None,
    secure_cookie: bool,
    throttle: LoginThrottle | None = None,
) -> SessionCheck:
    """Add the console's routes to `app`; returns the session check that the route guard uses (a reviewer's
    session also opens `/docs` and `/metrics`)."""
    throttle = throttle or LoginThrottle()
    # autoescape=True for every template, not by file extension: note text is always escaped
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True)
    environment.filters["visible"] = visible_controls
    templates = Jinja2Templates(env=environment)
    signer = _Signer(secret)
    static = {
        "review.js": ((_HERE / "static" / "review.js").read_bytes(), "text/javascript; charset=utf-8"),
        "review.css": ((_HERE / "static" / "review.css").read_bytes(), "text/css; charset=utf-8"),
    }

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, {"categories": store.categories, **context}, status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    def refuse(request: Request, message: str, status: int = 403) -> HTMLResponse:
        return page(request, "error.html", status, message=message, who=None)

    def set_cookie(response: Response, name: str, value: str, max_age: int | None, path: str = "/review") -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=secure_cookie
        )

    async def current(request: Request) -> tuple[str, SessionInfo] | None:
        token = signer.unsign(request.cookies.get(SESSION_COOKIE))
        if token is None:
            return None
        who = await _db(store.session, token)
        return (token, who) if who is not None else None

    async def session_of(request: Request) -> SessionInfo | None:
        token = signer.unsign(request.cookies.get(SESSION_COOKIE))
        if token is None:
            return None
        try:
            return await run_in_threadpool(store.session, token)
        except DatabaseUnavailableError:
            return None

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def form(request: Request) -> dict[str, str]:
        # an urlencoded form (the body guard in front of the app relabels every body as JSON, so the
        # content type is not checked; anything else parses to no fields and fails the CSRF check)
        raw = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True, max_num_fields=20).items()}

    async def checked_post(request: Request) -> tuple[str, SessionInfo, dict[str, str]] | Response:
        """The session and form of a console POST, or the refusal (no session, cross-origin, bad CSRF)."""
        found = await current(request)
        if found is None:
            return refuse(request, "You are not logged in (or your session ended).", 401)
        fields = await form(request)
        if not same_origin(request) or not store.csrf_ok(found[1].csrf, fields.get("csrf")):
            return refuse(request, "The form's security token is missing or wrong: reload the page and retry.")
        return found[0], found[1], fields

    @app.exception_handler(_ConsoleDatabaseDown)
    async def _db_down(request: Request, _exc: _ConsoleDatabaseDown) -> Response:
        return refuse(request, "The review database is unavailable; retry later.", 503)

    @app.get("/review/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in static:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        body, media = static[name]
        return Response(body, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

    @app.get("/review/login", include_in_schema=False)
    async def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", csrf=token, who=None, failed=False)
        set_cookie(response, LOGIN_COOKIE, signer.sign(token), 3600)
        return response

    @app.post("/review/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form(request)
        expected = signer.unsign(request.cookies.get(LOGIN_COOKIE))
        if not same_origin(request) or expected is None or not store.csrf_ok(expected, fields.get("csrf")):
            return refuse(request, "The form's security token is missing or wrong: reload the login page.")
        username, client = fields.get("username", ""), request.client.host if request.client else "unknown"
        wait = throttle.retry_after(username, client)
        if wait > 0:
            _log.warning("console login refused: too many failed logins (name %r, client %s)", username[:64], client)
            minutes = max(1, math.ceil(wait / 60))
            response = refuse(
                request,
                f"Too many failed logins for this name or from this address: try again in {minutes} minute"
                f"{'s' if minutes > 1 else ''}.",
                429,
            )
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        found = await _db(store.login, username, fields.get("password", ""))
        if found is None:
            throttle.failed(username, client)
            response = page(request, "login.html", 401, csrf=expected, who=None, failed=True)
            return response
        throttle.succeeded(username)
        token, _who = found
        response = redirect("/review")
        set_cookie(response, SESSION_COOKIE, signer.sign(token), int(store.session_s), path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/review", httponly=True, samesite="strict", secure=secure_cookie)
        return response

    @app.post("/review/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        token, who, _fields = checked
        await _db(store.logout, token, who)
        response = redirect("/review/login")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookie)
        return response

    @app.get("/review", include_in_schema=False)
    async def queue(request: Request, after: int | None = None, notice: str | None = None) -> Response:
        found = await current(request)
        if found is None:
            return redirect("/review/login")
        who = found[1]
        item = await _db(store.claim_next, who, after)
        counts = await _db(store.counts)
        pending = await _db(store.pending)
        notices = {"decided": "Decision saved.", "lost": "Another reviewer holds that note, or it was decided."}
        return page(
            request, "queue.html", who=who, item=item, counts=counts, pending=pending, notice=notices.get(notice or "")
        )

    @app.post("/review/items/{item_id}/decide", include_in_schema=False)
    async def decide(request: Request, item_id: int) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        _token, who, fields = checked
        try:
            await _db(store.decide, item_id, who, fields.get("decision", ""), fields.get("category"))
        except ClaimLostError:
            return redirect("/review?notice=lost")
        except ReviewError as exc:
            return refuse(request, str(exc), 422)
        return redirect("/review?notice=decided")

    @app.post("/review/items/{item_id}/release", include_in_schema=False)
    async def release(request: Request, item_id: int) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        await _db(store.release, item_id, checked[1])
        return redirect(f"/review?after={item_id}")

    @app.get("/review/decided", include_in_schema=False)
    async def decided(request: Request) -> Response:
        found = await current(request)
        if found is None:
            return redirect("/review/login")
        items = await _db(store.decided)
        return page(request, "decided.html", who=found[1], items=items)

    @app.get("/review/agreement", include_in_schema=False)
    async def agreement(request: Request) -> Response:
        found = await current(request)
        if found is None:
            return redirect("/review/login")
        by_label, by_day = await _db(store.agreement)
        return page(request, "agreement.html", who=found[1], by_label=by_label, by_day=by_day)

    @app.get("/review/audit", include_in_schema=False)
    async def audit(request: Request) -> Response:
        found = await current(request)
        if found is None:
            return redirect("/review/login")
        entries = await _db(store.audit_trail)
        return page(request, "audit.html", who=found[1], entries=entries)

    return session_of
