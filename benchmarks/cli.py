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
        help="Bundle with fp32 + int8 graphs and a checkpoint, for the four-backend speed table (default: "
        "$REDONE_BENCH_BUNDLE_FULL or runs/default/bundle-full; with --quick and none there, the tiny preset "
        "trained once into $REDONE_CACHE_DIR/bench, labelled as such).",
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
    from .report import print_summary, write_reports
    from .run import run_benchmarks
    from .settings import SECTIONS, Settings, default_output_dir, pick_bundle

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    mode = "quick" if args.quick else "full"
    data = _data_dir(args.data_dir, quick=args.quick)
    if data is None:
        return 2
    data_dir, data_source = data
    found = _bundle_full(args.bundle_full, data_dir, quick=args.quick)
    if found is None:
        return 2
    bundle_full, full_source, stand_in = found
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
        data_dir=data_dir.resolve(),
        output_dir=(args.output_dir or default_output_dir()).resolve(),
        threads=args.threads or _usable_cores(),
        batch_size=args.batch_size,
        tuned_batch_size=args.tuned_batch_size or None,
        sections=sections,
        command=getattr(args, "command_line", None) or _command(None),
        sizes=overrides,
        bundle_full_source=full_source,
        stand_in=stand_in,
        data_source=data_source,
    )
    results = run_benchmarks(settings)
    paths = write_reports(results, settings.output_dir, args.name or mode)
    print_summary(results, sys.stdout)
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    return 0


def _data_dir(explicit: Path | None, *, quick: bool) -> tuple[Path, str] | None:
    """(data folder, why it was chosen): --data-dir or $REDONE_DATA_DIR must hold the data; the default
    ../shared/data may be absent on a fresh clone, and then --quick runs on tests/fixtures/data."""
    from redone_sdk.training.datasets import default_data_dir

    from .stand_in import fixture_data_dir, has_data

    if explicit is not None or os.environ.get("REDONE_DATA_DIR"):
        folder = explicit or default_data_dir()
        if has_data(folder):
            return folder, "--data-dir" if explicit is not None else "$REDONE_DATA_DIR"
        print(f"benchmarks: no labeled data at {folder} (no cold/train.csv); see the README's Data", file=sys.stderr)
        return None
    folder = default_data_dir()
    if has_data(folder):
        return folder, "the shared data beside the repository (../shared/data)"
    fixtures = fixture_data_dir()
    if quick and fixtures is not None:
        logging.getLogger("benchmarks").warning("no shared data at %s: running on %s", folder, fixtures)
        return fixtures, (
            f"no shared data at {folder}: the repository's small labeled test set (tests/fixtures/data); "
            "quality figures on it are a smoke test, not the dev sets' figures"
        )
    print(
        f"benchmarks: no labeled data at {folder}; set REDONE_DATA_DIR or pass --data-dir (see the README's Data)"
        + ("" if quick else ", or run --quick, which falls back to tests/fixtures/data"),
        file=sys.stderr,
    )
    return None


def _bundle_full(explicit: Path | None, data_dir: Path, *, quick: bool) -> tuple[Path, str, bool] | None:
    """(bundle-full, why it was chosen, whether it is the tiny stand-in): --bundle-full must exist; with --quick
    and no pipeline run at the default place, the tiny preset is trained once into the cache."""
    from .settings import BUNDLE_FULL_ENV, default_bundle_full
    from .stand_in import tiny_bundle_full

    build = "`redone train all --config training/configs/qwen2-small.json`, about two hours"
    if explicit is not None:
        if (explicit / "manifest.json").is_file():
            return explicit, "--bundle-full", False
        print(f"benchmarks: no bundle at {explicit} (--bundle-full)", file=sys.stderr)
        return None
    default = default_bundle_full()
    where = f"${BUNDLE_FULL_ENV}" if os.environ.get(BUNDLE_FULL_ENV) else "the pipeline's default output"
    if (default / "manifest.json").is_file():
        return default, f"{where} ({default})", False
    if not quick:
        print(
            f"benchmarks: no bundle-full at {default}; build one with {build}, pass --bundle-full, "
            "or run --quick (which stands the tiny preset in)",
            file=sys.stderr,
        )
        return None
    try:
        stand_in = tiny_bundle_full(data_dir)
    except ImportError as exc:
        print(f"benchmarks: training the tiny stand-in needs the [train] extra ({exc})", file=sys.stderr)
        return None
    why = (
        f"STAND-IN: no bundle-full at {default} (made by {build}); so the tiny preset was trained on {data_dir} "
        "into the cache: its speed and profile rows measure that tiny model, not the default model"
    )
    return stand_in, why, True


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
