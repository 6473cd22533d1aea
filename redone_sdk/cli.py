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
from pathlib import Path
from typing import IO, Any, NoReturn

from pydantic import ValidationError

from redone_sdk import __version__
from redone_sdk.errors import RedOneError
from redone_sdk.inference.options import add_inference_args, options_from_args
from redone_sdk.schemas import Note, check_utf8, coerce_note, format_validation_error

__all__ = ["add_bundle_trust_args", "build_parser", "bundle_trust_from_args", "main"]

EXIT_OK, EXIT_BAD_LINES, EXIT_ERROR = 0, 1, 2


MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is reported and skipped unread (a note is at most ~1.2 MB of JSON)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (`redone moderate: error: ...`) instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _input_file(text: str) -> str:
    """An input argument: `-` (stdin) or a file that exists and is not a directory (checked as the flags are)."""
    if text == "-":
        return text
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a JSON-lines file or - for stdin")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as handle:
            yield handle


class _LineReader:
    """Parses the non-blank lines of a file one at a time as they are asked for; reports each bad one as
    `FILE:LINE: reason` on stderr (invalid UTF-8, not JSON, too deeply nested, an invalid note, a line over
    `MAX_LINE_BYTES`) and goes on with the next. `bad` counts them."""

    def __init__(self, path: str, parse: Callable[[str, int], Any], err: IO[str]) -> None:
        self._path, self._parse, self._err = path, parse, err
        self._name = "<stdin>" if path == "-" else path
        self.good = 0
        self.bad = 0

    def _reject(self, number: int, reason: str) -> None:
        self.bad += 1
        print(f"{self._name}:{number}: {reason}", file=self._err, flush=True)

    def __iter__(self) -> Iterator[Any]:
        with _open_input(self._path) as handle:
            for number, raw in enumerate(_bounded_lines(handle), start=1):
                if raw is None:
                    self._reject(number, f"line longer than {MAX_LINE_BYTES} bytes; skipped")
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._reject(number, f"not UTF-8 at byte {exc.start}: {exc.reason}")
                    continue
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
                if not line.strip():
                    continue
                try:
                    item = self._parse(line.rstrip("\r\n"), number)
                except json.JSONDecodeError as exc:
                    self._reject(number, f"not JSON: {exc.msg} at column {exc.colno}{_text_hint(line)}")
                except RecursionError:
                    self._reject(number, "JSON nested too deeply")
                except ValidationError as exc:
                    self._reject(number, format_validation_error(exc, "record"))
                except (RedOneError, ValueError, TypeError) as exc:
                    self._reject(number, str(exc))
                else:
                    self.good += 1
                    yield item


def _bounded_lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of a binary file, each read whole only up to `MAX_LINE_BYTES` (None for a longer one, whose
    rest is read and dropped in bounded pieces)."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


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
    check_utf8(value["query"], "the query")
    if not isinstance(value["note"], dict):
        raise TypeError(f"note must be a JSON object, got {type(value['note']).__name__}")
    return value["query"], Note.model_validate(value["note"])


def _write_stream(results: Iterator[Any], out: IO[str], every: int) -> int:
    """Write results as JSON lines as they come, flushing after every `every` (one streamed chunk); the count."""
    count = 0
    for count, result in enumerate(results, start=1):
        out.write(result.model_dump_json() + "\n")
        if count % every == 0:
            out.flush()
    out.flush()
    return count


def _moderate(args: argparse.Namespace) -> int:
    from redone_sdk.moderator import Moderator

    if args.engine != "local" or args.output is not None:
        return _moderate_on_engine(args)
    try:
        _input_file(args.input)  # checked here, not as the flags are: the spark engine's input may be a folder
    except argparse.ArgumentTypeError as exc:
        args.usage_error(f"argument input: {exc}")
    moderator = Moderator.load(
        args.bundle, policy=args.policy, options=options_from_args(args), **bundle_trust_from_args(args)
    )
    reader = _LineReader(args.input, _parse_text_line if args.text else _parse_note_line, sys.stderr)
    # streamed: a chunk of notes is read, scored and written before the next is read (bounded memory for any input)
    moderated = _write_stream(moderator.classify_iter(reader), sys.stdout, moderator.chunk_size)
    if args.summary:
        print(f"{moderated} notes moderated, {reader.bad} bad lines", file=sys.stderr)
    return EXIT_BAD_LINES if reader.bad else EXIT_OK


