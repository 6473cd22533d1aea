"""`redone serve` (and `python -m redone_sdk.serve`): the HTTP service, and `redone serve keys add|list|revoke`.

Every service flag has a `REDONE_SERVE_*` environment variable (see `settings.py`); a flag given wins.
Exit codes: 0 stopped normally, 2 bad settings, bundle, policy or database, 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

from redone_sdk.cli import add_bundle_trust_args, bundle_trust_from_args
from redone_sdk.errors import RedOneError
from redone_sdk.inference.options import add_inference_args, options_from_args
from redone_sdk.schemas import format_validation_error

from .errors import DatabaseUnavailableError
from .settings import ServeSettings, env_name

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "add_arguments", "main", "register", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

_log = logging.getLogger("redone_sdk.serve")

_DESCRIPTION = (
    "Serve the model over HTTP: OpenAI-compatible POST /v1/moderations, native /v1/classify, /v1/match and "
    "/v1/rank, /healthz, /readyz, /metrics and an OpenAPI page at /docs. Concurrent requests are gathered into "
    "shared classify passes. API keys live in a database (SQLite file by default, PostgreSQL by URL): create one "
    "with `redone serve keys add NAME`. See docs/serve.md."
)

# (flag, settings field, type, help); defaults are None so that only given flags override the environment
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--host", "host", str, "address to bind (default 127.0.0.1; 0.0.0.0 exposes the service)"),
    ("--port", "port", int, "TCP port (default 8080; 0: a free one, printed at start)"),
    ("--max-batch", "max_batch", int, "most notes in one gathered classify pass (default 64)"),
    ("--max-wait-ms", "max_wait_ms", float, "longest wait to fill a pass, in ms (default 5)"),
    ("--max-passes", "max_passes", int, "most gathered passes running at once (default: the model's --workers)"),
    ("--max-queue", "max_queue", int, "most notes queued before requests get 429 (default 2048)"),
    ("--max-inputs", "max_inputs", int, "most notes or pairs in one request (default 256)"),
    ("--max-body-bytes", "max_body_bytes", int, "larger request bodies get 413 (default 1 MiB)"),
    ("--request-timeout-s", "request_timeout_s", float, "longest wait for a result before 503 (default 30)"),
    ("--drain-timeout-s", "drain_timeout_s", float, "on SIGTERM, longest wait for requests in flight (default 30)"),
    ("--rate-limit", "rate_limit", float, "requests per second per key (default 50)"),
    ("--rate-burst", "rate_burst", int, "requests a key may send at once (default 100)"),
    ("--key-cache-s", "key_cache_s", float, "seconds a key check is reused; revocations wait this long (default 5)"),
    ("--key-grace-s", "key_grace_s", float, "while the database is down, keys checked this recently work (300)"),
]


def _db_argument(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--db",
        default=default,
        metavar="URL",
        help="SQLAlchemy URL of the key database: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
        f"(default: an SQLite file under ~/.local/share/redone) [${env_name('db')}]",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The service's flags and the `keys` subcommands, shared by `redone serve` and `python -m`."""
    parser.add_argument("--bundle", default=None, help="bundle name or directory (default: the SDK's own)")
    add_bundle_trust_args(parser)
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="a policy JSON file: FILE replaces the bundle's policy, NAME=FILE adds one that /v1/classify "
        'requests select with "policy": NAME (repeatable)',
    )
    _db_argument(parser)
    add_inference_args(parser)
    for flag, field, kind, text in _FLAGS:
        parser.add_argument(
            flag, dest=field, type=kind, default=None, metavar="N" if kind is not str else flag[2:].upper(),
            help=f"{text} [${env_name(field)}]",
        )  # fmt: skip
    parser.add_argument(
        "--batching",
        dest="batching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"gather concurrent requests into shared passes (default on) [${env_name('batching')}]",
    )
    parser.add_argument(
        "--no-auth",
        dest="auth",
        action="store_false",
        default=None,
        help="serve without API keys (trusted networks only)",
    )
    parser.add_argument(
        "--log-notes", dest="log_notes", action="store_true", default=None, help="log each note's text and verdict"
    )
    parser.add_argument("--no-access-log", dest="access_log", action="store_false", help="no line per request")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    parser.set_defaults(handler=run, keys_command=None)

    keys = parser.add_subparsers(dest="keys_group", metavar="{keys,reviewers,db,review-feed}", title="commands")
    group = keys.add_parser("keys", help="add, list or revoke API keys", description="Manage the service's API keys.")
    commands = group.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", help="create a key and print it (shown once)")
    add.add_argument("name", help="who or what the key is for")
    add.add_argument("--rate-limit", dest="key_rate_limit", type=float, default=None, help="requests/s for this key")
    listing = commands.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--active", action="store_true", help="only keys that are not revoked")
    revoke = commands.add_parser("revoke", help="revoke a key by id, shown prefix or the key itself")
    revoke.add_argument("key", help="id, prefix (rdn_XXXXXXXX) or key")
    for sub in (add, listing, revoke):
        _db_argument(sub, default=argparse.SUPPRESS)
        sub.set_defaults(handler=run_keys)
    from .review.cli import add_review_commands

    add_review_commands(keys, _db_argument)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Entry point of the `redone_sdk.cli` group: adds `redone serve`."""
    parser = subparsers.add_parser(
        "serve", help="serve moderation over HTTP (OpenAI-compatible)", description=_DESCRIPTION
    )
    add_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    fields = set(ServeSettings.model_fields)
    return ServeSettings.from_env(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _policies(values: list[str]) -> tuple[Any, dict[str, Any]]:
    from redone_sdk.policy import Policy

    replacement, named = None, {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name and "/" not in name:
            named[name] = Policy.load(path)
        elif replacement is None:
            replacement = Policy.load(value)
        else:
            raise ValueError("--policy FILE (without NAME=) may be given once: it replaces the bundle's policy")
    return replacement, named


def _open_store(settings: ServeSettings) -> Any:
    from .db import Database
    from .keys import KeyStore

    db = Database(settings.db)
    db.connect()
    return KeyStore(db, cache_s=settings.key_cache_s, grace_s=settings.key_grace_s)


def run(args: argparse.Namespace) -> int:
    """Start the service with parsed arguments; returns the exit code once it has stopped."""
    _configure_logging(args.log_level)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        _log.error(format_validation_error(exc, "serve settings"))
        return EXIT_USAGE
    try:
        store = _open_store(settings)
    except DatabaseUnavailableError as exc:
        _log.error("cannot start: %s", exc)
        return EXIT_USAGE
    from redone_sdk.moderator import Moderator

    from .app import create_app
    from .server import bind, run_server

    try:
        policy, named = _policies(args.policy)
        moderator = Moderator.load(
            args.bundle, policy=policy, options=options_from_args(args), **bundle_trust_from_args(args)
        )
        app = create_app(moderator, settings, store, policies=named)
    except (RedOneError, ValueError) as exc:
        _log.error("cannot start: %s", exc)
        return EXIT_USAGE
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        _log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return EXIT_USAGE
    host, port = sock.getsockname()[:2]
    state = app.state.serve
    _log.info(
        "listening on http://%s:%d (model %s, database %s, auth %s, batching %s)",
        host, port, state.model_name, store.database_url, "on" if settings.auth else "OFF",
        f"{settings.max_batch} notes / {settings.max_wait_ms:g} ms / {settings.max_passes or moderator.workers} "
        "passes at once" if settings.batching else "off",
    )  # fmt: skip
    if not settings.auth and host not in ("127.0.0.1", "::1", "localhost"):
        _log.warning("auth is off on a non-loopback address: anyone who reaches %s can use the service", host)
    run_server(
        app.state.asgi,
        sock=sock,
        lifecycle=state.lifecycle,
        drain_timeout_s=settings.drain_timeout_s,
        access_log=args.access_log,
        log_level=args.log_level,
    )
    _log.info("stopped")
    return EXIT_OK


def run_keys(args: argparse.Namespace) -> int:
    """`redone serve keys add|list|revoke`."""
    try:
        settings = ServeSettings.from_env(db=args.db)
        store = _open_store(settings)
        if args.keys_command == "add":
            info, secret = store.add(args.name, rate_limit=args.key_rate_limit)
            print(secret)
            print(f"key {info.id} ({info.name}) created; it is shown only now: keep it secret", file=sys.stderr)
        elif args.keys_command == "list":
            print(f"{'id':>4}  {'prefix':<12}  {'created (UTC)':<19}  {'state':<8}  {'rate/s':>7}  name")
            for info in store.list(include_revoked=not args.active):
                state = "active" if info.active else "revoked"
                rate = f"{info.rate_limit:g}" if info.rate_limit else "-"
                created = info.created_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{info.id:>4}  {info.prefix:<12}  {created:<19}  {state:<8}  {rate:>7}  {info.name}")
        else:
            info = store.revoke(args.key)
            if info is None:
                print(f"redone serve keys: no key matches {args.key!r}", file=sys.stderr)
                return EXIT_USAGE
            print(f"key {info.id} ({info.name}, {info.prefix}) revoked", file=sys.stderr)
    except ValidationError as exc:
        print(f"redone serve keys: {format_validation_error(exc, 'settings')}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseUnavailableError, ValueError) as exc:
        print(f"redone serve keys: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redone_sdk.serve", description=_DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
