"""The `spark` engine of `redone moderate --engine spark INPUT OUTPUT` and `redone replay score --engine spark`
(entry-point group `redone_sdk.engines`), and `python -m redone_sdk.adapters.spark` for spark-submit."""

from __future__ import annotations

import argparse
import sys

from redone_sdk.errors import RedOneError

__all__ = ["main", "run"]

EXIT_OK, EXIT_BAD_ROWS, EXIT_ERROR = 0, 1, 2  # as `redone moderate`: 1 = bad rows skipped and listed


def _report_bad_rows(summary, what: str) -> int:
    """Invalid notes and repeated note_ids were skipped, as the local engine skips them: say how many and where
    they are listed; the exit status (1 when any was skipped, as `redone moderate` does for bad lines)."""
    if not summary.bad_rows:
        return EXIT_OK
    print(
        f"redone: {summary.bad_rows:,} {what} failed validation or repeated an earlier note_id and were skipped; "
        f"their ids and reasons are in {summary.bad_rows_path}",
        file=sys.stderr,
    )
    return EXIT_BAD_ROWS


def run(args: argparse.Namespace) -> int:
    """Score `args.input` (Parquet notes) into `args.output` with the bundle, policy and model flags in `args`;
    with `args.sessions`, the (query, note) pairs of a sessions table with the matcher instead."""
    from redone_sdk.inference.options import options_from_args

    from .job import score_notes, score_pairs

    common = {
        "bundle": None if args.bundle in (None, "default") else args.bundle,
        "options": options_from_args(args),
        "digest": getattr(args, "bundle_digest", None),
        "public_key": getattr(args, "bundle_public_key", None),
        "master": getattr(args, "master", None),
        "overwrite": getattr(args, "overwrite", False),
        "partitions": getattr(args, "partitions", None),
    }
    sessions = getattr(args, "sessions", None)
    try:
        if sessions:
            summary, what = score_pairs(sessions, args.input, args.output, **common), "pairs"
        else:
            summary, what = score_notes(args.input, args.output, policy=args.policy, **common), "notes"
    except (RedOneError, OSError) as exc:
        print(f"redone: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{summary.notes:,} {what} scored with {summary.bundle} (digest {summary.digest}) into {summary.output}")
    return _report_bad_rows(summary, "notes")


def main(argv: list[str] | None = None) -> int:
    """spark-submit's entry: the same arguments as `redone moderate --engine spark`, the engine implied."""
    from redone_sdk.cli import build_parser

    args = build_parser().parse_args(["moderate", "--engine", "spark", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
