"""A note whose model output is not finite gets no verdict in the stream (issue #20, point 7): it goes to the
dead-letter topic with reason `model_output`, its batch-mates keep their verdicts; with a policy that says review,
it is moderated as `review` (marked `invalid_output`). The model is the real shipped bundle whose ONNX backend's
logits are made NaN for notes holding a marker character."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redone_sdk import Moderator, Policy
from redone_sdk.adapters.kafka import ModerationStream, StreamMetrics, StreamSettings, default_on_error, header_map
from redone_sdk.adapters.kafka.process import BatchProcessor

MARKER = "鼋"  # a rare character, one token of its own


class _Poisoned:
    """The real backend; rows holding the marker's token get NaN logits."""

    def __init__(self, real: Any, marker: int) -> None:
        self._real, self._marker = real, marker
        self.name, self.info, self.workers = real.name, real.info, real.workers

    def executor(self) -> Any:
        return self._real.executor()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = np.array(self._real(input_ids, attention_mask), copy=True)
        logits[(input_ids == self._marker).any(axis=1)] = np.nan
        return logits


@pytest.fixture(scope="module")
def moderator(default_bundle: Path) -> Iterator[Moderator]:
    """Overrides the kafka conftest's (the tiny trained bundle): the shipped bundle, its engine poisoned."""
    model = Moderator.load(default_bundle, workers=1)
    engine = model._engine
    plain, marked = engine.encoder.encode_batch([{"text": "x"}, {"text": f"x{MARKER}"}])
    (marker,) = set(marked.ids) - set(plain.ids)
    real = engine._backend
    engine._backend = _Poisoned(real, marker)  # type: ignore[assignment]
    yield model
    engine._backend = real


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    topic: str = "notes"
    partition: int = 0
    offset: int = 0


NOTES = [
    {"note_id": "a", "content": "周末去哪儿玩"},
    {"note_id": "bad", "content": f"一条{MARKER}笔记"},
    {"note_id": "c", "content": "this is fine"},
]


def _messages(notes: list[dict[str, str]]) -> list[Message]:
    return [
        Message(n["note_id"].encode(), json.dumps(n, ensure_ascii=False).encode(), offset=i)
        for i, n in enumerate(notes)
    ]


def test_an_invalid_output_is_a_model_output_dead_letter(moderator: Moderator) -> None:
    settings = StreamSettings()
    processor = BatchProcessor(moderator, settings, on_error=default_on_error, metrics=StreamMetrics())
    out = processor.process(_messages(NOTES))
    assert [v.note_id for v in out.verdicts] == ["a", "c"]
    assert [r.reason for r in out.rejections] == ["model_output"]
    dead = [r for r in out.records if r.topic == settings.dlq_topic]
    assert len(dead) == 1 and dead[0].key == b"bad"
    headers = header_map(dead[0].headers)
    assert headers["reason"] == "model_output" and "not finite" in headers["detail"]
    assert json.loads(dead[0].value)["note_id"] == "bad", "the dead letter keeps the original bytes"
    verdict_keys = [r.key for r in out.records if r.topic == settings.output_topic]
    assert verdict_keys == [b"a", b"c"]


def test_a_reviewing_policy_moderates_it_as_review(moderator: Moderator) -> None:
    reviewing = moderator.with_policy(
        Policy.from_dict({**moderator.policy.model_dump(), "on_invalid_output": "review"})
    )
    settings = StreamSettings()
    processor = BatchProcessor(reviewing, settings, on_error=default_on_error, metrics=StreamMetrics())
    out = processor.process(_messages(NOTES))
    assert not out.rejections
    bad = next(v for v in out.verdicts if v.note_id == "bad")
    assert (bad.action, bad.invalid_output) == ("review", True)
    review = [r for r in out.records if r.topic == settings.review_topic and r.key == b"bad"]
    assert len(review) == 1


@pytest.mark.kafka
def test_the_stream_dead_letters_invalid_outputs(
    moderator: Moderator, stream_settings: Any, kit: Any, stream_threads: Any
) -> None:
    """Over a real broker (needs scripts/kafka-broker): the same, end to end."""
    settings = stream_settings(topic_partitions=1)
    kit.create_topics(settings)
    kit.produce_notes(settings.input_topic, NOTES)
    running = stream_threads(ModerationStream(classifier=moderator, settings=settings))
    kit.watch(settings.output_topic).wait_for(2, timeout=60, alive=lambda: running.alive)
    kit.watch(settings.dlq_topic).wait_for(1, timeout=60, alive=lambda: running.alive)
    summary = running.stop()
    assert (summary.verdicts, summary.dead_letters) == (2, 1)
    assert set(kit.verdict_counts(kit.read_all(settings.output_topic))) == {"a", "c"}
    (dead,) = kit.read_all(settings.dlq_topic)
    assert header_map(dead.headers)["reason"] == "model_output"
