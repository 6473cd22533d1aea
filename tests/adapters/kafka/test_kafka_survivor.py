"""Exactly-once with two processes in a group, one killed with -9 while its transaction holds offsets: the
survivor gets the dead one's partitions, waits for the broker to abort that transaction (the stream's
`transaction_timeout_ms`, 10 s by default), moderates what was left, and only then exits 0 on
`--exit-when-idle`: idle means nothing assigned is waiting, so exit 0 leaves no note without a verdict."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from redone_sdk.adapters.kafka import header_map

pytestmark = pytest.mark.kafka


def _done_in(progress: Any, partitions: set[int]) -> int:
    """Verdicts seen so far (committed or not) for notes of these input partitions."""
    progress.count()
    return sum(int(header_map(r.headers)["source_partition"]) in partitions for r in progress.records)


def _assigned(log: Path) -> set[int]:
    """The input partitions a stream process holds now, from its last "partitions assigned" log line."""
    assigned: set[int] = set()
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # another logger's line, or one still being written
            continue
        if isinstance(event, dict) and event.get("msg") == "partitions assigned":
            assigned = {int(name.rsplit("[", 1)[1].rstrip("]")) for name in event["partitions"]}
    return assigned


def test_exactly_once_survivor_of_a_kill_9_moderates_everything_before_exiting_idle(
    sample_notes: list[dict[str, Any]], stream_settings, kit, spawn_stream, tmp_path: Path
) -> None:
    notes = sample_notes[:4000]
    settings = stream_settings(guarantee="exactly-once", batch_size=64, topic_partitions=4)
    kit.create_topics(settings)
    progress = kit.watch(settings.output_topic)  # read_uncommitted: sees work in flight too

    # Idle 8 s > the session timeout (6 s): the dead member's partitions are reassigned before it counts.
    doomed = spawn_stream(settings, "--instance-id", "doomed", "--exit-when-idle", "8")
    survivor = spawn_stream(settings, "--instance-id", "survivor", "--exit-when-idle", "8")
    logs = tmp_path / "stream-0.log", tmp_path / "stream-1.log"
    deadline = time.monotonic() + 120
    while not (_assigned(logs[0]) and _assigned(logs[1])):  # both in the group before any note arrives
        assert time.monotonic() < deadline, "the two processes never shared the partitions"
        assert doomed.poll() is None and survivor.poll() is None
        time.sleep(0.05)
    kit.produce_notes(settings.input_topic, notes)
    progress.wait_for(64, timeout=60)
    while _done_in(progress, _assigned(logs[0])) < 3 * 64:  # the doomed one has done some of its share
        assert time.monotonic() < deadline and doomed.poll() is None, "the doomed process made no progress"
        time.sleep(0.05)

    # Freeze both until the doomed one is caught with offsets in an open transaction, then kill it there.
    caught = False
    deadline = time.monotonic() + 30
    while not caught and time.monotonic() < deadline:
        for proc in (doomed, survivor):
            os.kill(proc.pid, signal.SIGSTOP)
        pending = kit.pending_offsets(settings.group_id, settings.input_topic)
        caught = bool(pending & _assigned(logs[0]))
        os.kill(survivor.pid, signal.SIGCONT)
        if not caught:
            os.kill(doomed.pid, signal.SIGCONT)
            time.sleep(0.01)
    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.wait(30) == -signal.SIGKILL
    assert caught, "the doomed process was never caught inside a transaction holding offsets"
    assert progress.count() < len(notes), "the stream finished before the kill: nothing was tested"

    assert survivor.wait(150) == 0, "the survivor failed (see its log in the test's tmp_path)"
    verdicts = kit.read_all(settings.output_topic, isolation="read_committed")
    counts = kit.verdict_counts(verdicts)
    assert set(counts) == {n["note_id"] for n in notes}, f"{len(notes) - len(counts)} notes left unmoderated"
    assert set(counts.values()) == {1}
