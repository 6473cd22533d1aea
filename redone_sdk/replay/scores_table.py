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
from redone_sdk.replay.schemas import ReplayInputError
from redone_sdk.scores_table import BUNDLE_COLUMNS, NOTE_ID, VERDICT_COLUMNS, categories_of, score_column

if TYPE_CHECKING:
    from redone_sdk.moderator import Moderator

__all__ = ["ScoresTable", "read_scores_table", "use_scores_tables", "write_scores_table"]

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
    bundles = pc.unique(
        pc.binary_join_element_wise(*(table.column(c).cast(pa.string()) for c in BUNDLE_COLUMNS), "\x1f")
    ).to_pylist()
    if len(bundles) != 1 or bundles[0] is None:
        if not bundles:
            raise ReplayInputError(f"scores table {path} is empty")
        raise ReplayInputError(f"scores table {path} mixes the scores of {len(bundles)} bundles; score with one")
    name, version, digest = bundles[0].split("\x1f")
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
) -> int:
    """Score every valid note of a notes table with `moderator` on this machine and write a scores table
    (one Parquet file); the number of notes written."""
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
    return written
