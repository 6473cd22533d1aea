"""`redone replay …` (also `python -m redone_sdk.replay …`): synth, exposure, search, score, decisions, report, demo.

Registered through the `redone_sdk.cli` entry-point group: `register(subparsers)` adds the `replay`
parser and sets `handler=run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import types
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import NoReturn

from redone_sdk.inference.options import add_inference_args, copy_inference_args, options_from_args
from redone_sdk.replay import decisions

__all__ = ["register", "run", "main", "parse_duration"]

# The `redone` front end loads every plug-in to build its parser: fail here, cheaply, when the extra is
# missing, so that it shows `replay` as unavailable instead of failing later with a traceback.
for _module in ("pyarrow", "matplotlib"):
    if importlib.util.find_spec(_module) is None:
        raise ImportError(f"redone replay needs {_module}: pip install 'redone-sdk[replay]'", name=_module)

EXIT_OK, EXIT_BAD_ROWS, EXIT_ERROR = 0, 1, 2
EXIT_UNIDENTIFIED = 3  # search: the log cannot identify the change (--accept-unidentified to go on)
CONTROL_WORDS = ("none", "control")

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)


def parse_duration(text: str) -> timedelta:
    """`6h`, `90m`, `1d12h`, `45s` or plain seconds (`3600`)."""
    match = _DURATION.match(text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 6h, 90m, 1d12h, 3600)")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _named_duration(text: str) -> tuple[str, timedelta]:
    name, value = _name_value(text)
    return name, parse_duration(value)


def _stratum_sizes(text: str) -> dict[str, int]:
    from redone_sdk.replay.label_weights import parse_stratum_sizes
    from redone_sdk.replay.schemas import ReplayInputError

    try:
        return parse_stratum_sizes(text)
    except ReplayInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _segments(text: str) -> tuple[str, ...]:
    from redone_sdk.replay.schemas import ReplayInputError
    from redone_sdk.replay.segments import parse_segments

    try:
        return parse_segments(text)
    except ReplayInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (a bad value is a one-line usage error, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _open_unit(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (an interval level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.95), got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_period(text: str) -> tuple[date, date]:
    """`2026-01-01..2026-01-31` (UTC days, inclusive) or one day `2026-01-05`."""
    start_text, sep, end_text = text.partition("..")
    try:
        start = date.fromisoformat(start_text.strip())
        end = date.fromisoformat(end_text.strip()) if sep else start
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a period: {text!r} (use FROM..TO, e.g. 2026-01-01..2026-01-31)"
        ) from None
    if end < start:
        raise argparse.ArgumentTypeError(f"period {text!r} ends before it starts")
    return start, end


# ---------------------------------------------------------------------------------------- handlers


def _synth(args: argparse.Namespace) -> int:
    from redone_sdk.replay.synth import SynthConfig, synthesize

    config = SynthConfig(
        seed=args.seed,
        users=args.users,
        notes=args.notes,
        impressions=args.impressions,
        days=args.days,
        harmful_note_share=args.harmful_note_share,
        harmful_rate=args.harmful_rate,
        search_sessions=args.sessions,
        page_size=args.page_size,
        search_split=args.search_split,
        bad_rows=args.bad_rows,
    )
    manifest = synthesize(args.out, config, data_dir=args.data_dir)
    rows = manifest["rows"]
    print(
        f"wrote {args.out}: {rows['impressions']:,} impressions of {rows['feed_notes']:,} notes "
        f"({rows['harmful_feed_notes']:,} harmful), {rows['sessions']:,} search sessions "
        f"over {rows['queries']:,} queries"
    )
    return EXIT_OK


def _cache(args: argparse.Namespace):
    from redone_sdk.replay.arms import ScoreCache, default_cache_dir

    if args.no_cache:
        return ScoreCache()
    return ScoreCache(args.cache_dir if args.cache_dir else default_cache_dir())


def _build_arms(args: argparse.Namespace) -> tuple[list, str]:
    from redone_sdk.moderator import Moderator
    from redone_sdk.policy import Policy
    from redone_sdk.replay.arms import Arm
    from redone_sdk.replay.schemas import ReplayInputError

    specs = args.arm or []
    policies = dict(args.policy or [])
    delays = dict(args.arm_review_delay or [])
    names = [n for n, _ in specs]
    for what, mapping in (("--policy", policies), ("--arm-review-delay", delays)):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ReplayInputError(f"{what} names arms that no --arm defines: {unknown}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ReplayInputError(f"--arm names must be unique; given more than once: {twice}")
    arms = []
    if not any(value.lower() in CONTROL_WORDS for _, value in specs) and args.control is None:
        # The automatic control is `logged`, unless an arm already has that name.
        auto = next(n for n in ("logged", "logged-control", *(f"logged-{i}" for i in range(2, 100))) if n not in names)
        arms.append(Arm.control(auto))
    if args.control is not None and args.control not in names:
        raise ReplayInputError(f"--control {args.control!r} is not one of the --arm names {names}")
    loaded: dict[str, Moderator] = {}
    for name, value in specs:
        if value.lower() in CONTROL_WORDS:
            if name in policies:
                raise ReplayInputError(f"arm {name!r} is a control arm (no model); it takes no --policy")
            arms.append(Arm(name=name, review_delay=delays.get(name)))
            continue
        key = "default" if value.lower() == "default" else str(Path(value).resolve())
        if key not in loaded:
            loaded[key] = Moderator.load(None if key == "default" else value, options=options_from_args(args))
        moderator = loaded[key]
        if name in policies:
            moderator = moderator.with_policy(Policy.load(policies[name]))
        arms.append(Arm(name=name, moderator=moderator, review_delay=delays.get(name)))
    control = args.control or next(a.name for a in arms if a.is_control)
    return arms, control


def _finish(issues: list, args: argparse.Namespace, html_path: Path) -> int:
    print(f"report: {html_path} (and {html_path.with_suffix('.md').name}, figures/, JSON results)")
    bad = sum(i.bad_rows for i in issues)
    for i in issues:
        print(f"  {i.summary()}", file=sys.stderr)
    if bad and not args.allow_bad_rows:
        print(
            f"{bad} bad input rows were left out and counted in the report (exit 1; --allow-bad-rows to exit 0)",
            file=sys.stderr,
        )
        return EXIT_BAD_ROWS
    return EXIT_OK


def _exposure(args: argparse.Namespace) -> int:
    from redone_sdk.replay.exposure import ExposureSettings, replay_exposure
    from redone_sdk.replay.power import PowerSettings
    from redone_sdk.replay.report import write_report

    arms, control = _build_arms(args)
    if args.scores:
        from redone_sdk.replay.scores_table import use_scores_tables

        arms = use_scores_tables(arms, args.scores)
    if args.users is not None and "cohort" not in args.segment:
        from redone_sdk.replay.schemas import ReplayInputError

        raise ReplayInputError("--users gives the cohort segment's levels: add --segment cohort")
    settings = ExposureSettings(
        review_delay=args.review_delay,
        review_clock=args.review_clock,
        unlabeled_review=args.unlabeled_review,
        bootstrap=args.bootstrap,
        confidence=args.confidence,
        seed=args.seed,
        user_buckets=args.user_buckets,
        note_buckets=args.note_buckets,
        bootstrap_unit=args.bootstrap_unit,
        interval=args.interval,
        correction=args.correction,
        power=PowerSettings(
            alpha=args.power_alpha, power=args.power, treatment_share=args.power_split, users=args.power_users
        ),
        segments=args.segment,
        cohorts=args.cohorts,
        users_table=args.users,
        stratum_sizes=args.stratum_sizes,
        batch_rows=args.batch_rows,
        surfaces=tuple(args.surface) if args.surface else None,
        period=args.period,
        sweep_points=args.sweep_points,
        spill_dir=args.spill_dir,
    )
    result = replay_exposure(
        args.impressions, args.notes, arms, labels=args.labels, control=control, settings=settings, cache=_cache(args)
    )
    for arm in result.arms:
        if arm.name != result.control:
            print(
                f"{arm.name}: harmful exposure rate {arm.harmful_exposure_rate.fmt(digits=5)}, "
                f"change vs {result.control} {arm.change_vs_control.fmt(percent=True, signed=True)}, "
                f"benign exposures removed {arm.benign_exposures_removed:,}, notes actioned {arm.notes_actioned:,}"
            )
    html_path = write_report(args.out, exposure=result)
    return _finish(list(result.inputs.values()), args, html_path)


def _share(text: str) -> float:
    """An argparse type: a share in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _search(args: argparse.Namespace) -> int:
    from redone_sdk.matcher import NoteQueryMatcher
    from redone_sdk.replay.report import write_report
    from redone_sdk.replay.search import SearchSettings, replay_search
    from redone_sdk.replay.search_bm25 import bm25_scorer

    matcher = NoteQueryMatcher.load(
        None if args.bundle in (None, "default") else args.bundle, options=options_from_args(args)
    )
    if args.scores:
        from redone_sdk.replay.scores_table import use_pair_scores_table

        matcher = use_pair_scores_table(matcher, args.scores)
    settings = SearchSettings(
        relevance_bins=args.relevance_bins,
        prior_strength=args.prior_strength,
        bootstrap=args.bootstrap,
        refit_model=not args.fixed_model,
        refit_replicates=args.refit_replicates,
        confidence=args.confidence,
        seed=args.seed,
        ips_prefix=args.ips_prefix,
        min_rank_spread=args.min_rank_spread,
        min_reordered_varied=args.min_reordered_varied,
        accept_unidentified=args.accept_unidentified,
        chunk_sessions=args.chunk_sessions,
        spill_dir=args.spill_dir,
    )
    result = replay_search(
        args.sessions,
        args.notes,
        matcher,
        judgments=args.judgments,
        baselines={"bm25": bm25_scorer()} if args.bm25 else None,
        settings=settings,
        cache=_cache(args),
    )
    print(
        f"click page rate: logged {result.model_cpr_logged.fmt(percent=True)} (observed "
        f"{result.observed_cpr_logged.fmt(percent=True)}), reranked {result.model_cpr_new.fmt(percent=True)}, "
        f"change {result.change.fmt(percent=True, signed=True)} (click model), "
        f"{result.ips.change.fmt(percent=True, signed=True)} (replay, {result.ips.coverage:.1%} of page views)"
    )
    for baseline in result.baselines:
        print(
            f"{baseline.name}: change {baseline.change.fmt(percent=True, signed=True)} (click model), "
            f"{baseline.ips.change.fmt(percent=True, signed=True)} (replay)"
        )
    html_path = write_report(args.out, search=result)
    status = _finish(list(result.inputs.values()), args, html_path)
    if not result.diagnostics.identified:
        for warning in result.diagnostics.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
        if not args.accept_unidentified:
            print(
                f"the log cannot identify the change (exit {EXIT_UNIDENTIFIED}; --accept-unidentified to go on "
                "regardless, the warning stays in the report and search.json)",
                file=sys.stderr,
            )
            return max(status, EXIT_UNIDENTIFIED)
    return status


