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
from redone_sdk.inference.options import add_inference_args, options_from_args
from redone_sdk.schemas import Note, coerce_note, format_validation_error

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_BAD_LINES, EXIT_ERROR = 0, 1, 2


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
    else:
        with open(path, encoding="utf-8", errors="strict") as handle:
            yield handle


def _read_lines(path: str, parse: Callable[[str, int], Any], err: IO[str]) -> tuple[list[tuple[int, Any]], int]:
    """Parse every non-blank line with `parse(line, number)`; report bad ones as `FILE:LINE: reason` on stderr
    and keep going."""
    good: list[tuple[int, Any]] = []
    bad = 0
    name = "<stdin>" if path == "-" else path
    with _open_input(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                good.append((number, parse(line.rstrip("\r\n"), number)))
            except json.JSONDecodeError as exc:
                bad += 1
                print(f"{name}:{number}: not JSON: {exc.msg} at column {exc.colno}{_text_hint(line)}", file=err)
            except ValidationError as exc:
                bad += 1
                print(f"{name}:{number}: {format_validation_error(exc, 'record')}", file=err)
            except (RedOneError, ValueError, TypeError) as exc:
                bad += 1
                print(f"{name}:{number}: {exc}", file=err)
    return good, bad


def _text_hint(line: str) -> str:
    """A pointer to --text for a line that does not even start like JSON (plain text fed to JSON lines)."""
    return "" if line.lstrip()[:1] in ("{", "[", '"') else " (plain-text lines: use --text)"


def _parse_note_line(line: str, number: int) -> Note:
    """A JSON object is a note's fields; a JSON string is a note's text, like a plain string in the library."""
    value = json.loads(line)
    if isinstance(value, str):
        return coerce_note(value, index=number)
    return _parse_note(value)


def _parse_text_line(line: str, number: int) -> Note:
    return coerce_note(line, index=number)


def _parse_note(value: Any) -> Note:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__} (a note's fields, or a string: its text)")
    return Note.model_validate(value)


def _parse_pair_line(line: str, _number: int) -> tuple[str, Note]:
    value = json.loads(line)
    if not isinstance(value, dict) or set(value) != {"query", "note"}:
        raise TypeError('expected {"query": "...", "note": {...note fields...}}')
    if not isinstance(value["query"], str) or not value["query"].strip():
        raise TypeError("query must be a non-empty string")
    if not isinstance(value["note"], dict):
        raise TypeError(f"note must be a JSON object, got {type(value['note']).__name__}")
    return value["query"], Note.model_validate(value["note"])


def _write(results: list[Any], out: IO[str]) -> None:
    for result in results:
        out.write(result.model_dump_json() + "\n")
    out.flush()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _moderate(args: argparse.Namespace) -> int:
    from redone_sdk.moderator import Moderator

    moderator = Moderator.load(args.bundle, policy=args.policy, options=options_from_args(args))
    notes, bad = _read_lines(args.input, _parse_text_line if args.text else _parse_note_line, sys.stderr)
    for chunk in _chunks([n for _, n in notes], 1024):
        _write(moderator.classify_batch(chunk), sys.stdout)
    if args.summary:
        print(f"{len(notes)} notes moderated, {bad} bad lines", file=sys.stderr)
    return EXIT_BAD_LINES if bad else EXIT_OK


def _match(args: argparse.Namespace) -> int:
    from redone_sdk.matcher import NoteQueryMatcher

    matcher = NoteQueryMatcher.load(args.bundle, options=options_from_args(args))
    pairs, bad = _read_lines(args.input, _parse_pair_line, sys.stderr)
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
    add_inference_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redone", description="Moderate notes and match them to queries, offline.")
    parser.add_argument("--version", action="version", version=f"redone-sdk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    moderate = commands.add_parser(
        "moderate",
        help="Classify notes from JSON lines (or plain text with --text).",
        description="Read one note per line, write one ModerationResult per line. A line is a JSON object of a "
        "note's fields (note_id, title, content, …; title and content up to 100,000 characters each) or a JSON "
        "string, which becomes the content of a note whose id is its line number; with --text every line is such "
        "a text as it stands. Blank lines are skipped. Bad lines are reported on stderr with their line number; "
        "the others are still moderated (exit 1).",
    )
    moderate.add_argument("input", nargs="?", default="-", help="JSON-lines file, or - for stdin (default).")
    moderate.add_argument(
        "--text",
        action="store_true",
        help="Each line is the plain text of one note (its note_id: the line number), not JSON.",
    )
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
