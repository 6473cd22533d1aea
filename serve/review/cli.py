"""`redone serve reviewers add|list|disable`, `redone serve db upgrade|current` and `redone serve review-feed`
(the Kafka review topic into the queue; kafka-python is imported only when it runs)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from redone_sdk.schemas import format_validation_error

from ..errors import DatabaseUnavailableError

__all__ = ["add_review_commands", "run_db", "run_review_feed", "run_reviewers"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def add_review_commands(commands: Any, db_argument: Callable[..., None]) -> None:
    """Add the `reviewers` and `db` groups to `redone serve`'s subcommands."""
    group = commands.add_parser(
        "reviewers", help="add, list or disable review-console accounts", description="Manage console reviewers."
    )
    sub = group.add_subparsers(dest="reviewers_command", required=True, metavar="COMMAND")
    add = sub.add_parser("add", help="create a reviewer (password asked, or read from stdin)")
    add.add_argument("username", help="a-z, 0-9, '.', '_', '-'")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    listing = sub.add_parser("list", help="list reviewers")
    disable = sub.add_parser("disable", help="disable a reviewer: sessions end, claims are released")
    disable.add_argument("username")
    for parser in (add, listing, disable):
        db_argument(parser, default=argparse.SUPPRESS)
        parser.set_defaults(handler=run_reviewers)

    database = commands.add_parser(
        "db", help="upgrade the database schema (done at start too)", description="Schema migrations (Alembic)."
    )
    sub = database.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    for name, text in (("upgrade", "upgrade to the newest schema (adopts a pre-migration database)"),
                       ("current", "print the database's schema revision")):  # fmt: skip
        parser = sub.add_parser(name, help=text)
        db_argument(parser, default=argparse.SUPPRESS)
        parser.set_defaults(handler=run_db)

    feed = commands.add_parser(
        "review-feed",
        help="queue the review topic of `redone stream` (Kafka) for the console",
        description="Consume the review topic of `redone stream` into the review queue, at least once and without "
        "duplicates (a note is queued once per bundle version); malformed messages go to a dead-letter topic. "
        "Needs the kafka extra. TLS/SASL options come from the REDONE_KAFKA_* variables, as for `redone stream`. "
        "See docs/review.md.",
    )
    db_argument(feed, default=argparse.SUPPRESS)
    for flag, dest, kind, text in _FEED_FLAGS:
        feed.add_argument(flag, dest=dest, type=kind, default=None, metavar=flag[2:].upper().replace("-", "_"),
                          help=text)  # fmt: skip
    feed.add_argument(
        "--only-review", action="store_true", help="queue `review` items only (default: `review` and `block`)"
    )
    feed.add_argument("--no-create-topics", dest="create_topics", action="store_false", default=None,
                      help="do not create the topics when missing")  # fmt: skip
    feed.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                      help="stop after this long without a message (batch jobs, tests)")  # fmt: skip
    feed.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    feed.set_defaults(handler=run_review_feed)


# (flag, ReviewFeedSettings field, type, help)
_FEED_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--bootstrap", "bootstrap", str, "Kafka HOST:PORT[,HOST:PORT...] (default 127.0.0.1:9092)"),
    ("--topic", "topic", str, "the review topic of `redone stream` (default notes-review)"),
    ("--group", "group_id", str, "consumer group (default redone-review-feed; never the stream's own)"),
    ("--dlq", "dlq_topic", str, "dead-letter topic for malformed messages (default notes-review-dlq)"),
    ("--batch-size", "batch_size", int, "most messages queued in one database transaction (default 100)"),
    ("--policy-name", "policy", str, "policy name stored on the queued rows (default stream)"),
]


def _database(args: argparse.Namespace, *, create: bool) -> Any:
    from ..db import Database
    from ..settings import ServeSettings

    db = Database(ServeSettings.from_env(db=getattr(args, "db", None)).db)
    db.connect(create=create)
    return db