def _score(args: argparse.Namespace) -> int:
    """`score --engine local|spark`: a notes table scored with a bundle into a scores table."""
    from redone_sdk.cli import bundle_trust_from_args

    if args.engine != "local":
        from importlib.metadata import entry_points

        from redone_sdk.replay.schemas import ReplayInputError

        found = [e for e in entry_points(group="redone_sdk.engines") if e.name == args.engine]
        if not found:
            raise ReplayInputError(f"no engine {args.engine!r} installed (pip install 'redone-sdk[{args.engine}]')")
        try:
            engine = found[0].load()
        except ImportError as exc:
            raise ReplayInputError(
                f"engine {args.engine} needs {exc.name} (pip install 'redone-sdk[{args.engine}]')"
            ) from None
        args.input, args.output = args.notes, args.out
        return int(engine(args))
    if args.sessions:
        from redone_sdk.matcher import NoteQueryMatcher
        from redone_sdk.replay.scores_table import write_pair_scores_table

        matcher = NoteQueryMatcher.load(
            None if args.bundle in (None, "default") else args.bundle,
            options=options_from_args(args),
            **bundle_trust_from_args(args),
        )
        count = write_pair_scores_table(matcher, args.sessions, args.notes, args.out, overwrite=args.overwrite)
        bundle = matcher.bundle
        print(f"{count:,} pairs scored with {bundle.name} {bundle.version} (digest {bundle.digest}) into {args.out}")
        return EXIT_OK
    from redone_sdk.moderator import Moderator
    from redone_sdk.replay.scores_table import write_scores_table

    moderator = Moderator.load(
        None if args.bundle in (None, "default") else args.bundle,
        policy=args.policy,
        options=options_from_args(args),
        **bundle_trust_from_args(args),
    )
    count, issues = write_scores_table(moderator, args.notes, args.out, overwrite=args.overwrite)
    bundle = moderator.bundle
    print(f"{count:,} notes scored with {bundle.name} {bundle.version} (digest {bundle.digest}) into {args.out}")
    if issues.bad_rows:  # left out of the table, as `redone moderate` leaves out bad lines: said, and exit 1
        print(f"  {issues.summary()}", file=sys.stderr)
        for example in issues.examples:
            print(f"  row {example.row}: {example.reason}: {example.value}", file=sys.stderr)
        return EXIT_BAD_ROWS
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from redone_sdk.replay.report import write_report

    print(f"report: {write_report(args.out)}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from redone_sdk.bundle import Bundle
    from redone_sdk.replay.synth import SynthConfig, synthesize

    Bundle.load(None if args.bundle in (None, "default") else args.bundle, verify=False)  # fail before synthesizing
    out = Path(args.out)
    data = out / "data"
    synthesize(data, SynthConfig(seed=args.seed, impressions=args.impressions, bad_rows=25), data_dir=args.data_dir)
    print(f"synthetic log in {data} (25 malformed impressions mixed in on purpose)")
    bundle = args.bundle or "default"
    data_args = ["--notes", str(data / "notes.parquet"), "--out", str(out), "--allow-bad-rows"]
    data_args += ["--seed", str(args.seed), "--bootstrap", str(args.bootstrap)]
    exposure_argv = [
        "exposure",
        "--impressions",
        str(data / "impressions.parquet"),
        "--labels",
        str(data / "labels.parquet"),
    ]
    exposure_argv += ["--arm", f"redone={bundle}", *data_args]
    if args.strict_policy:
        exposure_argv += ["--arm", f"redone-strict={bundle}", "--policy", f"redone-strict={args.strict_policy}"]
    exposure_args = _parser_for_demo().parse_args(exposure_argv)
    _copy_model_options(args, exposure_args)
    status = _exposure(exposure_args)
    search_argv = [
        "search",
        "--sessions",
        str(data / "sessions.parquet"),
        "--judgments",
        str(data / "judgments.parquet"),
    ]
    search_args = _parser_for_demo().parse_args([*search_argv, "--bm25", "--bundle", bundle, *data_args])
    _copy_model_options(args, search_args)
    return max(status, _search(search_args))


def _copy_model_options(source: argparse.Namespace, target: argparse.Namespace) -> None:
    copy_inference_args(source, target)


def _one_line_errors(commands: argparse._SubParsersAction) -> None:
    """A bad option of a replay command prints one line (`prog: error: …`) and exits 2, not the whole usage."""

    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        parser.exit(EXIT_ERROR, f"{parser.prog}: error: {message} (see --help)\n")

    for parser in commands.choices.values():
        parser.error = types.MethodType(error, parser)  # type: ignore[method-assign]


def _parser_for_demo() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redone replay")
    commands = parser.add_subparsers(dest="replay_command", required=True)
    _add_commands(commands)
    _one_line_errors(commands)
    return parser


# ------------------------------------------------------------------------------------------ parsers


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    add_inference_args(parser, batch_size_default=32)  # the model scores every distinct note once, in bulk


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="Report folder (report.md, report.html, figures/, *.json).")
    parser.add_argument(
        "--bootstrap", type=_int_at_least(0), default=1000, help="Bootstrap replicates (0: no intervals)."
    )
    parser.add_argument("--confidence", type=_open_unit, default=0.95, help="Interval level, in (0, 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap.")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="Score cache folder, shared by runs (default: $REDONE_CACHE_DIR/replay-scores, else "
        "~/.cache/redone-sdk/replay-scores).",
    )
    parser.add_argument("--no-cache", action="store_true", help="Keep scores in memory only.")
    parser.add_argument(
        "--allow-bad-rows",
        action="store_true",
        help="Exit 0 even when input rows were bad (they are reported either way).",
    )
    _add_model_options(parser)


