"""SIGTERM while the broker is down: the stream cannot finish its batch, so it stops once `--shutdown-timeout`
has passed, with exit code 4 and nothing of that batch committed; a restart once the broker is back gives
every note its verdict (at-least-once: duplicates within one batch per partition; exactly-once: none)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from redone_sdk.adapters.kafka.cli import EXIT_SHUTDOWN_TIMEOUT

pytestmark = pytest.mark.kafka

BATCH = 64
SHUTDOWN_S = 4.0


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_sigterm_with_the_broker_down_stops_within_the_shutdown_timeout(
    guarantee: str, kafka_broker, sample_notes: list[dict[str, Any]], stream_settings, kit, spawn_stream
) -> None:
    if not kafka_broker.managed:
        if os.environ.get("REDONE_KAFKA_EXTERNAL_BROKER") != "1":
            pytest.fail("the broker was not started by scripts/kafka-broker, so this test cannot stop it")
        pytest.skip("REDONE_KAFKA_EXTERNAL_BROKER=1: cannot stop a broker this project does not run")
    notes = sample_notes
    settings = stream_settings(
        guarantee=guarantee, batch_size=BATCH, shutdown_timeout_s=SHUTDOWN_S, instance_id="shutdown"
    )
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, notes)
    progress = kit.watch(settings.output_topic)

    first = spawn_stream(settings)
    progress.wait_for(300, timeout=120, alive=lambda: first.poll() is None)
    kafka_broker.stop()  # mid-stream: the batch in work can be neither acknowledged nor committed
    try:
        assert first.poll() is None, "the stream must survive the outage"
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = first.wait(60)
        took = time.monotonic() - started
        assert code == EXIT_SHUTDOWN_TIMEOUT, f"exit code {code} after {took:.1f}s"
        assert SHUTDOWN_S <= took < SHUTDOWN_S + 5, f"the stop took {took:.1f}s"
    finally:  # a failure here must not leave the broker down for every later test of the session
        kafka_broker.start()

    second = spawn_stream(settings, "--exit-when-idle", "4")
    assert second.wait(180) == 0, "the restarted stream failed (see its log in the test's tmp_path)"
    isolation = "read_committed" if settings.exactly_once else "read_uncommitted"
    verdicts = kit.read_all(settings.output_topic, isolation=isolation)
    assert set(kit.verdict_counts(verdicts)) == {n["note_id"] for n in notes}
    duplicates = kit.duplicates_by_source_partition(verdicts)
    limit = 0 if settings.exactly_once else BATCH
    assert all(d <= limit for d in duplicates.values()), duplicates
