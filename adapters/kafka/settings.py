"""Typed, frozen settings of the stream, from keyword arguments and/or `REDONE_KAFKA_*` environment variables.

Arguments win over the environment, which wins over the defaults. Every field's variable is
`REDONE_KAFKA_<FIELD>` (e.g. `REDONE_KAFKA_BOOTSTRAP`, `REDONE_KAFKA_BATCH_SIZE`), except that the topics and
the group use the CLI's short names: `REDONE_KAFKA_INPUT`, `_OUTPUT`, `_REVIEW`, `_DLQ` and `_GROUP`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["ENV_PREFIX", "Guarantee", "SecuritySettings", "StreamSettings", "env_name"]

ENV_PREFIX = "REDONE_KAFKA_"

Guarantee = Literal["at-least-once", "exactly-once"]

_ENV_ALIASES = {
    "input_topic": "INPUT",
    "output_topic": "OUTPUT",
    "review_topic": "REVIEW",
    "dlq_topic": "DLQ",
    "group_id": "GROUP",
}


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + _ENV_ALIASES.get(field, field.upper())


class SecuritySettings(BaseModel):
    """TLS and SASL options, passed through unchanged to kafka-python's clients (same names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    sasl_kerberos_service_name: str | None = None
    sasl_kerberos_domain_name: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_crlfile: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> SecuritySettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        return self

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for KafkaConsumer/KafkaProducer/KafkaAdminClient (unset options left out)."""
        config: dict[str, Any] = {}
        for name, value in self:
            if value is None:
                continue
            config[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return config


class StreamSettings(BaseModel):
    """Everything the moderation stream needs to know; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(default="127.0.0.1:9092", min_length=1, description="HOST:PORT[,HOST:PORT...]")
    input_topic: str = Field(default="notes", min_length=1, description="Topic of incoming notes (JSON).")
    output_topic: str = Field(default="note-verdicts", min_length=1, description="One verdict per note.")
    review_topic: str | None = Field(default="notes-review", description="Copies of review/block notes; None: off.")
    dlq_topic: str = Field(default="notes-dlq", min_length=1, description="Messages that are not valid notes.")
    group_id: str = Field(default="redone-moderation", min_length=1)
    guarantee: Guarantee = "at-least-once"
    instance_id: str | None = Field(
        default=None, description="Stable name of this process; the exactly-once transactional.id derives from it."
    )
    transactional_id: str | None = Field(default=None, description="Explicit transactional.id (exactly-once).")
    client_id: str = "redone-stream"

    batch_size: int = Field(
        default=64, ge=1, le=10_000, description="Most notes classified at once (or what max_wait_ms gathered)."
    )
    max_wait_ms: int = Field(default=100, ge=0, le=60_000, description="Longest wait to fill a batch.")
    max_message_bytes: int = Field(default=1_048_576, ge=64, description="Larger messages go to the DLQ.")

    create_topics: bool = True
    topic_partitions: int = Field(default=3, ge=1, description="Partitions of topics the stream creates.")
    replication_factor: int = Field(default=1, ge=1)

    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    input_isolation: Literal["read_committed", "read_uncommitted"] = "read_committed"
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    transaction_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Exactly-once: the broker aborts a transaction left open this long (a process killed with -9); "
        "until then the partitions it wrote offsets for wait. A transaction spans one batch's sends and commit.",
    )
    delivery_timeout_ms: int = Field(default=120_000, ge=1_000)
    linger_ms: int = Field(default=5, ge=0)

    reconnect_backoff_max_ms: int = Field(
        default=1_000, ge=50, description="Longest wait between reconnects (kafka-python's own default is 30 s)."
    )
    retry_backoff_ms: int = Field(default=200, ge=1, description="First wait before retrying a transient error.")
    retry_backoff_max_ms: int = Field(default=5_000, ge=1)
    retry_timeout_s: float = Field(default=300.0, gt=0, description="Give up on a transient error after this.")
    shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="After a stop request (SIGTERM), longest time to finish the batch in work and close; past it, "
        "the stream stops with that batch uncommitted (redone by the next run).",
    )

    metrics_port: int | None = Field(default=None, ge=0, le=65_535, description="Prometheus /metrics port.")
    metrics_host: str = "127.0.0.1"

    security: SecuritySettings = SecuritySettings()

    @field_validator("review_topic", "instance_id", "transactional_id", "metrics_port", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _distinct_topics(self) -> StreamSettings:
        outputs = [t for t in (self.output_topic, self.review_topic, self.dlq_topic) if t]
        if self.input_topic in outputs:
            raise ValueError(f"the input topic {self.input_topic!r} cannot also be an output topic")
        if self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ValueError("retry_backoff_max_ms must be >= retry_backoff_ms")
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        return [part.strip() for part in self.bootstrap.split(",") if part.strip()]

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly-once"

    @property
    def effective_transactional_id(self) -> str:
        """`transactional_id`, else `<group_id>-<instance_id or hostname>`: stable across restarts, so a
        restarted process fences its crashed predecessor and aborts its open transaction at once."""
        if self.transactional_id:
            return self.transactional_id
        return f"{self.group_id}-{self.instance_id or socket.gethostname()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StreamSettings:
        """Build settings from `REDONE_KAFKA_*` variables (empty ones ignored), then `overrides` on top.

        `overrides` may hold security fields flat (`sasl_mechanism=...`) or a `security=` object/mapping.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        security: dict[str, Any] = {}
        for name in cls.model_fields:
            if name != "security" and env.get(env_name(name), "") != "":
                values[name] = env[env_name(name)]
        for name in SecuritySettings.model_fields:
            if env.get(env_name(name), "") != "":
                security[name] = env[env_name(name)]
        for name, value in overrides.items():
            if name in SecuritySettings.model_fields:
                security[name] = value
            elif name == "security" and value is not None:
                given = value.model_dump() if isinstance(value, SecuritySettings) else dict(value)
                security.update(given)
            else:
                values[name] = value
        return cls(**values, security=SecuritySettings(**security))
