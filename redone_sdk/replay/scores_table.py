"""Scores tables in the replay: written on this machine (`redone replay score --engine local`), read back by
`redone replay exposure --scores TABLE` so that an arm uses a table's scores instead of scoring the notes itself.

The format is `redone_sdk.scores_table`'s (the Spark engine writes the same). A table stands in for an arm's
bundle only when it was made by that bundle: its `bundle_digest` must be the arm's bundle digest.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from redone_sdk.replay.arms import Arm, NoteScores
from redone_sdk.replay.formats import detect_format, parquet_files
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.scores_table import (
    BUNDLE_COLUMNS,
    NOTE_ID,
    PAIR_SCORE,
    QUERY,
    VERDICT_COLUMNS,
    categories_of,
    score_column,
)

if TYPE_CHECKING:
    from redone_sdk.matcher import NoteQueryMatcher
    from redone_sdk.moderator import Moderator

__all__ = [
    "PairScoresTable",
    "ScoresTable",
    "TablePairScorer",
    "read_pair_scores_table",
    "read_scores_table",
    "session_pairs",
    "use_pair_scores_table",
    "use_scores_tables",
    "write_pair_scores_table",
    "write_scores_table",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoresTable:
    """A scores table read back: the bundle that made it and its scores per note."""

    path: Path
    bundle_name: str
    bundle_version: str
    digest: str
    scores: NoteScores

    @property
    def bundle(self) -> str:
        return f"{self.bundle_name} {self.bundle_version}"


def read_scores_table(path: str | Path) -> ScoresTable:
    """Read a scores table (a Parquet file or a folder of part files); `ReplayInputError` when it is not one."""
    path = Path(path)
    if not path.exists():
        raise ReplayInputError(f"no such scores table: {path}")
    if path.is_dir() and not parquet_files(path):
        raise ReplayInputError(f"scores table {path} holds no Parquet files")
    if path.is_file() and detect_format(path) != "parquet":
        raise ReplayInputError(f"scores table {path} is not Parquet")
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
        columns = list(schema.names)
        missing = [c for c in (NOTE_ID, *BUNDLE_COLUMNS) if c not in columns]
        categories = categories_of(columns)
        if missing or not categories:
            what = missing + ([] if categories else [f"{score_column('<category>')} columns"])
            raise ReplayInputError(f"scores table {path} lacks {', '.join(what)} (columns: {', '.join(columns)})")
        wanted = [NOTE_ID, *BUNDLE_COLUMNS, *(score_column(c) for c in categories)]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read scores table {path}: {exc}") from None
    name, version, digest = _one_bundle(table, path)
    matrix = np.stack(
        [table.column(score_column(c)).to_numpy().astype(np.float32) for c in categories], axis=1
    ).reshape(table.num_rows, len(categories))
    ids = table.column(NOTE_ID).combine_chunks().cast(pa.string())
    return ScoresTable(path, name, version, digest, NoteScores(ids, categories, matrix))


def use_scores_tables(arms: Sequence[Arm], paths: Sequence[str | Path]) -> list[Arm]:
    """Arms whose bundle made one of the tables use its scores (with their own policy) instead of the model.

    Every table must belong to some arm's bundle (same digest), else `ReplayInputError` naming both digests."""
    tables = [read_scores_table(p) for p in paths]
    by_digest = {t.digest: t for t in tables}
    bundles = {a.moderator.bundle.digest: a.moderator for a in arms if a.moderator is not None and not a.is_control}
    for table in tables:
        if table.digest not in bundles:
            arms_text = ", ".join(f"{m.bundle.name} {m.bundle.version} digest {d}" for d, m in bundles.items())
            raise ReplayInputError(
                f"scores table {table.path} was made by {table.bundle} digest {table.digest}, which no arm runs "
                f"(arms: {arms_text or 'no bundle arms'})"
            )
    out = []
    for arm in arms:
        table = by_digest.get(arm.moderator.bundle.digest) if arm.moderator is not None else None
        if table is None:
            out.append(arm)
            continue
        if set(table.scores.categories) != set(arm.moderator.categories):
            raise ReplayInputError(
                f"scores table {table.path} has categories {list(table.scores.categories)}, arm {arm.name!r}'s "
                f"bundle {list(arm.moderator.categories)}"
            )
        log.info(
            "arm %s: scores from %s (%s, %d notes)", arm.name, table.path, table.bundle, len(table.scores.note_ids)
        )
        out.append(Arm(name=arm.name, policy=arm.policy, scores=table.scores, review_delay=arm.review_delay))
    return out


