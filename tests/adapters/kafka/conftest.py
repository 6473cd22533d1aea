"""Helpers for the Kafka stream tests: real notes, the real tiny bundle, unique topics, readers and runners.

Each test gets its own topics and consumer group (`stream_settings`), so tests never see each other's data.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from redone_sdk import Moderator
from redone_sdk.adapters.kafka import ModerationStream, RunSummary, StreamSettings, header_map
from redone_sdk.adapters.kafka.admin import ensure_topics, stream_topics
from redone_sdk.adapters.kafka.settings import env_name
from redone_sdk.policy import CategoryRule, Policy

REPO = Path(__file__).resolve().parents[3]


SAMPLE_NOTES = 6000


@pytest.fixture(scope="session")
def sample_notes(data_dir: Path) -> list[dict[str, Any]]:
    """6,000 real notes (COLD dev texts) as JSON-ready dicts with ids n00000, n00001, …

    The committed test data has about a hundred COLD dev texts: they are used in turn, each round after the first
    with its number appended (`… #2`), so every note still has its own text."""
    with (data_dir / "cold" / "dev.csv").open(encoding="utf-8-sig", newline="") as handle:
        texts = [row["TEXT"] for row in csv.DictReader(handle) if row["TEXT"].strip()]
    assert len(texts) >= 100
    rounds = [texts] + [[f"{t} #{r}" for t in texts] for r in range(2, -(-SAMPLE_NOTES // len(texts)) + 1)]
    notes = [t for texts_of_round in rounds for t in texts_of_round][:SAMPLE_NOTES]
    return [{"note_id": f"n{i:05d}", "content": text} for i, text in enumerate(notes)]


@pytest.fixture(scope="session")
def moderator(tiny_bundle: Path, sample_notes: list[dict[str, Any]]) -> Moderator:
    """The real tiny bundle with a policy whose thresholds sit at the 65th/92nd percentiles of its scores on
    real notes, so a good share of notes is flagged (review or block) whatever the tiny model's calibration."""
    base = Moderator.load(tiny_bundle)
    results = base.classify_batch(sample_notes[:300])
    top = sorted(max(r.scores.values()) for r in results)
    review, block = top[int(0.65 * len(top))], top[int(0.92 * len(top))]
    policy = Policy(name="kafka-tests", default=CategoryRule(review=review, block=max(block, review)))
    return base.with_policy(policy)


@pytest.fixture(scope="session")
def policy_file(moderator: Moderator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    moderator.policy.save(path)
    return path


@pytest.fixture
def stream_settings(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., StreamSettings]:
    """`make(**overrides)`: settings with this test's own topics and group (the same on every call)."""
    tag = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:60].strip("-") + "-" + uuid.uuid4().hex[:6]

    def make(**overrides: Any) -> StreamSettings:
        values: dict[str, Any] = {
            "bootstrap": kafka_bootstrap,
            "input_topic": f"{tag}-in",
            "output_topic": f"{tag}-verdicts",
            "review_topic": f"{tag}-review",
            "dlq_topic": f"{tag}-dlq",
            "group_id": f"{tag}-group",
            "topic_partitions": 3,
            "session_timeout_ms": 6000,
            "max_wait_ms": 50,
            "retry_timeout_s": 90,
        }
        values.update(overrides)
        return StreamSettings(**values)

    return make


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    *,
    max_request_size: int = 1_048_576,
) -> int:
    """Send (key, value) pairs and wait for every acknowledgement; returns how many."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    finally:
        producer.close()


def note_messages(notes: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(n["note_id"].encode(), json.dumps(n, ensure_ascii=False).encode()) for n in notes]


def _reader(bootstrap: str, topic: str, isolation: str) -> tuple[KafkaConsumer, list[TopicPartition]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False)
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer, tps


def read_all(
    bootstrap: str, topic: str, *, isolation: str = "read_uncommitted", timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end (the last stable offset for read_committed)."""
    consumer, tps = _reader(bootstrap, topic, isolation)
    try:
        ends = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout}s"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