def _add_commands(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser(
        "synth",
        help="Write a seeded synthetic log from the shared labeled data.",
        description="Write impressions, notes, labels, search sessions and judgments (Parquet) built from the "
        "harm sets' dev parts and SNS-Bench QueryCorr. Outputs derived from SNS-Bench are CC BY-NC-SA 4.0.",
    )
    synth.add_argument("--out", required=True, help="Folder to write.")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--users", type=int, default=5_000)
    synth.add_argument("--notes", type=int, default=4_000, help="Feed notes.")
    synth.add_argument("--impressions", type=int, default=300_000)
    synth.add_argument("--days", type=int, default=14)
    synth.add_argument("--harmful-note-share", type=float, default=0.15, help="Share of feed notes that are harmful.")
    synth.add_argument("--harmful-rate", type=float, default=0.05, help="Expected share of exposures that are harmful.")
    synth.add_argument("--sessions", type=int, default=5_000, help="Search page views.")
    synth.add_argument("--page-size", type=int, default=10)
    synth.add_argument(
        "--search-split", choices=["dev", "all"], default="dev", help="QueryCorr queries used for search."
    )
    synth.add_argument("--bad-rows", type=int, default=0, help="Malformed impressions to mix in.")
    synth.add_argument(
        "--data-dir", default=None, help="Shared data folder (default: $REDONE_DATA_DIR or ../shared/data)."
    )
    synth.set_defaults(replay_handler=_synth)

    exposure = commands.add_parser(
        "exposure",
        help="Replay the harmful exposure rate of moderation arms on an impression log.",
        description="Each --arm NAME=BUNDLE is a moderation setup (BUNDLE: a bundle folder, 'default', or 'none' for a "
        "control arm); --policy NAME=FILE gives it a policy. Without a control arm, 'logged' (no moderation) is added.",
    )
    exposure.add_argument(
        "--impressions",
        required=True,
        help="Impression log: Parquet file or folder (hive partitions allowed), CSV or JSON lines.",
    )
    exposure.add_argument("--notes", required=True, help="Notes table (Parquet file or folder, CSV or JSON lines).")
    exposure.add_argument("--labels", default=None, help="Ground truth: note_id, label (safe or a harm category).")
    exposure.add_argument("--arm", action="append", type=_name_value, metavar="NAME=BUNDLE", help="An arm (repeat).")
    exposure.add_argument("--policy", action="append", type=_name_value, metavar="NAME=FILE", help="Policy of an arm.")
    exposure.add_argument("--arm-review-delay", action="append", type=_named_duration, metavar="NAME=DURATION")
    exposure.add_argument("--control", default=None, help="The arm others are compared to (default: the control arm).")
    exposure.add_argument(
        "--review-delay", type=parse_duration, default=timedelta(hours=6), help="e.g. 6h, 90m (default 6h)."
    )
    exposure.add_argument("--review-clock", choices=["created_at", "first_exposure"], default="created_at")
    exposure.add_argument("--unlabeled-review", choices=["keep", "remove"], default="keep")
    exposure.add_argument("--surface", action="append", help="Keep only this surface (repeat for several).")
    exposure.add_argument(
        "--period",
        type=parse_period,
        default=None,
        metavar="FROM..TO",
        help="Keep only impressions of these UTC days (inclusive), e.g. 2026-01-01..2026-01-31.",
    )
    exposure.add_argument(
        "--user-buckets", type=_int_at_least(1), default=256, help="Bootstrap clusters users are hashed into."
    )
    exposure.add_argument(
        "--note-buckets", type=_int_at_least(1), default=64, help="Bootstrap clusters notes are hashed into."
    )
    exposure.add_argument(
        "--bootstrap-unit",
        choices=["two-way", "users", "notes"],
        default="two-way",
        help="What the bootstrap resamples: users x notes (default), users only, notes only (docs/replay.md).",
    )
    exposure.add_argument(
        "--interval",
        choices=["t", "percentile"],
        default="t",
        help="t: estimate ± t(df)·bootstrap SE (default); percentile: of the replicates.",
    )
    exposure.add_argument(
        "--correction",
        choices=["holm", "bh"],
        default="holm",
        help="Correction of the p-values across arms and days: Holm (default) or Benjamini-Hochberg.",
    )
    exposure.add_argument("--power-users", type=_int_at_least(2), default=None, help="Users of the online test.")
    exposure.add_argument(
        "--power-split", type=_open_unit, default=0.5, help="Treatment share of the online test's users."
    )
    exposure.add_argument("--power-alpha", type=_open_unit, default=0.05, help="Online test's two-sided level.")
    exposure.add_argument("--power", type=_open_unit, default=0.8, help="Online test's power for the MDE.")
    exposure.add_argument(
        "--segment",
        type=_segments,
        default=(),
        metavar="DIMS",
        help="Breakdowns in the same run, comma-separated: lang (the note's), category (its ground truth), "
        "cohort (a user-hash bucket), surface (the impression's).",
    )
    exposure.add_argument("--cohorts", type=_int_at_least(1), default=4, help="User cohorts of --segment cohort.")
    exposure.add_argument(
        "--users",
        default=None,
        metavar="TABLE",
        help="Users table (user, cohort): --segment cohort's levels are its cohorts (users not in it: '(none)') "
        "instead of --cohorts user-hash buckets.",
    )
    exposure.add_argument(
        "--stratum-sizes",
        type=_stratum_sizes,
        default=None,
        metavar="S=N,...",
        help="Notes per stratum in the population, when the labels table has a `stratum` column "
        "(inverse-probability weights; docs/replay.md).",
    )
    exposure.add_argument("--sweep-points", type=_int_at_least(0), default=25)
    exposure.add_argument(
        "--batch-rows", type=_int_at_least(1), default=1 << 18, help="Impressions per streamed batch."
    )
    exposure.add_argument(
        "--spill-dir", default=None, help="Folder for the temporary columns of pass 1 (default: TMPDIR)."
    )
    exposure.add_argument(
        "--scores",
        action="append",
        default=None,
        metavar="TABLE",
        help="A scores table (`redone replay score`) made by an arm's bundle: that arm reads its scores instead of "
        "running the model (repeat for several bundles).",
    )
    _add_common(exposure)
    exposure.set_defaults(replay_handler=_exposure)

    search = commands.add_parser(
        "search",
        help="Replay the click page rate of search pages reranked by the matcher.",
        description="Fit a position-based click model on logged search page views, rerank each page with the matcher "
        "and estimate the click page rate of both rankings, with a query-bootstrap interval.",
    )
    search.add_argument(
        "--sessions", required=True, help="Search sessions: session_id, query, notes (ids), clicks (0/1)."
    )
    search.add_argument("--notes", required=True, help="Notes table (Parquet or JSON lines).")
    search.add_argument("--bundle", default=None, help="Matcher bundle folder (default: the shipped bundle).")
    search.add_argument("--judgments", default=None, help="Optional graded relevance (query, note_id, grade) for NDCG.")
    search.add_argument(
        "--scores",
        default=None,
        metavar="TABLE",
        help="A pair scores table (`redone replay score --sessions`) made by the matcher's bundle: its scores "
        "instead of running the matcher.",
    )
    search.add_argument(
        "--relevance-bins", type=_int_at_least(1), default=10, help="Matcher-score bins of the attractiveness prior."
    )
    search.add_argument("--prior-strength", type=_positive_float, default=2.0)
    search.add_argument("--bm25", action="store_true", help="Also replay a BM25 rerank of the same pages.")
    search.add_argument(
        "--ips-prefix", type=_int_at_least(1), default=3, help="Top ranks matched by the replay (IPS) estimate."
    )
    search.add_argument(
        "--fixed-model",
        action="store_true",
        help="Hold the click model fixed in the bootstrap (faster; the interval then leaves out its error).",
    )
    search.add_argument(
        "--refit-replicates",
        type=_int_at_least(10),
        default=200,
        help="Bootstrap replicates that refit the click model (each an EM on the (note, rank) cells).",
    )
    search.add_argument(
        "--min-rank-spread",
        type=_share,
        default=0.05,
        help="Least share of impressions off their pair's usual rank for the change to count as identified.",
    )
    search.add_argument(
        "--min-reordered-varied",
        type=_share,
        default=0.5,
        help="Least share of reordered page views from queries whose logged order varied.",
    )
    search.add_argument(
        "--accept-unidentified",
        action="store_true",
        help=f"Exit 0 (not {EXIT_UNIDENTIFIED}) when the diagnostics find the change unidentified; the warning stays.",
    )
    search.add_argument(
        "--chunk-sessions", type=_int_at_least(1), default=65_536, help="Page views read and processed at a time."
    )
    search.add_argument("--spill-dir", default=None, help="Folder for the temporary page-view columns.")
    _add_common(search)
    search.set_defaults(replay_handler=_search)

    score = commands.add_parser(
        "score",
        help="Score a notes table with a bundle into a scores table (for exposure --scores).",
        description="Write a scores table (Parquet: note_id, action, label, score_<category>, bundle_name, "
        "bundle_version, bundle_digest) of every note. --engine spark scores a Parquet notes dataset on Apache Spark "
        "(the [spark] extra; docs/replay.md, 'Scoring on Spark').",
    )
    score.add_argument("--notes", required=True, help="Notes table (Parquet; local engine: also JSON lines).")
    score.add_argument(
        "--sessions",
        default=None,
        help="Search sessions (Parquet): score their (query, note) pairs with the matcher (for search --scores).",
    )
    score.add_argument("--out", required=True, help="Scores table to write (local: one file; spark: a folder).")
    score.add_argument("--engine", choices=["local", "spark"], default="local")
    score.add_argument("--bundle", default=None, help="Bundle folder (default: the shipped bundle).")
    score.add_argument("--policy", default=None, help="Policy file for the action column (default: the bundle's).")
    score.add_argument("--master", default=None, help="spark: Spark master (default: spark-submit's, or Spark's own).")
    score.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    score.add_argument("--bundle-digest", default=None, metavar="SHA256", help="Refuse a bundle of another digest.")
    score.add_argument("--bundle-public-key", default=None, metavar="PEM", help="Require bundle.sig by this key.")
    _add_model_options(score)
    score.set_defaults(replay_handler=_score)

    report = commands.add_parser("report", help="Render the report again from the JSON results in a folder.")
    report.add_argument("out", help="Folder with exposure.json and/or search.json.")
    report.set_defaults(replay_handler=_report)

    demo = commands.add_parser(
        "demo",
        help="Synthesize a log and replay exposure and search on it, end to end.",
        description="synth + exposure (control vs the bundle's policy, and --strict-policy if given) + search "
        "+ report.",
    )
    demo.add_argument("--out", required=True)
    demo.add_argument("--bundle", default=None, help="Bundle folder (default: the shipped bundle).")
    demo.add_argument("--strict-policy", default=None, help="A second policy file to compare, as arm 'redone-strict'.")
    demo.add_argument("--impressions", type=_int_at_least(1), default=300_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--bootstrap", type=_int_at_least(0), default=1000)
    demo.add_argument("--data-dir", default=None)
    _add_model_options(demo)
    demo.set_defaults(replay_handler=_demo)

    decisions.add_command(commands)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `replay` to the `redone` command line (entry point `redone_sdk.cli`)."""
    parser = subparsers.add_parser(
        "replay",
        help="Offline replay of exposure-rate and click-page-rate experiments.",
        description="Estimate moderation (harmful exposure rate) and search (click page rate) effects offline "
        "from logs.",
    )
    commands = parser.add_subparsers(dest="replay_command", required=True, metavar="COMMAND")
    _add_commands(commands)
    _one_line_errors(commands)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logger = logging.getLogger("redone_sdk.replay")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("replay: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return int(args.replay_handler(args))


def main(argv: list[str] | None = None) -> int:
    """`python -m redone_sdk.replay`: the same commands without the `redone` front end."""
    from redone_sdk.errors import RedOneError

    parser = argparse.ArgumentParser(prog="python -m redone_sdk.replay", description="Offline replay of experiments.")
    commands = parser.add_subparsers(dest="replay_command", required=True, metavar="COMMAND")
    _add_commands(commands)
    _one_line_errors(commands)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (RedOneError, FileNotFoundError, UnicodeDecodeError) as exc:
        print(f"redone replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
