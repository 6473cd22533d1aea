"""Offline replay of moderation and search experiments, for analysts (an optional part of the SDK).

Needs the `[replay]` extra (pyarrow; matplotlib for the report's plots). Nothing in `redone_sdk`'s core
imports this package.

    >>> from redone_sdk.replay import Arm, replay_exposure, write_report  # doctest: +SKIP
    >>> result = replay_exposure("impressions.parquet", "notes.parquet",
    ...                          [Arm.control("logged"), Arm.from_bundle("redone", None)],
    ...                          labels="labels.parquet")  # doctest: +SKIP
    >>> write_report("replay-report", exposure=result)  # doctest: +SKIP

See docs/replay.md for the estimators and their assumptions.
"""

from redone_sdk.replay.arms import Arm, NoteScores, ScoreCache, decide_actions
from redone_sdk.replay.bootstrap import Estimate
from redone_sdk.replay.clickmodel import PBMFit, fit_pbm
from redone_sdk.replay.exposure import ExposureResult, ExposureSettings, replay_exposure
from redone_sdk.replay.labels import read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.report import load_results, write_report
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.search import SearchResult, SearchSettings, replay_search
from redone_sdk.replay.sessions import read_sessions
from redone_sdk.replay.synth import SynthConfig, synthesize

__all__ = [
    "Arm",
    "NoteScores",
    "ScoreCache",
    "decide_actions",
    "Estimate",
    "PBMFit",
    "fit_pbm",
    "ExposureResult",
    "ExposureSettings",
    "replay_exposure",
    "SearchResult",
    "SearchSettings",
    "replay_search",
    "SynthConfig",
    "synthesize",
    "write_report",
    "load_results",
    "read_notes",
    "read_labels",
    "read_sessions",
    "ReplayInputError",
    "TableIssues",
]