class TopicWatcher:
    """Keeps reading a topic from the beginning; `count()` is how many records arrived so far."""

    def __init__(self, bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> None:
        self._consumer, _ = _reader(bootstrap, topic, isolation)
        self.records: list[ConsumerRecord] = []

    def count(self) -> int:
        for batch in self._consumer.poll(timeout_ms=100).values():
            self.records.extend(batch)
        return len(self.records)

    def wait_for(self, n: int, timeout: float, *, alive: Callable[[], bool] = lambda: True) -> int:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert alive(), "the stream died while the test waited for its output"
            assert time.monotonic() < deadline, f"only {len(self.records)} of {n} records after {timeout}s"
        return len(self.records)

    def wait_for_keys(self, keys: set[str], timeout: float, *, alive: Callable[[], bool] = lambda: True) -> None:
        """Wait until every key in `keys` has arrived (a count is not enough: duplicates count too)."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        done = 0
        while not keys <= seen:
            assert alive(), "the stream died while the test waited for its output"
            assert time.monotonic() < deadline, f"{len(keys - seen)} of {len(keys)} keys missing after {timeout}s"
            self.count()
            seen.update(r.key.decode() for r in self.records[done:])
            done = len(self.records)

    def close(self) -> None:
        self._consumer.close()


def verdict_counts(records: Iterable[ConsumerRecord]) -> Counter[str]:
    return Counter(r.key.decode() for r in records)


def duplicates_by_source_partition(records: Iterable[ConsumerRecord]) -> dict[str, int]:
    """Per input partition (the `source_partition` header), verdicts beyond the first for each note."""
    seen: dict[str, Counter[str]] = {}
    for record in records:
        partition = header_map(record.headers)["source_partition"]
        seen.setdefault(partition, Counter())[record.key.decode()] += 1
    return {p: sum(c - 1 for c in counts.values()) for p, counts in seen.items()}


class KafkaKit:
    """Test-side Kafka access for one test: produce, read to the end, watch a topic fill up."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._watchers: list[TopicWatcher] = []
        self._probes: dict[str, dict[str, tuple[KafkaConsumer, list[TopicPartition]]]] = {}
        self._topics: set[str] = set()

    def create_topics(self, settings: StreamSettings) -> None:
        """Create the stream's topics up front, so test producers never hit auto-creation; they are deleted
        after the test, which keeps the broker's restarts quick."""
        self._topics.update(stream_topics(settings))
        ensure_topics(settings)

    def create_topic(self, name: str, *, partitions: int, configs: dict[str, str]) -> None:
        """Create one topic with topic-level configs (e.g. `max.message.bytes`); deleted after the test."""
        self._topics.add(name)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}})
            admin.wait_for_topics([name], timeout_ms=30_000)
        finally:
            admin.close()

    def delete_after(self, settings: StreamSettings) -> None:
        """Delete the stream's topics after the test (for topics the stream itself creates)."""
        self._topics.update(stream_topics(settings))

    def topic_config(self, topic: str, name: str) -> str:
        """The effective value of one config of `topic`, as the broker reports it."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=[name])
            return admin.describe_configs([resource])["topic"][topic][name]["value"]
        finally:
            admin.close()

    def produce(
        self, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]], *, max_request_size: int = 1_048_576
    ) -> int:
        return produce(self.bootstrap, topic, messages, max_request_size=max_request_size)

    def produce_notes(self, topic: str, notes: Iterable[dict[str, Any]]) -> int:
        return produce(self.bootstrap, topic, note_messages(notes))

    def read_all(self, topic: str, *, isolation: str = "read_uncommitted") -> list[ConsumerRecord]:
        return read_all(self.bootstrap, topic, isolation=isolation)

    def watch(self, topic: str, *, isolation: str = "read_uncommitted") -> TopicWatcher:
        self._watchers.append(TopicWatcher(self.bootstrap, topic, isolation))
        return self._watchers[-1]

    def has_open_transaction(self, topic: str) -> bool:
        """True when some partition's last stable offset is behind its end: a transaction is writing to it."""
        if topic not in self._probes:
            self._probes[topic] = {
                iso: _reader(self.bootstrap, topic, iso) for iso in ("read_uncommitted", "read_committed")
            }
        ends = {iso: consumer.end_offsets(tps) for iso, (consumer, tps) in self._probes[topic].items()}
        return any(ends["read_committed"][tp] < end for tp, end in ends["read_uncommitted"].items())

    def pending_offsets(self, group: str, topic: str) -> set[int]:
        """Partitions of `topic` whose offsets for `group` an open transaction holds (a read_committed offset
        fetch, KIP-447's require_stable, cannot answer for them). Asks without joining the group."""
        probe = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        pending: set[int] = set()
        try:
            for partition in sorted(probe.partitions_for_topic(topic) or ()):
                try:
                    probe.committed(TopicPartition(topic, partition), timeout_ms=300)
                except KafkaError:
                    pending.add(partition)
            return pending
        finally:
            probe.close(autocommit=False)

    verdict_counts = staticmethod(verdict_counts)
    duplicates_by_source_partition = staticmethod(duplicates_by_source_partition)

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.close()
        for probe in self._probes.values():
            for consumer, _ in probe.values():
                consumer.close()
        if self._topics:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                admin.delete_topics(sorted(self._topics), raise_errors=False)
            finally:
                admin.close()


