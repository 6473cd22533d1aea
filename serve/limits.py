"""Request bodies checked before the app sees them: size (413), time to arrive (408) and UTF-8 (400).

A pure ASGI middleware: it reads the whole body (at most `max_bytes`), then hands it to the app as one message
and passes later messages (the client's disconnect) through. Every request body is JSON here, so the app is
told so whatever Content-Type the client sent (`curl -d` sends form encoding by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import BadRequestError, BodyTimeoutError, HTTPError, PayloadTooLargeError

__all__ = ["BodyGuard"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorSender = Callable[[HTTPError, Scope, Receive, Send], Awaitable[None]]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class _ClientGone(Exception):
    pass


class BodyGuard:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float, send_error: ErrorSender) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.send_error(self._too_large(int(declared)), scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except TimeoutError:
            error: HTTPError = BodyTimeoutError(f"the request body did not arrive within {self.timeout_s:g} s")
            await self.send_error(error, scope, receive, send)
            return
        except PayloadTooLargeError as exc:
            await self.send_error(exc, scope, receive, send)
            return
        except _ClientGone:
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = BadRequestError(f"the request body is not valid UTF-8 (bad byte at offset {exc.start})")
            await self.send_error(error, scope, receive, send)
            return
        replaced = (b"content-type", b"content-length")
        forwarded = [(k, v) for k, v in scope["headers"] if k not in replaced]
        forwarded += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": forwarded}, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(size, at_least=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, *, at_least: bool = False) -> PayloadTooLargeError:
        if at_least:  # no Content-Length: stopped reading once past the limit
            return PayloadTooLargeError(f"the request body is over the limit of {self.max_bytes} bytes")
        return PayloadTooLargeError(f"the request body is {size} bytes; the limit is {self.max_bytes}")
