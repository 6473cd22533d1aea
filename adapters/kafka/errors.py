"""Errors of the Kafka adapter, and the callback that decides whether an error skips a note or stops the stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redone_sdk.errors import InvalidInputError, ModelOutputError, RedOneError

from .records import OutRecord, SourceRecord

__all__ = [
    "ClassificationError",
    "DeliveryError",
    "ErrorCallback",
    "ErrorContext",
    "FencedError",
    "ShutdownTimeoutError",
    "StreamError",
    "default_on_error",
]


class StreamError(RedOneError):
    """The stream cannot go on; offsets of unfinished work are not committed, so nothing is lost."""


class FencedError(StreamError):
    """Another instance started with this instance's transactional.id: this one is a zombie and must stop."""


class DeliveryError(StreamError):
    """Outputs could not be delivered to Kafka within the retry budget."""


class ShutdownTimeoutError(StreamError):
    """A stop was asked for, but the batch in work could not be finished within `shutdown_timeout_s` (the broker
    is down, say): its offsets are not committed, so the next run redoes it."""


class ClassificationError(StreamError):
    """The classifier failed on a note and the error callback chose to stop the stream."""


Stage = Literal["classify", "produce"]


@dataclass(frozen=True)
class ErrorContext:
    """Where an error happened: the stage, the input record it concerns and, when producing, the output."""

    stage: Stage
    record: SourceRecord | None
    output: OutRecord | None = None


ErrorCallback = Callable[[Exception, ErrorContext], bool]
"""`on_error(error, context) -> skip`: True skips the record (it goes to the dead-letter topic, or is logged
and counted when it cannot be produced), False stops the stream by raising."""


def default_on_error(error: Exception, context: ErrorContext) -> bool:
    """Skip notes the classifier rejects as invalid input, or whose model output is not finite (a `model_output`
    dead letter: fail closed, never a verdict); stop on anything else (a broken model, a bug).

    Stopping is the safe default for systemic failures: offsets are not committed, so a restart redoes the work.
    """
    return isinstance(error, InvalidInputError | ModelOutputError)
