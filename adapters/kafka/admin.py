"""Create the stream's topics when they are missing (input, verdicts, review, dead letters)."""

from __future__ import annotations

import logging

from kafka.errors import TopicAlreadyExistsError

from .clients import admin_client, dlq_message_limit
from .errors import StreamError
from .logs import log_event
from .retry import Backoff, retry_transient
from .settings import StreamSettings

__all__ = ["ensure_topics", "stream_topics"]

_log = logging.getLogger("redone_sdk.adapters.kafka.admin")


def stream_topics(settings: StreamSettings) -> list[str]:
    return [t for t in (settings.input_topic, settings.output_topic, settings.review_topic, settings.dlq_topic) if t]


def ensure_topics(settings: StreamSettings, *, backoff: Backoff | None = None) -> list[str]:
    """Create the missing topics with `topic_partitions` partitions; returns the names it created.

    Safe when several processes start at once: a topic another one created meanwhile counts as present.
    The dead-letter topic accepts messages larger than the input limit, so an oversized note fits there.
    """
    backoff = backoff or Backoff(
        settings.retry_backoff_ms / 1000, settings.retry_backoff_max_ms / 1000, settings.retry_timeout_s
    )
    admin = retry_transient(lambda: admin_client(settings), backoff=backoff, what="admin connect")
    try:
        wanted = stream_topics(settings)
        existing = set(retry_transient(admin.list_topics, backoff=backoff, what="list topics"))
        missing = [t for t in wanted if t not in existing]
        if missing:
            specs = {
                name: {
                    "num_partitions": settings.topic_partitions,
                    "replication_factor": settings.replication_factor,
                    "configs": {"max.message.bytes": str(dlq_message_limit(settings))}
                    if name == settings.dlq_topic
                    else {},
                }
                for name in missing
            }
            result = retry_transient(
                lambda: admin.create_topics(specs, raise_errors=False), backoff=backoff, what="create topics"
            )
            for topic in result.get("topics", []):
                code = topic.get("error_code", 0)
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise StreamError(f"creating topic {topic.get('name')} failed: {topic}")
            log_event(_log, logging.INFO, "topics created", topics=missing, partitions=settings.topic_partitions)
        admin.wait_for_topics(wanted, timeout_ms=int(settings.retry_timeout_s * 1000))
        return missing
    finally:
        admin.close()