def write_scores_table(
    moderator: Moderator, notes_path: str | Path, output: str | Path, *, chunk: int = 20_000, overwrite: bool = False
) -> tuple[int, TableIssues]:
    """Score every valid note of a notes table with `moderator` on this machine and write a scores table
    (one Parquet file); the number of notes written and what reading the notes found (bad rows by reason:
    they are left out of the table, never silently)."""
    from redone_sdk.replay.notes import iter_notes, read_notes

    output = Path(output)
    if output.exists() and not overwrite:
        raise ReplayInputError(f"output {output} exists; remove it or pass --overwrite")
    index = read_notes(notes_path)
    bundle = moderator.bundle
    categories = tuple(moderator.categories)
    fields = [pa.field(NOTE_ID, pa.string(), nullable=False)]
    fields += [pa.field(c, pa.string(), nullable=False) for c in VERDICT_COLUMNS]
    fields += [pa.field(score_column(c), pa.float32(), nullable=False) for c in categories]
    fields += [pa.field(c, pa.string(), nullable=False) for c in BUNDLE_COLUMNS]
    schema = pa.schema(fields)
    constants = (bundle.name, str(bundle.version), bundle.digest)
    written = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        buffer = []

        def flush() -> None:
            nonlocal written
            results = moderator.classify_batch(buffer)
            data = {
                NOTE_ID: [r.note_id for r in results],
                "action": [r.action for r in results],
                "label": [r.label for r in results],
                **{score_column(c): [r.scores[c] for r in results] for c in categories},
                **{c: [v] * len(results) for c, v in zip(BUNDLE_COLUMNS, constants, strict=True)},
            }
            writer.write_table(pa.table(data, schema=schema))
            written += len(results)
            buffer.clear()

        for note in iter_notes(notes_path, index.ids.to_pylist()):
            buffer.append(note)
            if len(buffer) >= chunk:
                flush()
        if buffer:
            flush()
    if output.is_dir():
        shutil.rmtree(output)
    tmp.replace(output)
    return written, index.issues


@dataclass(frozen=True)
class PairScoresTable:
    """A pair scores table read back: the matcher bundle that made it and the relevance of each (query, note)."""

    path: Path
    bundle_name: str
    bundle_version: str
    digest: str
    keys: pa.Array  # query \x1f note_id
    scores: np.ndarray

    @property
    def bundle(self) -> str:
        return f"{self.bundle_name} {self.bundle_version}"


