"""Build kafka-python clients from `StreamSettings`: one place that maps our settings to their options."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from .settings import StreamSettings

__all__ = ["admin_client", "consumer", "output_message_limit", "producer"]


def _common(settings: StreamSettings, role: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{role}",
        # Back to a restarted broker within a second, not after kafka-python's default backoff of up to 30 s.
        "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
        **settings.security.client_config(),
    }


def output_message_limit(settings: StreamSettings) -> int:
    """The largest record the stream writes: a dead letter copies at most `max_message_bytes` (key and value
    together) and a review copy holds the note plus its verdict; 64 KiB covers headers and the verdict. Never
    below Kafka's default (1,048,588), so the producer can always write what a default topic accepts."""
    return max(1_048_588, settings.max_message_bytes + 65_536)


def consumer(settings: StreamSettings) -> KafkaConsumer:
    """A group member with manual commits, reading at most one batch per poll."""
    return KafkaConsumer(
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        isolation_level=settings.input_isolation,
        max_poll_records=settings.batch_size,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, min(3_000, settings.session_timeout_ms // 3)),
        max_poll_interval_ms=settings.max_poll_interval_ms,
        allow_auto_create_topics=False,
        **_common(settings, "consumer"),
    )


def producer(settings: StreamSettings) -> KafkaProducer:
    """Idempotent, acks=all; transactional (with a stable transactional.id) under exactly-once."""
    extra: dict[str, Any] = {}
    if settings.exactly_once:
        extra = {
            "transactional_id": settings.effective_transactional_id,
            "transaction_timeout_ms": settings.transaction_timeout_ms,
        }
    return KafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        delivery_timeout_ms=settings.delivery_timeout_ms,
        max_request_size=output_message_limit(settings),
        allow_auto_create_topics=False,
        **extra,
        **_common(settings, "producer"),
    )


def admin_client(settings: StreamSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**_common(settings, "admin"))
