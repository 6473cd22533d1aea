"""Command line: `python -m benchmarks [--quick] …`, and `register` for a `redone bench` plug-in.

Importing this module is cheap (argparse only): the `redone` CLI imports every plug-in to build its parser.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

__all__ = ["add_arguments", "register", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .settings import SECTIONS

    parser.add_argument("--quick", action="store_true", help="Small samples and capped dev sets (a few minutes).")
    parser.add_argument(
        "--bundle-full",
        type=Path,
        default=None,
        help="Bundle with fp32 + int8 graphs and a checkpoint, for the four-backend speed table "
        "(default: runs/default/bundle-full).",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="Bundle for quality and memory (default: the SDK's shipped default, else bundle-full's sibling bundle/).",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Shared data (default: $REDONE_DATA_DIR or ../shared/data)."
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="Where JSON and Markdown go (default: benchmarks/results)."
    )
    parser.add_argument("--name", default=None, help="Output file stem (default: quick or full).")
    parser.add_argument(
        "--threads", type=int, default=None, help="Intra-op threads for every backend (default: usable cores)."
    )
    parser.add_argument("--batch-size", type=int, default=8, help="Most notes per forward pass (the SDK default, 8).")
    parser.add_argument(
        "--tuned-batch-size",
        type=int,
        default=32,
        help="Also time onnx-int8 loaded with this batch_size (0: don't; 32 was the SDK default before 0.2).",
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"Comma-separated subset of {','.join(SECTIONS)}."
    )
    parser.add_argument("--notes", type=int, default=None, help="Override the speed sample size.")
    parser.add_argument("--rounds", type=int, default=None, help="Override the number of interleaved speed rounds.")
    parser.add_argument("--quiet", action="store_true", help="No progress log on stderr.")


def _command(argv: list[str] | None) -> str:
    """The command line as typed: `python -m benchmarks …` or `redone bench …` (argv already holds `bench`)."""
    args = sys.argv[1:] if argv is None else argv
    program = Path(sys.argv[0]).name
    head = program if program == "redone" else "python -m benchmarks"
    return " ".join([head, *(shlex.quote(a) for a in args)])


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    from redone_sdk.training.datasets import default_data_dir

    from .report import print_summary, write_reports
    from .run import run_benchmarks
    from .settings import SECTIONS, Settings, default_bundle_full, default_output_dir, pick_bundle

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    mode = "quick" if args.quick else "full"
    bundle_full = args.bundle_full or default_bundle_full()
    if not (bundle_full / "manifest.json").is_file():
        print(
            f"benchmarks: no bundle at {bundle_full}; build one with "
            "`python -m redone_sdk.training all --config training/configs/default.json` or pass --bundle-full",
            file=sys.stderr,
        )
        return 2
    bundle, source = pick_bundle(args.bundle, bundle_full)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"benchmarks: unknown sections {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("notes", args.notes), ("rounds", args.rounds)) if v}
    settings = Settings(
        mode=mode,
        bundle_full=bundle_full.resolve(),
        bundle=bundle.resolve(),
        bundle_source=source,
        data_dir=(args.data_dir or default_data_dir()).resolve(),
        output_dir=(args.output_dir or default_output_dir()).resolve(),
        threads=args.threads or _usable_cores(),
        batch_size=args.batch_size,
        tuned_batch_size=args.tuned_batch_size or None,
        sections=sections,
        command=getattr(args, "command_line", None) or _command(None),
        sizes=overrides,
    )
    results = run_benchmarks(settings)
    paths = write_reports(results, settings.output_dir, args.name or mode)
    print_summary(results, sys.stdout)
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` to the `redone` CLI (entry-point group `redone_sdk.cli`)."""
    parser = subparsers.add_parser(
        "bench",
        help="Speed, quality and memory of the default bundle against peers (needs the [train] extra).",
        description="Benchmarks against peers: speed, quality and their ratios in one run.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = _command(argv)
    return run(args)