def _pair_keys(queries: pa.Array, note_ids: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(queries.cast(pa.string()), note_ids.cast(pa.string()), "\x1f")


def read_pair_scores_table(path: str | Path) -> PairScoresTable:
    """Read a pair scores table (`query`, `note_id`, `score`, bundle columns); `ReplayInputError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise ReplayInputError(f"no such scores table: {path}")
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
        missing = [c for c in (QUERY, NOTE_ID, PAIR_SCORE, *BUNDLE_COLUMNS) if c not in schema.names]
        if missing:
            raise ReplayInputError(
                f"scores table {path} is not a pair scores table (`redone replay score --sessions`): it lacks "
                f"{', '.join(missing)}"
            )
        table = pq.read_table(path, columns=[QUERY, NOTE_ID, PAIR_SCORE, *BUNDLE_COLUMNS])
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read scores table {path}: {exc}") from None
    name, version, digest = _one_bundle(table, path)
    keys = _pair_keys(table.column(QUERY).combine_chunks(), table.column(NOTE_ID).combine_chunks())
    scores = table.column(PAIR_SCORE).to_numpy().astype(np.float64)
    return PairScoresTable(path, name, version, digest, keys, scores)


def _one_bundle(table: pa.Table, path: Path) -> tuple[str, str, str]:
    bundles = pc.unique(
        pc.binary_join_element_wise(*(table.column(c).cast(pa.string()) for c in BUNDLE_COLUMNS), "\x1f")
    ).to_pylist()
    if not bundles:
        raise ReplayInputError(f"scores table {path} is empty")
    if len(bundles) != 1 or bundles[0] is None:
        raise ReplayInputError(f"scores table {path} mixes the scores of {len(bundles)} bundles; score with one")
    name, version, digest = bundles[0].split("\x1f")
    return name, version, digest


class TablePairScorer:
    """A pair scorer for `replay_search` that looks the matcher's scores up in a pair scores table."""

    def __init__(self, table: PairScoresTable) -> None:
        self.table = table
        self.__name__ = f"{table.bundle} (scores table)"

    def __call__(self, pairs: Sequence[tuple[str, object]]) -> np.ndarray:
        queries = pa.array([q for q, _ in pairs], type=pa.string())
        ids = pa.array([n.note_id for _, n in pairs], type=pa.string())
        keys = _pair_keys(queries, ids)
        rows = (
            pc.index_in(keys, value_set=self.table.keys).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        )
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            examples = [(pairs[int(i)][0], pairs[int(i)][1].note_id) for i in missing[:3]]
            raise ReplayInputError(
                f"{len(missing)} (query, note) pairs of the log have no score in {self.table.path}, e.g. {examples}"
            )
        return self.table.scores[rows]


def use_pair_scores_table(matcher: object, path: str | Path) -> TablePairScorer:
    """The table's scorer in place of `matcher` (a `NoteQueryMatcher`), when the matcher's bundle made it."""
    table = read_pair_scores_table(path)
    digest = matcher.bundle.digest  # type: ignore[attr-defined]
    if table.digest != digest:
        bundle = matcher.bundle  # type: ignore[attr-defined]
        raise ReplayInputError(
            f"scores table {table.path} was made by {table.bundle} digest {table.digest}, but the matcher is "
            f"{bundle.name} {bundle.version} digest {digest}"
        )
    log.info("matcher: scores from %s (%s, %d pairs)", table.path, table.bundle, len(table.keys))
    return TablePairScorer(table)


def session_pairs(sessions: str | Path) -> tuple[pa.Array, pa.Array]:
    """The distinct (query, note_id) pairs of a Parquet search sessions table (`query`, `notes`)."""
    path = Path(sessions)
    if not path.exists():
        raise ReplayInputError(f"no such sessions table: {path}")
    if path.is_file() and detect_format(path) != "parquet":
        raise ReplayInputError(f"sessions table {path}: scoring pairs reads Parquet only")
    try:
        table = pq.read_table(path, columns=[QUERY, "notes"])
    except (pa.ArrowException, OSError) as exc:
        raise ReplayInputError(f"cannot read sessions table {path}: {exc}") from None
    notes = table.column("notes").combine_chunks()
    parents = pc.list_parent_indices(notes)
    queries = table.column(QUERY).combine_chunks().take(parents)
    flat = pa.table({QUERY: queries.cast(pa.string()), NOTE_ID: pc.list_flatten(notes).cast(pa.string())})
    flat = flat.filter(pc.and_(pc.is_valid(flat.column(QUERY)), pc.is_valid(flat.column(NOTE_ID))))
    distinct = flat.group_by([QUERY, NOTE_ID]).aggregate([])
    return distinct.column(QUERY).combine_chunks(), distinct.column(NOTE_ID).combine_chunks()


def write_pair_scores_table(
    matcher: NoteQueryMatcher,
    sessions: str | Path,
    notes_path: str | Path,
    output: str | Path,
    *,
    chunk: int = 4096,
    overwrite: bool = False,
) -> int:
    """Score every distinct (query, note) pair of a sessions table whose note is in the notes table, on this
    machine, into a pair scores table (one Parquet file); the number of pairs written."""
    from redone_sdk.replay.notes import load_notes

    output = Path(output)
    if output.exists() and not overwrite:
        raise ReplayInputError(f"output {output} exists; remove it or pass --overwrite")
    queries, ids = session_pairs(sessions)
    found = load_notes(notes_path, set(ids.to_pylist()))
    pairs = [(q, n) for q, n in zip(queries.to_pylist(), ids.to_pylist(), strict=True) if n in found]
    bundle = matcher.bundle
    schema = pa.schema(
        [pa.field(QUERY, pa.string(), nullable=False), pa.field(NOTE_ID, pa.string(), nullable=False)]
        + [pa.field(PAIR_SCORE, pa.float32(), nullable=False)]
        + [pa.field(c, pa.string(), nullable=False) for c in BUNDLE_COLUMNS]
    )
    constants = (bundle.name, str(bundle.version), bundle.digest)
    tmp = output.with_name(output.name + ".tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            results = matcher.score_pairs([(q, found[n]) for q, n in part])
            data = {
                QUERY: [q for q, _ in part],
                NOTE_ID: [n for _, n in part],
                PAIR_SCORE: [r.score for r in results],
                **{c: [v] * len(part) for c, v in zip(BUNDLE_COLUMNS, constants, strict=True)},
            }
            writer.write_table(pa.table(data, schema=schema))
    if output.is_dir():
        shutil.rmtree(output)
    tmp.replace(output)
    return len(pairs)
