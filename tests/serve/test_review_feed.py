"""`redone serve review-feed` on the real broker and both databases: review-topic messages in the real
`review_record` format (the shipped model's verdicts) go into the review queue once each, even when delivered
twice (a re-sent copy, a group offset reset, a crash between the database write and the offset commit);
malformed messages go to the dead-letter topic; the database gone means retries, not a crash."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kafka", reason="the review feed needs the kafka extra")

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from review_helpers import TRIAGE
from sqlalchemy import select

from redone_sdk import Moderator
from redone_sdk.adapters.kafka import header_map
from redone_sdk.adapters.kafka.records import OutRecord, review_record
from redone_sdk.adapters.kafka.review_feed import ReviewFeed, ReviewFeedSettings
from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.schemas import Note
from redone_sdk.serve import Database
from redone_sdk.serve.db import ReviewItem
from redone_sdk.serve.review.feed import ConsoleQueue

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]

# the broker fixture of the adapter tests (uses $KAFKA_BOOTSTRAP, or starts scripts/kafka-broker)
_spec = importlib.util.spec_from_file_location("adapters_conftest", REPO / "tests" / "adapters" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_adapters = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _adapters  # dataclasses look their module up there
_spec.loader.exec_module(_adapters)
kafka_broker = _adapters.kafka_broker

BLOCK_ALL = Policy(name="block-all", default=CategoryRule(review=0.0, block=0.0))
ALLOW_ALL = Policy(name="allow-all", default=CategoryRule(review=1.0, block=1.0))


@pytest.fixture
def kafka_bootstrap(kafka_broker: Any) -> str:
    return str(kafka_broker.bootstrap)


@dataclass(frozen=True)
class _Source:
    """Where a stream's review copy came from (its `source_*` headers)."""

    topic: str
    partition: int
    offset: int


@pytest.fixture(scope="module")
def review_records(moderator: Moderator, texts: list[str]) -> list[tuple[str, OutRecord]]:
    """(note_id, record) for 12 real notes as `redone stream` writes them: 8 sent to review, 4 blocked."""
    notes = [Note(note_id=f"feed-{i:03d}", content=text) for i, text in enumerate(texts[:12])]
    review = moderator.with_policy(TRIAGE).classify_batch(notes[:8])
    block = moderator.with_policy(BLOCK_ALL).classify_batch(notes[8:])
    assert {r.action for r in review} == {"review"} and {r.action for r in block} == {"block"}
    return [
        (note.note_id, review_record("notes-review", _Source("notes", 0, i), note, result))
        for i, (note, result) in enumerate(zip(notes, [*review, *block], strict=True))
    ]


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    """This test's own topic, dead-letter topic and group; the topics are deleted afterwards."""
    tag = f"review-feed-{uuid.uuid4().hex[:8]}"
    names = {"topic": f"{tag}-review", "dlq_topic": f"{tag}-dlq", "group_id": f"{tag}-group"}
    yield names
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.delete_topics([names["topic"], names["dlq_topic"]], raise_errors=False)
    finally:
        admin.close()


def _settings(bootstrap: str, topics: dict[str, str], **overrides: Any) -> ReviewFeedSettings:
    return ReviewFeedSettings(
        bootstrap=bootstrap, session_timeout_ms=6000, retry_backoff_ms=50, db_backoff_max_s=0.5, **topics, **overrides
    )


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, list[Any]]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = [producer.send(topic, key=key, value=value, headers=headers) for key, value, headers in records]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def _as_messages(records: list[tuple[str, OutRecord]]) -> list[tuple[bytes | None, bytes | None, list[Any]]]:
    return [(r.key, r.value, list(r.headers)) for _, r in records]


def _ensure_topics(settings: ReviewFeedSettings) -> None:
    from redone_sdk.adapters.kafka.admin import ensure_topics

    ensure_topics(settings.stream_settings())


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: probe.committed(TopicPartition(topic, p)) for p in sorted(probe.partitions_for_topic(topic) or ())}
    finally:
        probe.close(autocommit=False)


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in probe.end_offsets(tps).items()}
    finally:
        probe.close()


