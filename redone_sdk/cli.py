"""The `redone` command line: `moderate` and `match` JSON lines; plug-ins add `train`, `stream`, … .

Plug-ins register through the entry-point group `redone_sdk.cli`: each entry point is a function
`register(subparsers)` that adds a subparser and sets `handler=run` with `run(args) -> int`.
Plug-ins load only when present, so the core CLI never imports torch or kafka.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import IO, Any

from pydantic import ValidationError

from redone_sdk import __version__
from redone_sdk.errors import RedOneError
from redone_sdk.schemas import Note, format_validation_error

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_BAD_LINES, EXIT_ERROR = 0, 1, 2


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
    else:
        with open(path, encoding="utf-8", errors="strict") as handle:
            yield handle


def _read_jsonl(path: str, parse: Callable[[Any], Any], err: IO[str]) -> tuple[list[tuple[int, Any]], int]:
    """Parse every line; report bad ones as `FILE:LINE: reason` on stderr and keep going."""
    good: list[tuple[int, Any]] = []
    bad = 0
    name = "<stdin>" if path == "-" else path
    with _open_input(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                good.append((number, parse(json.loads(line))))
            except json.JSONDecodeError as exc:
                bad += 1
                print(f"{name}:{number}: not JSON: {exc.msg} at column {exc.colno}", file=err)
            except ValidationError as exc:
                bad += 1
                print(f"{name}:{number}: {format_validation_error(exc, 'record')}", file=err)
            except (RedOneError, ValueError, TypeError) as exc:
                bad += 1
                print(f"{name}:{number}: {exc}", file=err)
    return good, bad


def _parse_note(value: Any) -> Note:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return Note.model_validate(value)


def _parse_pair(value: Any) -> tuple[str, Note]:
    if not isinstance(value, dict) or set(value) != {"query", "note"}:
        raise TypeError('expected {"query": "...", "note": {...note fields...}}')
    if not isinstance(value["query"], str) or not value["query"].strip():
        raise TypeError("query must be a non-empty string")
    return value["query"], _parse_note(value["note"])


def _write(results: list[Any], out: IO[str]) -> None:
    for result in results:
        out.write(result.model_dump_json() + "\n")
    out.flush()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _moderate(args: argparse.Namespace) -> int:
    from redone_sdk.moderator import Moderator

    moderator = Moderator.load(
        args.bundle,
        policy=args.policy,
        backend=args.backend,
        batch_size=args.batch_size,
        intra_op_threads=args.threads,
        workers=args.workers,
    )
    notes, bad = _read_jsonl(args.input, _parse_note, sys.stderr)
    for chunk in _chunks([n for _, n in notes], 1024):
        _write(moderator.classify_batch(chunk), sys.stdout)
    if args.summary:
        print(f"{len(notes)} notes moderated, {bad} bad lines", file=sys.stderr)
    return EXIT_BAD_LINES if bad else EXIT_OK


def _match(args: argparse.Namespace) -> int:
    from redone_sdk.matcher import NoteQueryMatcher

    matcher = NoteQueryMatcher.load(
        args.bundle,
        backend=args.backend,
        batch_size=args.batch_size,
        intra_op_threads=args.threads,
        workers=args.workers,
    )
    pairs, bad = _read_jsonl(args.input, _parse_pair, sys.stderr)
    for chunk in _chunks([p for _, p in pairs], 256):
        _write(matcher.score_pairs(chunk), sys.stdout)
    return EXIT_BAD_LINES if bad else EXIT_OK


def _bundle_info(args: argparse.Namespace) -> int:
    from redone_sdk.bundle import Bundle, dump_manifest

    bundle = Bundle.load(args.bundle)
    print(
        dump_manifest(bundle.manifest)
        if args.manifest
        else f"{bundle.name} {bundle.version} at {bundle.path} (verified)"
    )
    return EXIT_OK


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default=None, help="Bundle directory (default: the bundle shipped with the SDK).")
    parser.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto", help="Inference backend.")
    parser.add_argument("--batch-size", type=int, default=8, help="Most notes per forward pass.")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Forward passes run at once, each on one thread (default on CPU: one per core; see InferenceOptions).",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="Intra-op threads of each pass (alone: one pass at a time)."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redone", description="Moderate notes and match them to queries, offline.")
    parser.add_argument("--version", action="version", version=f"redone-sdk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    moderate = commands.add_parser(
        "moderate",
        help="Classify notes from JSON lines.",
        description="Read one note per line (JSON: note_id, title, content, …), write one ModerationResult per line. "
        "Bad lines are reported on stderr with their line number; the others are still moderated (exit 1).",
    )
    moderate.add_argument("input", nargs="?", default="-", help="JSON-lines file, or - for stdin (default).")
    moderate.add_argument("--policy", default=None, help="Policy JSON file (default: the bundle's policy).")
    moderate.add_argument("--summary", action="store_true", help="Print a count line on stderr at the end.")
    _add_model_options(moderate)
    moderate.set_defaults(handler=_moderate)

    match = commands.add_parser(
        "match",
        help="Score query-note pairs from JSON lines.",
        description='Read {"query": …, "note": {…}} per line, write one MatchResult per line.',
    )
    match.add_argument("input", nargs="?", default="-", help="JSON-lines file, or - for stdin (default).")
    _add_model_options(match)
    match.set_defaults(handler=_match)

    info = commands.add_parser("bundle", help="Verify a bundle and show what it is.")
    info.add_argument("bundle", nargs="?", default=None, help="Bundle directory (default: the shipped one).")
    info.add_argument("--manifest", action="store_true", help="Print the whole manifest.")
    info.set_defaults(handler=_bundle_info)

    for entry in sorted(entry_points(group="redone_sdk.cli"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:  # the plug-in's extra is not installed
            stub = commands.add_parser(entry.name, help=f"(unavailable: {exc.name} is not installed)")
            stub.set_defaults(handler=_missing_extra(entry.name, exc))
            continue
        register(commands)
    return parser


def _missing_extra(name: str, exc: ImportError) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"redone {name}: needs {exc.name}, which is not installed (install the matching extra)", file=sys.stderr)
        return EXIT_ERROR

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except RedOneError as exc:
        print(f"redone: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        print(f"redone: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except ModuleNotFoundError as exc:
        print(
            f"redone: error: {exc.name} is not installed; this command needs one of redone-sdk's extras "
            "(pip install 'redone-sdk[train]' or '[kafka]')",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
