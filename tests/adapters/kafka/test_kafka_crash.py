"""`kill -9` of a consumer process mid-stream, then a restart: every note still gets a verdict.

At-least-once may repeat at most the batch in flight at the crash (≤ one batch per input partition);
exactly-once repeats nothing for a `read_committed` reader, because the restarted process (same
transactional.id) aborts the dead one's open transaction and resumes from the offsets committed with it.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from redone_sdk import ModerationResult

pytestmark = pytest.mark.kafka

BATCH = 64


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_kill_9_mid_stream_then_restart_loses_nothing(
    guarantee: str, sample_notes: list[dict[str, Any]], stream_settings, kit, spawn_stream
) -> None:
    notes = sample_notes[:4000]
    ids = {n["note_id"] for n in notes}
    exactly_once = guarantee == "exactly-once"
    settings = stream_settings(guarantee=guarantee, batch_size=BATCH, instance_id="crash-test")
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)
    progress = kit.watch(settings.output_topic)  # read_uncommitted: sees work in flight too

    first = spawn_stream(settings)
    progress.wait_for(len(notes) // 5, timeout=120, alive=lambda: first.poll() is None)
    killed_in_transaction = False
    if exactly_once:  # kill while a transaction holds verdicts that are not committed yet (almost always caught)
        deadline = time.monotonic() + 5  # short: the kill must still come mid-stream
        while not killed_in_transaction and time.monotonic() < deadline and progress.count() < len(notes) // 2:
            killed_in_transaction = kit.has_open_transaction(settings.output_topic)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    # The transaction seen open may have committed just before the kill landed; its commit may even still be
    # in progress (the coordinator writes the markers of a prepared commit after the writer died, so the LSO
    # lags for a moment). One still open 2 s after the kill (the stream's transaction timeout is 10 s) is one
    # no commit was asked for: the restart, or the timeout, aborts it.
    if killed_in_transaction:
        time.sleep(2.0)
        killed_in_transaction = kit.has_open_transaction(settings.output_topic)
    assert progress.count() < len(notes), "the consumer finished before it was killed: nothing was tested"

    second = spawn_stream(settings, "--exit-when-idle", "3")
    assert second.wait(180) == 0, "the restarted consumer failed (see its log in the test's tmp_path)"

    isolation = "read_committed" if exactly_once else "read_uncommitted"
    verdicts = kit.read_all(settings.output_topic, isolation=isolation)
    counts = kit.verdict_counts(verdicts)
    assert set(counts) == ids, f"{len(ids - set(counts))} notes have no verdict"
    duplicates = kit.duplicates_by_source_partition(verdicts)
    if exactly_once:
        assert sum(duplicates.values()) == 0, duplicates
        if killed_in_transaction:  # the dead transaction's verdicts are in the log, aborted and hidden
            everything = kit.duplicates_by_source_partition(kit.read_all(settings.output_topic))
            assert sum(everything.values()) > 0
    else:
        assert all(d <= BATCH for d in duplicates.values()), duplicates

    flagged = {r.key.decode() for r in verdicts if ModerationResult.model_validate_json(r.value).flagged}
    review = kit.verdict_counts(kit.read_all(settings.review_topic, isolation=isolation))
    assert set(review) == flagged
    if exactly_once:
        assert set(review.values()) <= {1}


def test_sigterm_finishes_the_batch_commits_and_exits_cleanly(
    sample_notes: list[dict[str, Any]], stream_settings, kit, spawn_stream
) -> None:
    notes = sample_notes[:3000]
    settings = stream_settings(batch_size=BATCH)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)
    progress = kit.watch(settings.output_topic)

    first = spawn_stream(settings)
    progress.wait_for(500, timeout=120, alive=lambda: first.poll() is None)
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0, "SIGTERM must end the stream normally"
    assert progress.count() < len(notes), "the consumer finished before the signal: nothing was tested"

    second = spawn_stream(settings, "--exit-when-idle", "3")
    assert second.wait(180) == 0
    verdicts = kit.read_all(settings.output_topic)
    assert kit.verdict_counts(verdicts) == {n["note_id"]: 1 for n in notes}, "a clean stop leaves no duplicates"