def _all_committed(bootstrap: str, group: str, topic: str) -> bool:
    committed = _committed(bootstrap, group, topic)
    return all((committed.get(p) or 0) == end for p, end in _ends(bootstrap, topic).items())


def _reset_group(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 on every partition: the next member of the group reads the topic again from the start."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in tps})
    finally:
        consumer.close(autocommit=False)


def _queue(db_url: str) -> list[ReviewItem]:
    db = Database(db_url)
    try:
        with db.session() as session:
            return list(session.scalars(select(ReviewItem).order_by(ReviewItem.id)))
    finally:
        db.dispose()


class _FeedThread:
    def __init__(self, feed: ReviewFeed) -> None:
        self.feed = feed
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.feed.run(handle_signals=False)
        except BaseException as exc:
            self.error = exc

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.thread.is_alive(), f"the feed died while waiting for {what}: {self.error!r}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.2)

    def stop(self) -> None:
        self.feed.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the feed did not stop within 60 s"
        if self.error is not None:
            raise self.error


def _feed_to_end(bootstrap: str, db_url: str, topics: dict[str, str], feed: ReviewFeed | None = None) -> ReviewFeed:
    """Run a feed until the group has committed the whole topic, then stop it."""
    feed = feed or ReviewFeed(ConsoleQueue(Database(db_url)), _settings(bootstrap, topics))
    runner = _FeedThread(feed)
    runner.wait_until(lambda: _all_committed(bootstrap, topics["group_id"], topics["topic"]), "commit of the topic")
    runner.stop()
    return feed


def _check_once_each(db_url: str, records: list[tuple[str, OutRecord]]) -> list[ReviewItem]:
    rows = _queue(db_url)
    assert Counter(row.note_id for row in rows) == Counter(note_id for note_id, _ in records)
    assert {row.source for row in rows} == {"kafka"}
    assert Counter(row.action for row in rows) == {"review": 8, "block": 4}
    return rows


def test_each_note_queued_once_even_when_delivered_twice(
    kafka_bootstrap: str, db_url: str, topics: dict[str, str], review_records: list[tuple[str, OutRecord]]
) -> None:
    settings = _settings(kafka_bootstrap, topics)
    _ensure_topics(settings)
    # every copy twice on the topic: the stream's at-least-once re-sends
    _produce(kafka_bootstrap, topics["topic"], _as_messages(review_records) * 2)
    feed = _feed_to_end(kafka_bootstrap, db_url, topics)
    rows = _check_once_each(db_url, review_records)
    assert (feed.summary.messages, feed.summary.queued, feed.summary.already_queued) == (24, 12, 12)
    first = {row.note_id: row for row in rows}
    sent = {note_id: json.loads(record.value or b"") for note_id, record in review_records}
    for note_id, message in sent.items():  # the row holds the message's note and verdict
        row = first[note_id]
        assert (row.content, row.label, row.action) == (
            message["note"]["content"],
            message["result"]["label"],
            message["result"]["action"],
        )
        assert (row.bundle_name, row.bundle_version) == (
            message["result"]["model"]["name"],
            message["result"]["model"]["version"],
        )
        assert row.scores == pytest.approx(message["result"]["scores"])

    # the group's offsets reset: everything is delivered again, nothing new is queued
    _reset_group(kafka_bootstrap, topics["group_id"], topics["topic"])
    assert not _all_committed(kafka_bootstrap, topics["group_id"], topics["topic"])
    again = _feed_to_end(kafka_bootstrap, db_url, topics)
    assert (again.summary.messages, again.summary.queued, again.summary.already_queued) == (24, 0, 24)
    assert [(r.id, r.note_id) for r in _check_once_each(db_url, review_records)] == [(r.id, r.note_id) for r in rows]


class _Crash(BaseException):
    """Stands for the process dying between the database commit and the offset commit."""


class _CrashBeforeCommit(ReviewFeed):
    def _commit(self, consumer: Any, batch: Any) -> None:
        raise _Crash


def test_crash_between_write_and_commit_redelivers_without_duplicates(
    kafka_bootstrap: str, db_url: str, topics: dict[str, str], review_records: list[tuple[str, OutRecord]]
) -> None:
    settings = _settings(kafka_bootstrap, topics)
    _ensure_topics(settings)
    _produce(kafka_bootstrap, topics["topic"], _as_messages(review_records))
    crashing = _CrashBeforeCommit(ConsoleQueue(Database(db_url)), settings)
    with pytest.raises(_Crash):
        crashing.run(handle_signals=False)
    written = _queue(db_url)
    assert written, "the crash came after the database write: rows exist"
    assert set(_committed(kafka_bootstrap, topics["group_id"], topics["topic"]).values()) == {None}

    feed = _feed_to_end(kafka_bootstrap, db_url, topics)
    _check_once_each(db_url, review_records)
    assert feed.summary.already_queued >= len(written)  # the redelivered batch was a no-op
    assert feed.summary.queued == len(review_records) - len(written)


def test_malformed_messages_go_to_the_dead_letter_topic(
    kafka_bootstrap: str,
    db_url: str,
    topics: dict[str, str],
    review_records: list[tuple[str, OutRecord]],
    moderator: Moderator,
) -> None:
    settings = _settings(kafka_bootstrap, topics)
    _ensure_topics(settings)
    good = review_records[:3]
    item = json.loads(good[0][1].value or b"")
    mismatched = {"note": {**item["note"], "note_id": "someone-else"}, "result": item["result"]}
    bad: list[tuple[bytes | None, bytes | None, list[Any]]] = [
        (b"k1", b"this is not JSON", []),
        (b"k2", b"\xff\xfe\x00not utf-8", []),
        (b"k3", b"", []),
        (b"k4", json.dumps({"note": item["note"]}).encode(), []),  # a note without its verdict
        (b"k5", json.dumps(mismatched).encode(), []),
        (b"k6", json.dumps([1, 2, 3]).encode(), []),
    ]
    allowed_note = Note(note_id="allowed", content="a valid item the stream would not copy: its action is allow")
    allowed = moderator.with_policy(ALLOW_ALL).classify_batch([allowed_note])[0]
    assert allowed.action == "allow"
    valid = [
        *_as_messages(good),
        *_as_messages([("allowed", review_record("r", _Source("n", 0, 0), allowed_note, allowed))]),
    ]
    _produce(kafka_bootstrap, topics["topic"], [*bad[:3], *valid, *bad[3:]])
    feed = _feed_to_end(kafka_bootstrap, db_url, topics)
    assert sorted(row.note_id for row in _queue(db_url)) == sorted(note_id for note_id, _ in good)
    assert (feed.summary.queued, feed.summary.dead_letters, feed.summary.skipped) == (3, 6, 1)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        tps = [TopicPartition(topics["dlq_topic"], p) for p in consumer.partitions_for_topic(topics["dlq_topic"])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        letters = {record.key: record for record in consumer}
    finally:
        consumer.close()
    assert {key: header_map(r.headers)["reason"] for key, r in letters.items()} == {
        b"k1": "not_json",
        b"k2": "invalid_utf8",
        b"k3": "empty",
        b"k4": "missing_fields",
        b"k5": "invalid_schema",
        b"k6": "invalid_schema",
    }
    sent = {key: value for key, value, _ in bad}
    for key, record in letters.items():  # the original bytes, and where they came from
        assert (record.value or b"") == sent[key]
        headers = header_map(record.headers)
        assert headers["source_topic"] == topics["topic"] and headers["detail"]
    assert "someone-else" in header_map(letters[b"k5"].headers)["detail"]


def test_database_down_means_retries_not_a_crash(
    kafka_bootstrap: str, tmp_path: Path, topics: dict[str, str], review_records: list[tuple[str, OutRecord]]
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    Database(url).connect()  # the schema exists; then a writer holds the database
    lock = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    settings = _settings(kafka_bootstrap, topics)
    _ensure_topics(settings)
    _produce(kafka_bootstrap, topics["topic"], _as_messages(review_records))
    runner = _FeedThread(ReviewFeed(ConsoleQueue(Database(url)), settings))
    try:
        runner.wait_until(lambda: runner.feed.summary.db_retries >= 2, "database retries")
        assert set(_committed(kafka_bootstrap, topics["group_id"], topics["topic"]).values()) == {None}
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    runner.wait_until(lambda: _all_committed(kafka_bootstrap, topics["group_id"], topics["topic"]), "commit")
    runner.stop()
    _check_once_each(url, review_records)


def test_unreachable_database_at_start_is_retried_until_stopped(
    kafka_bootstrap: str, topics: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="redone_sdk.adapters.kafka.review_feed")
    nowhere = ConsoleQueue(Database("postgresql+psycopg://redone@127.0.0.1:9/nowhere"))
    feed = ReviewFeed(nowhere, _settings(kafka_bootstrap, topics))
    runner = _FeedThread(feed)

    def errors() -> int:
        return sum("review database unavailable" in r.getMessage() for r in caplog.records)

    runner.wait_until(lambda: errors() >= 2, "two logged database errors")
    runner.stop()
    assert feed.summary.batches == 0
    assert "127.0.0.1:9" in str(caplog.records[0].__dict__.get("fields", {}).get("error"))


def _cli(db_url: str, bootstrap: str, topics: dict[str, str], *args: str) -> list[str]:
    return [
        sys.executable, "-m", "redone_sdk.serve", "review-feed", "--db", db_url, "--bootstrap", bootstrap,
        "--topic", topics["topic"], "--dlq", topics["dlq_topic"], "--group", topics["group_id"], *args,
    ]  # fmt: skip


def test_cli_feeds_the_queue_and_stops_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path, topics: dict[str, str], review_records: list[tuple[str, OutRecord]]
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    _produce_later = _as_messages(review_records)
    log = (tmp_path / "feed.log").open("w")
    proc = subprocess.Popen(
        _cli(url, kafka_bootstrap, topics, "--batch-size", "5"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _ends(kafka_bootstrap, topics["topic"]):  # the feed creates its topics
            assert proc.poll() is None, (tmp_path / "feed.log").read_text()
            assert time.monotonic() < deadline, "the feed did not create its topics"
            time.sleep(0.2)
        _produce(kafka_bootstrap, topics["topic"], _produce_later)
        deadline = time.monotonic() + 90
        while not (_all_committed(kafka_bootstrap, topics["group_id"], topics["topic"]) and _queue(url)):
            assert proc.poll() is None, (tmp_path / "feed.log").read_text()
            assert time.monotonic() < deadline, "the feed did not commit the topic"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "feed.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    _check_once_each(url, review_records)
    lines = [json.loads(line) for line in (tmp_path / "feed.log").read_text().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "review feed stopped" and line["queued"] == 12 for line in lines)


@pytest.mark.parametrize(
    ("dlq", "args", "words"),
    [("d", ["--batch-size", "0"], "batch_size"), ("t", [], "cannot also be the dead-letter topic")],
)
def test_cli_bad_settings_is_one_line_and_exit_2(tmp_path: Path, dlq: str, args: list[str], words: str) -> None:
    topics = {"topic": "t", "dlq_topic": dlq, "group_id": "g"}
    result = subprocess.run(
        _cli(f"sqlite:///{tmp_path / 'q.sqlite3'}", "127.0.0.1:1", topics, *args),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
