"""Online moderation on Apache Kafka: consume notes, classify them in micro-batches, produce verdicts.

`ModerationStream` is the facade; `StreamSettings` holds its typed settings (arguments or `REDONE_KAFKA_*`
environment variables). Needs the `kafka` extra: `pip install redone-sdk[kafka]`. See docs/kafka.md.
"""

from .app import ModerationStream, RunSummary
from .codec import REASONS, DeadLetterReason, Rejection, decode_note
from .errors import (
    ClassificationError,
    DeliveryError,
    ErrorCallback,
    ErrorContext,
    FencedError,
    ShutdownTimeoutError,
    StreamError,
    default_on_error,
)
from .metrics import StreamMetrics
from .process import BatchClassifier
from .records import ReviewItem, header_map
from .settings import Guarantee, SecuritySettings, StreamSettings

__all__ = [
    "REASONS",
    "BatchClassifier",
    "ClassificationError",
    "DeadLetterReason",
    "DeliveryError",
    "ErrorCallback",
    "ErrorContext",
    "FencedError",
    "Guarantee",
    "ModerationStream",
    "Rejection",
    "ReviewItem",
    "RunSummary",
    "SecuritySettings",
    "ShutdownTimeoutError",
    "StreamError",
    "StreamMetrics",
    "StreamSettings",
    "decode_note",
    "default_on_error",
    "header_map",
]