def run_reviewers(args: argparse.Namespace) -> int:
    from .store import ReviewError, ReviewStore

    try:
        store = ReviewStore(_database(args, create=True))
        if args.reviewers_command == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"password for {args.username}: ")
                if getpass.getpass("again: ") != password:
                    print("redone serve reviewers: the passwords differ", file=sys.stderr)
                    return EXIT_USAGE
            info = store.add_reviewer(args.username, password)
            print(f"reviewer {info.id} ({info.username}) created", file=sys.stderr)
        elif args.reviewers_command == "list":
            print(f"{'id':>4}  {'created (UTC)':<19}  {'state':<8}  name")
            for info in store.reviewers():
                state = "active" if info.active else "disabled"
                print(f"{info.id:>4}  {info.created_at.strftime('%Y-%m-%d %H:%M:%S'):<19}  {state:<8}  {info.username}")
        else:
            found = store.disable_reviewer(args.username)
            if found is None:
                print(f"redone serve reviewers: no reviewer {args.username!r}", file=sys.stderr)
                return EXIT_USAGE
            print(f"reviewer {found.id} ({found.username}) disabled", file=sys.stderr)
    except ValidationError as exc:
        print(f"redone serve reviewers: {format_validation_error(exc, 'settings')}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseUnavailableError, ReviewError) as exc:
        print(f"redone serve reviewers: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def run_db(args: argparse.Namespace) -> int:
    from .. import migrations

    try:
        db = _database(args, create=False)
        if args.db_command == "upgrade":
            before, after = migrations.upgrade(db.engine)
            print(f"database {db.safe_url}: {before or 'none'} -> {after}", file=sys.stderr)
        else:
            print(migrations.current(db.engine) or "none")
    except ValidationError as exc:
        print(f"redone serve db: {format_validation_error(exc, 'settings')}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailableError as exc:
        print(f"redone serve db: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def run_review_feed(args: argparse.Namespace) -> int:
    """`redone serve review-feed`: runs until SIGTERM/SIGINT (or --exit-when-idle); 0 when stopped, 2 on bad
    settings or a missing kafka extra, 1 when Kafka stays unreachable or dead letters cannot be delivered."""
    try:
        from redone_sdk.adapters.kafka.logs import configure_json_logging, log_event
    except ImportError:  # pragma: no cover - the [kafka] extra is not installed
        print("redone serve review-feed: needs kafka-python: pip install 'redone-sdk[kafka]'", file=sys.stderr)
        return EXIT_USAGE
    import logging

    configure_json_logging(args.log_level.upper())
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step otherwise
    log = logging.getLogger("redone_sdk.serve.review_feed")
    from kafka.errors import KafkaError

    from redone_sdk.adapters.kafka.errors import StreamError
    from redone_sdk.adapters.kafka.review_feed import ReviewFeed, ReviewFeedSettings
    from redone_sdk.adapters.kafka.settings import SecuritySettings, env_name

    from ..db import Database
    from ..settings import ServeSettings
    from .feed import ConsoleQueue

    try:
        overrides = {dest: getattr(args, dest) for _, dest, _, _ in _FEED_FLAGS if getattr(args, dest) is not None}
        if args.create_topics is not None:
            overrides["create_topics"] = args.create_topics
        if args.only_review:
            overrides["actions"] = ("review",)
        security = {  # TLS/SASL: the REDONE_KAFKA_* variables of `redone stream` (same cluster, same secrets)
            name: os.environ[env_name(name)] for name in SecuritySettings.model_fields if os.environ.get(env_name(name))
        }
        settings = ReviewFeedSettings(**overrides, security=SecuritySettings(**security))
        db = Database(ServeSettings.from_env(db=getattr(args, "db", None)).db)
    except ValidationError as exc:
        log_event(log, logging.ERROR, format_validation_error(exc, "review feed settings"))
        return EXIT_USAGE
    except DatabaseUnavailableError as exc:
        log_event(log, logging.ERROR, "bad database URL", error=str(exc))
        return EXIT_USAGE
    feed = ReviewFeed(ConsoleQueue(db), settings)
    try:
        feed.run(idle_exit_s=args.exit_when_idle)
    except (StreamError, KafkaError) as exc:
        log_event(log, logging.ERROR, "review feed failed; uncommitted messages are redone at the next start",
                  error=str(exc))  # fmt: skip
        return EXIT_ERROR
    except KeyboardInterrupt:
        log_event(log, logging.WARNING, "interrupted; the unfinished batch is redone at the next start")
        return EXIT_ERROR
    return EXIT_OK
