"""`redone serve reviewers add|list|disable` and `redone serve db upgrade|current`."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from redone_sdk.schemas import format_validation_error

from ..errors import DatabaseUnavailableError

__all__ = ["add_review_commands", "run_db", "run_reviewers"]

EXIT_OK, EXIT_USAGE = 0, 2


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
