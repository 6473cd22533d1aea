"""The review queue as `redone serve review-feed` writes it: the console's database, behind the small interface
the Kafka adapter's feed expects (`redone_sdk.adapters.kafka.review_feed.ReviewQueue`), so neither side imports
the other at module level."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from redone_sdk.schemas import ModerationResult, Note

from ..db import Database
from ..errors import DatabaseUnavailableError
from .store import ReviewStore

__all__ = ["FEED_SOURCE", "ConsoleQueue"]

FEED_SOURCE = "kafka"  # the rows' `source` (the service's own rows say `classify` or `moderations`)


class ConsoleQueue:
    """`connect` checks (and migrates) the database; `write` queues items once per note id + bundle version +
    digest (`ReviewStore.enqueue`). Both raise `DatabaseUnavailableError` while the database is gone."""

    unavailable: tuple[type[Exception], ...] = (DatabaseUnavailableError,)

    def __init__(self, db: Database) -> None:
        self.db = db
        self._store: ReviewStore | None = None

    def connect(self) -> None:
        self.db.connect()
        self._store = self._store or ReviewStore(self.db)

    def write(
        self, notes: Sequence[Note], results: Sequence[ModerationResult], *, policy: str, actions: Collection[str]
    ) -> int:
        if self._store is None:
            raise RuntimeError("connect() first")
        return self._store.enqueue(notes, results, policy=policy, source=FEED_SOURCE, actions=actions)
