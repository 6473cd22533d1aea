"""`redone stream` (and `python -m redone_sdk.adapters.kafka`): moderate a Kafka topic of notes until stopped.

Every flag has a `REDONE_KAFKA_*` environment variable (see `settings.py`); a flag given wins. Passwords are
read from the environment only (`REDONE_KAFKA_SASL_PLAIN_PASSWORD`, `REDONE_KAFKA_SSL_PASSWORD`), never from
flags, which other users can see in the process list.

Exit codes: 0 stopped normally, 2 bad settings or bundle, 3 fenced by another instance, 4 the shutdown timeout
passed before the batch in work was finished (it is redone by the next run), 1 any other failure.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
import threading
import time
from typing import Any

from pydantic import ValidationError

from redone_sdk.cli import add_bundle_trust_args, bundle_trust_from_args
from redone_sdk.errors import RedOneError
from redone_sdk.inference.options import add_inference_args, options_from_args
from redone_sdk.schemas import format_validation_error

from .errors import FencedError, ShutdownTimeoutError, StreamError
from .logs import configure_json_logging, log_event
from .settings import SecuritySettings, StreamSettings, env_name

__all__ = [
    "EXIT_ERROR",
    "EXIT_FENCED",
    "EXIT_OK",
    "EXIT_SHUTDOWN_TIMEOUT",
    "EXIT_USAGE",
    "add_arguments",
    "main",
    "register",
    "run",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FENCED, EXIT_SHUTDOWN_TIMEOUT = 0, 1, 2, 3, 4

_log = logging.getLogger("redone_sdk.adapters.kafka.cli")

_DESCRIPTION = (
    "Consume notes (JSON) from a Kafka topic as a consumer group, classify them in micro-batches and produce "
    "one verdict per note; review/block notes are copied to a review topic, malformed messages go to a "
    "dead-letter topic. Run more processes with the same --group to scale out."
)

# (flag, settings field, type, help); every default is None so that only given flags override the environment.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--bootstrap", "bootstrap", str, "Kafka bootstrap servers, HOST:PORT[,...] (default 127.0.0.1:9092)"),
    ("--input", "input_topic", str, "topic of notes to moderate (default notes)"),
    ("--output", "output_topic", str, "verdict topic, keyed by note_id (default note-verdicts)"),
    ("--review", "review_topic", str, "topic for review/block notes; '' turns it off (default notes-review)"),
    ("--dlq", "dlq_topic", str, "dead-letter topic for malformed messages (default notes-dlq)"),
    ("--group", "group_id", str, "consumer group id (default redone-moderation)"),
    ("--guarantee", "guarantee", str, "at-least-once (default) or exactly-once (one transaction per batch)"),
    ("--instance-id", "instance_id", str, "stable name of this process (exactly-once: transactional.id suffix)"),
    ("--transactional-id", "transactional_id", str, "explicit transactional.id (exactly-once)"),
    ("--batch-size", "batch_size", int, "most notes classified at once (default 64)"),
    ("--max-wait-ms", "max_wait_ms", int, "longest wait to fill a batch, in ms (default 100)"),
    ("--max-message-bytes", "max_message_bytes", int, "larger messages go to the DLQ (default 1 MiB)"),
    ("--partitions", "topic_partitions", int, "partitions of topics this command creates (default 3)"),
    ("--replication-factor", "replication_factor", int, "replication of topics this command creates (default 1)"),
    ("--offset-reset", "auto_offset_reset", str, "where a new group starts: earliest (default) or latest"),
    ("--session-timeout-ms", "session_timeout_ms", int, "consumer session timeout (default 45000)"),
    (
        "--transaction-timeout-ms",
        "transaction_timeout_ms",
        int,
        "exactly-once: the broker aborts a transaction left open this long by a dead process; its partitions "
        "wait until then (default 10000)",
    ),
    ("--retry-timeout-s", "retry_timeout_s", float, "give up on transient broker errors after this (default 300)"),
    (
        "--shutdown-timeout",
        "shutdown_timeout_s",
        float,
        "seconds a stop (SIGTERM) may take to finish the batch in work; past it, exit 4 with that batch "
        "uncommitted (default 30)",
    ),
    ("--metrics-port", "metrics_port", int, "serve Prometheus metrics on this port (0: any free port)"),
    ("--metrics-host", "metrics_host", str, "address for the metrics endpoint (default 127.0.0.1)"),
    ("--client-id", "client_id", str, "Kafka client id prefix (default redone-stream)"),
    ("--security-protocol", "security_protocol", str, "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("--sasl-mechanism", "sasl_mechanism", str, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI"),
    ("--sasl-username", "sasl_plain_username", str, "SASL user (password: $REDONE_KAFKA_SASL_PLAIN_PASSWORD)"),
    ("--ssl-cafile", "ssl_cafile", str, "CA bundle to verify the brokers"),
    ("--ssl-certfile", "ssl_certfile", str, "client certificate (mutual TLS)"),
    ("--ssl-keyfile", "ssl_keyfile", str, "client key (password: $REDONE_KAFKA_SSL_PASSWORD)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stream's flags, shared by `redone stream` and `python -m redone_sdk.adapters.kafka`."""
    parser.add_argument("--bundle", default=None, help="model bundle directory (default: the SDK's own)")
    add_bundle_trust_args(parser)
    parser.add_argument("--policy", default=None, help="moderation policy JSON replacing the bundle's own")
    # --batch-size is the stream's micro-batch (a setting); a forward pass's cap is --model-batch-size
    add_inference_args(parser, batch_size_flag="--model-batch-size")
    for flag, field, kind, text in _FLAGS:
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=None,
            metavar=flag[2:].upper().replace("-", "_"),
            help=f"{text} [${env_name(field)}]",
        )
    parser.add_argument(
        "--no-create-topics",
        dest="create_topics",
        action="store_false",
        default=None,
        help="do not create missing topics",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long without a message once nothing assigned to this process is waiting (batch jobs, "
        "demos); make it longer than the session timeout so a dead member's partitions are reassigned first",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Entry point of the `redone_sdk.cli` group: adds `redone stream`."""
    parser = subparsers.add_parser("stream", help="moderate a Kafka topic of notes (online)", description=_DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> StreamSettings:
    fields = set(StreamSettings.model_fields) | set(SecuritySettings.model_fields)
    overrides = {name: value for name, value in vars(args).items() if name in fields and value is not None}
    return StreamSettings.from_env(**overrides)


_HARD_STOP_GRACE_S = 3.0


def _hard_stop_after_shutdown_timeout(stream: Any, timeout_s: float) -> None:
    """The process owner's guarantee: once a stop was asked for, exit with EXIT_SHUTDOWN_TIMEOUT at most
    `timeout_s` + 3 s later even if a Kafka client call ignores its deadline (seen once in CI: a broker outage
    held the stream 23 s past SIGTERM). Nothing of the unfinished batch is committed, so it is redone. Every
    thread's stack goes to stderr first, to show which call held it. Daemon thread; the library never exits."""

    def watch() -> None:
        while not stream.stopping:
            time.sleep(0.2)
        time.sleep(timeout_s + _HARD_STOP_GRACE_S)
        log_event(
            _log,
            logging.ERROR,
            "shutdown timeout passed and the stream is still stopping: exiting now; the unfinished batch was not "
            "committed and will be redone (thread stacks follow on stderr)",
            shutdown_timeout_s=timeout_s,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)

    threading.Thread(target=watch, name="redone-hard-stop", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    """Run the stream with parsed arguments; returns the exit code."""
    configure_json_logging(args.log_level.upper())
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        log_event(_log, logging.ERROR, format_validation_error(exc, "stream settings"))
        return EXIT_USAGE
    from .app import ModerationStream  # after logging is set up: importing kafka-python logs

    try:
        stream = ModerationStream.from_bundle(
            args.bundle,
            settings=settings,
            policy=args.policy,
            options=options_from_args(args),
            **bundle_trust_from_args(args),
        )
    except RedOneError as exc:
        log_event(_log, logging.ERROR, "cannot load the bundle", error=str(exc))
        return EXIT_USAGE
    _hard_stop_after_shutdown_timeout(stream, settings.shutdown_timeout_s)
    try:
        stream.run(idle_exit_s=args.exit_when_idle)
    except FencedError as exc:
        log_event(_log, logging.ERROR, "fenced: another instance took over", error=str(exc))
        return EXIT_FENCED
    except ShutdownTimeoutError as exc:
        log_event(
            _log,
            logging.ERROR,
            "shutdown timeout passed; the unfinished batch was not committed and will be redone",
            error=str(exc),
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
        return EXIT_SHUTDOWN_TIMEOUT
    except StreamError as exc:
        log_event(_log, logging.ERROR, "stream failed", error=str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        log_event(_log, logging.WARNING, "interrupted before the last batch was finished; it will be redone")
        return EXIT_ERROR
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redone_sdk.adapters.kafka", description=_DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
