"""Create the stream's topics when they are missing (input, verdicts, review, dead letters), and read how
large a message each output topic accepts."""

from __future__ import annotations

import logging

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from .clients import admin_client, output_message_limit
from .errors import StreamError
from .logs import log_event
from .retry import Backoff, retry_transient
from .settings import StreamSettings

__all__ = ["MIN_TOPIC_LIMIT", "ensure_topics", "output_topics", "stream_topics", "topic_limits"]

# An output topic must accept a producer batch of small records (kafka-python's batch_size, 16 KiB) and a
# too_large envelope (`records.ENVELOPE_MAX_BYTES`); real topics accept about 1 MB.
MIN_TOPIC_LIMIT = 32_768

_log = logging.getLogger("redone_sdk.adapters.kafka.admin")


def stream_topics(settings: StreamSettings) -> list[str]:
    return [settings.input_topic, *output_topics(settings)]


def output_topics(settings: StreamSettings) -> list[str]:
    return [t for t in (settings.output_topic, settings.review_topic, settings.dlq_topic) if t]


def ensure_topics(settings: StreamSettings, *, backoff: Backoff | None = None) -> list[str]:
    """Create the missing topics with `topic_partitions` partitions; returns the names it created.

    Safe when several processes start at once: a topic another one created meanwhile counts as present.
    The output topics accept `output_message_limit` bytes: the largest record the stream writes.
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
                    "configs": {"max.message.bytes": str(output_message_limit(settings))}
                    if name != settings.input_topic
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


def topic_limits(settings: StreamSettings, *, backoff: Backoff) -> dict[str, int]:
    """Per output topic, the largest record it may receive: its `max.message.bytes`, capped by the producer's
    request limit. An output over it goes to the dead-letter topic as a `too_large` envelope instead of
    failing its batch. Where the broker does not say (no DescribeConfigs permission), the producer's limit."""
    limit = output_message_limit(settings)
    topics = output_topics(settings)
    admin = retry_transient(lambda: admin_client(settings), backoff=backoff, what="admin connect")
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs=["max.message.bytes"]) for t in topics]
        described = retry_transient(lambda: admin.describe_configs(resources), backoff=backoff, what="describe")
        found = described.get("topic", {})
        limits = {t: min(limit, int(found[t]["max.message.bytes"]["value"])) for t in topics}
    except (KafkaError, KeyError, TypeError, ValueError) as exc:
        log_event(
            _log,
            logging.WARNING,
            "cannot read the output topics' max.message.bytes; assuming they accept the producer's limit",
            limit=limit,
            error=repr(exc),
        )
        return dict.fromkeys(topics, limit)
    finally:
        admin.close()
    small = {t: n for t, n in limits.items() if n < MIN_TOPIC_LIMIT}
    if small:
        raise StreamError(f"output topics accept too small messages (max.message.bytes < {MIN_TOPIC_LIMIT}): {small}")
    return limits
