"""The service's errors: each one an HTTP status and a JSON body in OpenAI's error shape.

Body: `{"error": {"message": ..., "type": ..., "code": ..., "param": null}}`, which OpenAI's clients turn into
their typed exceptions (`BadRequestError`, `AuthenticationError`, `RateLimitError`, ...).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from redone_sdk.errors import RedOneError

__all__ = [
    "BadRequestError",
    "BodyTimeoutError",
    "DatabaseUnavailableError",
    "HTTPError",
    "InvalidModelOutputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QueueFullError",
    "RateLimitedError",
    "ServeError",
    "ShuttingDownError",
    "UnauthorizedError",
    "UnavailableError",
    "UnprocessableError",
    "error_body",
]


class ServeError(RedOneError):
    """Base class of the service's own errors."""


class DatabaseUnavailableError(ServeError):
    """The key database cannot be reached or answered with an error (the message says which)."""


class HTTPError(ServeError):
    """An error answered to the client; `status` and `type` follow OpenAI's API where it has one."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type_=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


class BadRequestError(HTTPError):
    """The body is not JSON, not UTF-8, or not readable."""

    status, type, code = 400, "invalid_request_error", "invalid_json"


class UnauthorizedError(HTTPError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class NotFoundError(HTTPError):
    status, type, code = 404, "invalid_request_error", "not_found"


class BodyTimeoutError(HTTPError):
    status, type, code = 408, "invalid_request_error", "body_timeout"


class PayloadTooLargeError(HTTPError):
    status, type, code = 413, "invalid_request_error", "body_too_large"


class UnprocessableError(HTTPError):
    """Well-formed JSON that is not a valid request (types, empty input, too many inputs)."""

    status, type, code = 422, "invalid_request_error", "invalid_request"


class RateLimitedError(HTTPError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class QueueFullError(HTTPError):
    status, type, code = 429, "rate_limit_error", "queue_full"


class UnavailableError(HTTPError):
    """The service cannot answer now (database down, result not ready in time); retry later."""

    status, type, code = 503, "server_error", "unavailable"


class ShuttingDownError(UnavailableError):
    code = "shutting_down"


class InvalidModelOutputError(HTTPError):
    """The model's scores for a note were not finite (NaN, infinity) and the policy says error: no verdict is
    given rather than a wrong `allow` (the SDK's `ModelOutputError`; a policy with on_invalid_output=review
    answers such notes with `review` instead)."""

    status, type, code = 500, "server_error", "model_output_error"
