"""Typed settings from arguments and REDONE_KAFKA_* variables (no broker needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from redone_sdk.adapters.kafka import SecuritySettings, StreamSettings


def test_defaults_are_a_local_at_least_once_stream() -> None:
    s = StreamSettings()
    assert s.bootstrap_servers == ["127.0.0.1:9092"]
    assert s.guarantee == "at-least-once" and not s.exactly_once
    assert (s.input_topic, s.output_topic, s.review_topic, s.dlq_topic) == (
        "notes",
        "note-verdicts",
        "notes-review",
        "notes-dlq",
    )


def test_environment_then_arguments() -> None:
    env = {
        "REDONE_KAFKA_BOOTSTRAP": "k1:9092, k2:9092",
        "REDONE_KAFKA_INPUT": "in",
        "REDONE_KAFKA_GROUP": "g",
        "REDONE_KAFKA_BATCH_SIZE": "128",
        "REDONE_KAFKA_GUARANTEE": "exactly-once",
        "REDONE_KAFKA_REVIEW": "",  # empty variables are ignored
        "REDONE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "REDONE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "REDONE_KAFKA_SASL_PLAIN_USERNAME": "svc",
        "REDONE_KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
    }
    s = StreamSettings.from_env(env, batch_size=32, ssl_cafile="/etc/ca.pem")
    assert s.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert (s.input_topic, s.group_id, s.batch_size, s.review_topic) == ("in", "g", 32, "notes-review")
    assert s.exactly_once
    config = s.security.client_config()
    assert config == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_check_hostname": True,
    }
    assert "s3cret" not in repr(s), "secrets stay out of reprs and logs"


def test_settings_are_frozen_and_validated() -> None:
    s = StreamSettings()
    with pytest.raises(ValidationError):
        s.batch_size = 5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="guarantee"):
        StreamSettings(guarantee="at-most-once")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="batch_size"):
        StreamSettings.from_env({"REDONE_KAFKA_BATCH_SIZE": "0"})
    with pytest.raises(ValidationError, match="cannot also be an output topic"):
        StreamSettings(input_topic="x", dlq_topic="x")
    with pytest.raises(ValidationError, match=r"Extra inputs"):
        StreamSettings(unknown_field=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        SecuritySettings(security_protocol="SASL_PLAINTEXT")


def test_review_topic_can_be_turned_off() -> None:
    assert StreamSettings(review_topic="").review_topic is None


def test_transactional_id_is_stable_per_instance() -> None:
    assert StreamSettings(group_id="g", instance_id="pod-3").effective_transactional_id == "g-pod-3"
    assert StreamSettings(transactional_id="explicit").effective_transactional_id == "explicit"
    assert StreamSettings(group_id="g").effective_transactional_id.startswith("g-")


def test_shutdown_and_transaction_timeouts_are_settings() -> None:
    s = StreamSettings.from_env(
        {"REDONE_KAFKA_SHUTDOWN_TIMEOUT_S": "7.5", "REDONE_KAFKA_TRANSACTION_TIMEOUT_MS": "5000"}
    )
    assert (s.shutdown_timeout_s, s.transaction_timeout_ms) == (7.5, 5000)
    assert StreamSettings().transaction_timeout_ms == 10_000, "short, so a killed process's partitions wait little"
    with pytest.raises(ValidationError, match="shutdown_timeout_s"):
        StreamSettings(shutdown_timeout_s=0)