@pytest.fixture
def kit(kafka_bootstrap: str) -> Iterator[KafkaKit]:
    made = KafkaKit(kafka_bootstrap)
    yield made
    made.close()


class StreamThread:
    """Runs a `ModerationStream` on a thread; `stop()` asks it to finish and re-raises what it raised."""

    def __init__(self, stream: ModerationStream, **run_kwargs: Any) -> None:
        self.stream = stream
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, kwargs=run_kwargs, daemon=True)

    def _run(self, **run_kwargs: Any) -> None:
        try:
            self.summary = self.stream.run(handle_signals=False, **run_kwargs)
        except BaseException as exc:  # handed to the test thread by join()
            self.error = exc

    def start(self) -> StreamThread:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 60.0) -> RunSummary:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not stop within {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def stop(self, timeout: float = 60.0) -> RunSummary:
        self.stream.stop()
        return self.join(timeout)


@pytest.fixture
def stream_threads() -> Iterator[Callable[..., StreamThread]]:
    """`start(stream, **run_kwargs)`: run streams on threads; any left running is stopped after the test."""
    started: list[StreamThread] = []

    def start(stream: ModerationStream, **run_kwargs: Any) -> StreamThread:
        started.append(StreamThread(stream, **run_kwargs).start())
        return started[-1]

    yield start
    for thread in started:
        thread.stream.stop()
    for thread in started:
        thread._thread.join(60)


def settings_env(settings: StreamSettings) -> dict[str, str]:
    """The settings as REDONE_KAFKA_* variables (how a deployment would configure `redone stream`)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(exclude={"security"}).items():
        if value is not None:
            env[env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@pytest.fixture
def spawn_stream(tiny_bundle: Path, policy_file: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """`spawn(settings, *args)`: `python -m redone_sdk.adapters.kafka` in its own process, configured through
    the environment; its JSON logs go to tmp_path. Processes still alive after the test are killed."""
    procs: list[subprocess.Popen] = []

    def spawn(settings: StreamSettings, *args: str) -> subprocess.Popen:
        log = (tmp_path / f"stream-{len(procs)}.log").open("w")
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "redone_sdk.adapters.kafka",
                "--bundle",
                str(tiny_bundle),
                "--policy",
                str(policy_file),
                "--threads",
                "1",
                *args,
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture
def run_benchmark(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run `python -m benchmarks.<module> ... --json FILE` from the repository root; its JSON results."""

    def run(module: str, *args: str) -> dict[str, Any]:
        out = tmp_path / f"{module}.json"
        command = [sys.executable, "-m", f"benchmarks.{module}", *args, "--json", str(out)]
        # Its own process group: on a timeout the benchmark and whatever it started (a stream) are killed together.
        proc = subprocess.Popen(
            command, cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            said, _ = proc.communicate(timeout=300)
            failure = f"exit status {proc.returncode}" if proc.returncode else None
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            said, _ = proc.communicate()
            failure = "timed out after 300 s (its process group was killed)"
        if failure:  # say what the benchmark said
            pytest.fail(f"benchmarks.{module} {' '.join(args)}: {failure}\n{said.decode(errors='replace')[-4000:]}")
        return json.loads(out.read_text())

    return run
