"""Turn a message's bytes into a `Note`, or into a `Rejection` that says why it cannot be one.

The checks run cheapest first: size, UTF-8, then one pass of pydantic's JSON parser and the `Note` schema.
Each failure has its own reason code, which the dead-letter topic carries in its `reason` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from redone_sdk.schemas import Note, format_validation_error

__all__ = ["REASONS", "DeadLetterReason", "Rejection", "decode_json", "decode_note"]

M = TypeVar("M", bound=BaseModel)

DeadLetterReason = Literal[
    "empty",  # a null value (tombstone) or zero bytes
    "too_large",  # key + value over `max_message_bytes`, or an output over its topic's limit
    "invalid_utf8",  # bytes that are not UTF-8
    "not_json",  # UTF-8 text that is not JSON
    "missing_fields",  # a JSON object without a required field (note_id)
    "invalid_schema",  # JSON that is not a valid Note: wrong types, unknown fields, not an object, empty text
    "classify_error",  # a valid note the classifier failed on (the error callback chose to skip it)
    "model_output",  # a valid note whose model scores were not finite (NaN, infinity): no verdict, fail closed
]
REASONS: tuple[str, ...] = get_args(DeadLetterReason)

_JSON_ERRORS = frozenset({"json_invalid", "json_type"})


@dataclass(frozen=True)
class Rejection:
    """Why a message got no verdict: a reason code and a readable detail."""

    reason: DeadLetterReason
    detail: str


def decode_note(value: bytes | None, *, max_bytes: int, key: bytes | None = None) -> Note | Rejection:
    """Validate one message value as a `Note` (JSON, UTF-8); never raises for bad input.

    `max_bytes` bounds the key and the value together: a message over it is never copied whole anywhere."""
    return decode_json(value, Note, max_bytes=max_bytes, key=key, what="note")


def decode_json(
    value: bytes | None, model: type[M], *, max_bytes: int, key: bytes | None = None, what: str
) -> M | Rejection:
    """Validate one message value as JSON of `model` (`what` names it in the detail); never raises for bad input.
    The same checks and reason codes as `decode_note`, for the other JSON messages the adapter reads."""
    size = len(value or b"") + len(key or b"")
    if size > max_bytes:
        return Rejection(
            "too_large",
            f"key {len(key or b'')} + value {len(value or b'')} = {size} bytes is over the limit of {max_bytes}",
        )
    if not value:
        return Rejection("empty", "the message has no value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"not UTF-8 at byte {exc.start}: {exc.reason}")
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        kinds = {error["type"] for error in exc.errors()}
        if kinds & _JSON_ERRORS:
            reason: DeadLetterReason = "not_json"
        elif kinds == {"missing"}:
            reason = "missing_fields"
        else:
            reason = "invalid_schema"
        return Rejection(reason, format_validation_error(exc, what))