def _moderate_on_engine(args: argparse.Namespace) -> int:
    """`--engine spark INPUT OUTPUT`: a Parquet notes dataset scored into a scores table by an engine plug-in
    (entry-point group `redone_sdk.engines`; `redone_sdk.adapters.spark` with the `[spark]` extra)."""
    if args.engine == "local" or args.output is None or args.input == "-" or args.text:
        print(
            "redone moderate: error: OUTPUT goes with --engine spark (INPUT a Parquet notes dataset, OUTPUT the "
            "scores table); the local engine reads JSON lines and writes to stdout (see redone moderate --help)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    found = [e for e in entry_points(group="redone_sdk.engines") if e.name == args.engine]
    try:
        run = found[0].load() if found else None
    except ImportError as exc:
        print(
            f"redone moderate: error: engine {args.engine} needs {exc.name} (pip install 'redone-sdk[{args.engine}]')",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if run is None:
        print(f"redone moderate: error: no engine {args.engine!r} installed", file=sys.stderr)
        return EXIT_ERROR
    return int(run(args))


def _match(args: argparse.Namespace) -> int:
    from redone_sdk.matcher import NoteQueryMatcher

    matcher = NoteQueryMatcher.load(args.bundle, options=options_from_args(args), **bundle_trust_from_args(args))
    reader = _LineReader(args.input, _parse_pair_line, sys.stderr)
    _write_stream(matcher.score_iter(reader), sys.stdout, matcher.chunk_size)
    return EXIT_BAD_LINES if reader.bad else EXIT_OK


def bundle_trust_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """`digest` and `public_key` for `*.load` from --bundle-digest and --bundle-public-key."""
    return {"digest": args.bundle_digest, "public_key": args.bundle_public_key}


def _bundle_info(args: argparse.Namespace) -> int:
    """`redone bundle [PATH]` verifies and describes; `redone bundle sign [PATH] --key K` writes bundle.sig;
    `redone bundle keygen --key K --public-key P` makes an Ed25519 key pair."""
    from redone_sdk.bundle import Bundle, dump_manifest
    from redone_sdk.errors import InvalidInputError

    action, rest = "show", list(args.target)
    if rest and rest[0] in ("sign", "keygen"):
        action = rest.pop(0)
    if len(rest) > 1:
        raise InvalidInputError(f"redone bundle takes one bundle, got {rest}")
    path = rest[0] if rest else None
    if action == "keygen":
        return _keygen(args)
    if action == "sign":
        if not args.key:
            raise InvalidInputError("redone bundle sign needs --key PRIVATE.pem (an Ed25519 key: redone bundle keygen)")
        bundle = Bundle.load(path, digest=args.bundle_digest)
        written = bundle.sign(args.key)
        print(f"signed {bundle.name} {bundle.version} digest {bundle.digest}: {written}")
        return EXIT_OK
    bundle = Bundle.load(path, **bundle_trust_from_args(args))
    if args.manifest:
        print(dump_manifest(bundle.manifest), end="")
        return EXIT_OK
    signed = ", signature valid" if args.bundle_public_key is not None else ""
    print(f"{bundle.name} {bundle.version} at {bundle.path} (verified{signed})")
    print(f"digest {bundle.digest}")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    import os

    from redone_sdk.bundle.trust import generate_key_pair
    from redone_sdk.errors import InvalidInputError

    if not args.key or not args.public_key:
        raise InvalidInputError("redone bundle keygen needs --key PRIVATE.pem and --public-key PUBLIC.pem to write")
    private, public = generate_key_pair()
    fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    with open(args.public_key, "xb") as handle:
        handle.write(public)
    print(f"wrote {args.key} (private: keep it secret) and {args.public_key} (public: give it to who loads)")
    return EXIT_OK


def add_bundle_trust_args(parser: argparse.ArgumentParser) -> None:
    """--bundle-digest and --bundle-public-key, for every command that loads a bundle (docs/bundles.md)."""
    parser.add_argument(
        "--bundle-digest",
        default=None,
        metavar="SHA256",
        help="Refuse the bundle unless its digest (`redone bundle` prints it) is this one.",
    )
    parser.add_argument(
        "--bundle-public-key",
        default=None,
        metavar="PEM",
        help="Refuse the bundle unless its bundle.sig is a valid Ed25519 signature by this public key.",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default=None, help="Bundle directory (default: the bundle shipped with the SDK).")
    add_bundle_trust_args(parser)
    add_inference_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="redone", description="Moderate notes and match them to queries, offline.")
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
        "output", nargs="?", default=None, help="--engine spark: the scores table to write (INPUT: Parquet notes)."
    )
    moderate.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local (default): JSON lines in, results on stdout; spark: score a Parquet notes dataset on Apache "
        "Spark into a scores table (the [spark] extra; docs/replay.md, 'Scoring on Spark').",
    )
    moderate.add_argument(
        "--text",
        action="store_true",
        help="Each line is the plain text of one note (its note_id: the line number), not JSON.",
    )
    moderate.add_argument("--policy", default=None, help="Policy JSON file (default: the bundle's policy).")
    moderate.add_argument("--summary", action="store_true", help="Print a count line on stderr at the end.")
    _add_model_options(moderate)
    moderate.set_defaults(handler=_moderate, usage_error=moderate.error)

    match = commands.add_parser(
        "match",
        help="Score query-note pairs from JSON lines.",
        description='Read {"query": …, "note": {…}} per line, write one MatchResult per line.',
    )
    match.add_argument(
        "input", nargs="?", default="-", type=_input_file, help="JSON-lines file, or - for stdin (default)."
    )
    _add_model_options(match)
    match.set_defaults(handler=_match)

    info = commands.add_parser(
        "bundle",
        help="Verify a bundle and show what it is and its digest; sign it; make a signing key.",
        usage="redone bundle [sign | keygen] [BUNDLE] [options]",
        description="`redone bundle [BUNDLE]` verifies a bundle (default: the shipped one) and prints its name, "
        "version and digest; `redone bundle sign [BUNDLE] --key PRIVATE.pem` writes BUNDLE/bundle.sig, an Ed25519 "
        "signature of the digest; `redone bundle keygen --key PRIVATE.pem --public-key PUBLIC.pem` makes a key "
        "pair. See docs/bundles.md.",
    )
    info.add_argument("target", nargs="*", metavar="BUNDLE", help="Bundle directory or name (default: shipped one).")
    info.add_argument("--manifest", action="store_true", help="Print the whole manifest.")
    info.add_argument("--key", default=None, metavar="PEM", help="sign: the Ed25519 private key; keygen: its path.")
    info.add_argument("--public-key", default=None, metavar="PEM", help="keygen: where to write the public key.")
    add_bundle_trust_args(info)
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
    except BrokenPipeError:
        return EXIT_OK
    except (OSError, UnicodeDecodeError) as exc:  # an unreadable input (permissions, a device error)
        print(f"redone: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        print(
            f"redone: error: {exc.name} is not installed; this command needs one of redone-sdk's extras "
            "(pip install 'redone-sdk[train]' or '[kafka]')",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
