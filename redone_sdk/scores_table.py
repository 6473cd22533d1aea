"""The scores table: a bundle's verdicts and per-category scores for a notes dataset, written by a scoring job
(`redone moderate --engine spark`, `redone replay score`) and read by `redone replay exposure --scores`.

A Parquet dataset (one file or a folder of part files), one row per note: `note_id`, `action`, `label`, one
`score_<category>` float column per harm category of the bundle, and the bundle that made them
(`bundle_name`, `bundle_version`, `bundle_digest`, the same on every row). A pair scores table (a matcher's
relevance, for `redone replay search --scores`) has one row per (query, note): `query`, `note_id`, `score` and
the same bundle columns. Only names live here (no pyarrow at import): writers and readers share them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BUNDLE_COLUMNS",
    "NOTE_ID",
    "PAIR_SCORE",
    "QUERY",
    "SCORE_PREFIX",
    "VERDICT_COLUMNS",
    "categories_of",
    "score_column",
]

NOTE_ID = "note_id"
QUERY = "query"
PAIR_SCORE = "score"
VERDICT_COLUMNS = ("action", "label")
BUNDLE_COLUMNS = ("bundle_name", "bundle_version", "bundle_digest")
SCORE_PREFIX = "score_"


def score_column(category: str) -> str:
    """The column of one category's scores."""
    return SCORE_PREFIX + category


def categories_of(columns: Sequence[str]) -> tuple[str, ...]:
    """The categories of a table's score columns, in column order."""
    return tuple(c[len(SCORE_PREFIX) :] for c in columns if c.startswith(SCORE_PREFIX))
