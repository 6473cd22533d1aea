"""The search log out of core: page views streamed from the sessions table, chunk by chunk, into compact
columns on disk (query id, page length, pair id and click per note shown); every later step reads them back
in chunks of page views, so memory depends on the chunk size and on the distinct queries and (query, note)
pairs, not on the number of page views.

Duplicate session ids are found after the stream from a 64-bit hash per page view (8 bytes each, the one
per-page-view array held in memory); the later occurrences are left out and counted.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from redone_sdk.replay.hashing import string_hash64
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import TableIssues
from redone_sdk.replay.sessions import SearchSessions, iter_sessions

__all__ = ["PageLog", "PageChunk", "spill_sessions"]

_COLUMNS = {"query": np.int32, "length": np.int32, "pair": np.int32, "click": np.uint8}


@dataclass(frozen=True)
class PageChunk:
    """Consecutive page views: `starts` (local, plus the total at the end), and per note shown its rank,
    pair and click."""

    query: np.ndarray  # query id per page view
    starts: np.ndarray
    rank: np.ndarray
    pair: np.ndarray
    click: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # columns added later (per kept note shown)

    @property
    def sessions(self) -> int:
        return len(self.query)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def session_of(self) -> np.ndarray:
        return np.repeat(np.arange(self.sessions), self.lengths)


@dataclass
class PageLog:
    """The spilled log: distinct queries and pairs in memory, page views on disk (read as memory maps)."""

    directory: Path
    queries: list[str]
    pairs: list[tuple[str, str]]
    pair_query: np.ndarray  # query id of each pair
    sessions: int
    observations: int
    max_rank: int
    keep: np.ndarray | None  # per page view: not a duplicate (None: all kept)
    issues: TableIssues
    chunk_sessions: int
    own_directory: bool = True
    largest_chunk: int = field(default=0)  # the most page views a chunk read back held (<= chunk_sessions)
    largest_write: int = field(default=0)  # the most page views held before a write (<= chunk_sessions)

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    def _map(self, name: str, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=_COLUMNS[name])
        return np.memmap(self.directory / f"{name}.bin", dtype=_COLUMNS[name], mode="r", shape=(count,))

    def kept_observations(self) -> int:
        if self.keep is None:
            return self.observations
        length = self._map("length", self.sessions)
        return int(np.asarray(length, dtype=np.int64)[self.keep].sum())

    def write_column(self, name: str) -> BinaryIO:
        """A file to append an int32 column over the kept notes shown, in `chunks()` order."""
        return (self.directory / f"extra-{name}.bin").open("wb")

    def chunks(self, chunk_sessions: int | None = None, extra: Iterable[str] = ()) -> Iterator[PageChunk]:
        """The kept page views in order, `chunk_sessions` at a time (the log's chunk size by default), with
        the `extra` columns written by `write_column`."""
        size = chunk_sessions or self.chunk_sessions
        query, length = self._map("query", self.sessions), self._map("length", self.sessions)
        pair, click = self._map("pair", self.observations), self._map("click", self.observations)
        kept_obs = self.kept_observations() if extra else 0
        extras = {
            name: np.memmap(self.directory / f"extra-{name}.bin", dtype=np.int32, mode="r", shape=(kept_obs,))
            for name in extra
        }
        offset = extra_offset = 0
        for a in range(0, self.sessions, size):
            b = min(a + size, self.sessions)
            lengths = np.asarray(length[a:b], dtype=np.int64)
            total = int(lengths.sum())
            q = np.asarray(query[a:b], dtype=np.int64)
            p = np.asarray(pair[offset : offset + total], dtype=np.int64)
            c = np.asarray(click[offset : offset + total], dtype=bool)
            offset += total
            if self.keep is not None and not self.keep[a:b].all():
                kept = self.keep[a:b]
                obs = np.repeat(kept, lengths)
                q, lengths, p, c = q[kept], lengths[kept], p[obs], c[obs]
            if len(q) == 0:
                continue
            more = {n: np.asarray(m[extra_offset : extra_offset + len(p)], dtype=np.int64) for n, m in extras.items()}
            extra_offset += len(p)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            rank = np.arange(len(p)) - np.repeat(starts[:-1], lengths)
            self.largest_chunk = max(self.largest_chunk, len(q))
            yield PageChunk(q, starts, rank, p, c, more)

    @property
    def kept_sessions(self) -> int:
        return self.sessions if self.keep is None else int(self.keep.sum())

    def close(self) -> None:
        if self.own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


class _Writer:
    """Appends compact columns to files in a folder, one chunk of page views at a time."""

    def __init__(self, directory: Path, chunk_sessions: int) -> None:
        self.directory = directory
        self.chunk_sessions = chunk_sessions
        self.files = {name: (directory / f"{name}.bin").open("wb") for name in _COLUMNS}
        self.hashes: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.query_ids: dict[str, int] = {}
        self.pair_ids: dict[tuple[str, str], int] = {}
        self.pair_query: list[int] = []
        self.sessions = self.observations = self.max_rank = 0
        self._pending: list[tuple[int, tuple[str, str, list[str], list[int]]]] = []
        self.largest_flush = 0

    def add(self, row: int, parsed: tuple[str, str, list[str], list[int]]) -> None:
        self._pending.append((row, parsed))
        if len(self._pending) >= self.chunk_sessions:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        self.largest_flush = max(self.largest_flush, len(pending))
        queries, lengths, pairs, clicks = [], [], [], []
        for _, (_, query, shown, click) in pending:
            q = self.query_ids.setdefault(query, len(self.query_ids))
            queries.append(q)
            lengths.append(len(shown))
            for note in shown:
                key = (query, note)
                p = self.pair_ids.get(key)
                if p is None:
                    p = self.pair_ids[key] = len(self.pair_ids)
                    self.pair_query.append(q)
                pairs.append(p)
            clicks.extend(click)
        columns = {"query": queries, "length": lengths, "pair": pairs, "click": clicks}
        for name, values in columns.items():
            self.files[name].write(np.asarray(values, dtype=_COLUMNS[name]).tobytes())
        self.hashes.append(string_hash64(pa.array([s for _, (s, _, _, _) in pending], type=pa.string())))
        self.rows.append(np.fromiter((r for r, _ in pending), dtype=np.int64, count=len(pending)))
        self.sessions += len(pending)
        self.observations += len(pairs)
        self.max_rank = max(self.max_rank, max(lengths))

    def close(self) -> None:
        self.flush()
        for handle in self.files.values():
            handle.close()


def spill_sessions(
    sessions: str | Path | SearchSessions,
    *,
    notes: NotesIndex | None,
    max_page: int,
    chunk_sessions: int = 65_536,
    spill_dir: str | Path | None = None,
) -> PageLog:
    """Stream the sessions table (or an in-memory `SearchSessions`) into a `PageLog` under a temporary
    folder (inside `spill_dir` when given); duplicate session ids after the first are left out and counted."""
    directory = Path(tempfile.mkdtemp(prefix="redone-search-", dir=spill_dir))
    writer = _Writer(directory, chunk_sessions)
    try:
        if isinstance(sessions, SearchSessions):
            issues = sessions.issues
            rows: Iterable = (
                (i, (s, q, list(n), list(c)))
                for i, (s, q, n, c) in enumerate(
                    zip(sessions.session_ids, sessions.queries, sessions.notes, sessions.clicks, strict=True)
                )
            )
        else:
            issues = TableIssues(table="search sessions", source=str(sessions))
            rows = iter_sessions(sessions, issues, notes=notes, max_page=max_page, batch_rows=chunk_sessions)
        for row, parsed in rows:
            writer.add(row, parsed)
        writer.close()
    except BaseException:
        writer.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    keep = None
    if writer.sessions:
        hashes = np.concatenate(writer.hashes)
        _, first = np.unique(hashes, return_index=True)
        if len(first) < len(hashes):
            keep = np.zeros(len(hashes), dtype=bool)
            keep[first] = True
            rows_of = np.concatenate(writer.rows)
            for row in rows_of[~keep]:
                issues.add("duplicate session_id", row=int(row))
    log = PageLog(
        directory=directory,
        queries=list(writer.query_ids),
        pairs=list(writer.pair_ids),
        pair_query=np.asarray(writer.pair_query, dtype=np.int64),
        sessions=writer.sessions,
        observations=writer.observations,
        max_rank=writer.max_rank,
        keep=keep,
        issues=issues,
        chunk_sessions=chunk_sessions,
    )
    if not isinstance(sessions, SearchSessions):
        issues.rows_used = log.kept_sessions
    log.largest_write = writer.largest_flush
    return log
