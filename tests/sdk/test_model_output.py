"""Non-finite model outputs fail closed (issue #20, point 7): the real moderator and matcher, on the shipped bundle,
with their ONNX backend's logits made NaN or infinite for the notes that carry a marker word. A NaN compares false
with every threshold, so before this a broken model allowed everything (`action=allow`, `label=safe`)."""

from __future__ import annotations

import json
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import ModelOutputError, Moderator, NoteQueryMatcher, Policy, PolicyError
from redone_sdk.inference.backend import ScoringBackend
from redone_sdk.task_model import BundleTaskModel

MARKER = "鼋"  # a rare character, one token of its own: the poisoned backend recognises it


class PoisonedBackend:
    """The real backend, whose logits for rows that contain `marker_ids` are replaced by `value` (NaN or inf)."""

    def __init__(self, real: ScoringBackend, marker_ids: set[int], value: float) -> None:
        self._real = real
        self._marker = np.array(sorted(marker_ids))
        self._value = value
        self.name, self.info, self.workers = real.name, real.info, real.workers
        self.poisoned_rows = 0

    def executor(self) -> Executor | None:
        return self._real.executor()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = np.array(self._real(input_ids, attention_mask), copy=True)
        rows = np.isin(input_ids, self._marker).any(axis=1)
        logits[rows] = logits[rows] * self._value if np.isnan(self._value) else self._value
        self.poisoned_rows += int(rows.sum())
        return logits


def _marker_ids(model: BundleTaskModel, field: str) -> set[int]:
    """Token ids of MARKER that a plain text does not have (under the task's prompt)."""
    encoder = model._engine.encoder
    other = {k: "x" for k in model._engine.task.fields}
    marked = {**other, field: f"x {MARKER}"}
    plain_ids, marked_ids = (set(e.ids) for e in encoder.encode_batch([other, marked]))
    found = marked_ids - plain_ids
    assert found, "the marker must have tokens of its own"
    return found


@pytest.fixture(scope="module")
def moderator(default_bundle: Path) -> Moderator:
    return Moderator.load(default_bundle, workers=1)


def _poison(monkeypatch: pytest.MonkeyPatch, model: BundleTaskModel, field: str, value: float) -> PoisonedBackend:
    backend = PoisonedBackend(model._engine._backend, _marker_ids(model, field), value)
    monkeypatch.setattr(model._engine, "_backend", backend)
    return backend


def _review_policy(moderator: Moderator) -> Policy:
    return Policy.from_dict({**moderator.policy.model_dump(), "on_invalid_output": "review"})


NOTES = [
    {"note_id": "a", "content": "周末去哪儿玩"},
    {"note_id": "b", "content": "this is fine"},
    {"note_id": "poisoned", "content": f"a note about {MARKER}"},
    {"note_id": "d", "content": "一条笔记"},
]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_output_is_an_error_naming_the_note_and_task(
    moderator: Moderator, monkeypatch: pytest.MonkeyPatch, value: float
) -> None:
    backend = _poison(monkeypatch, moderator, "text", value)
    with pytest.raises(ModelOutputError, match=r"note at index 2 \(note_id 'poisoned'\) of task 'moderation'"):
        moderator.classify_batch(NOTES)
    with pytest.raises(ModelOutputError, match="note_id 'poisoned'"):
        moderator.classify(NOTES[2])
    assert backend.poisoned_rows >= 2  # the error came from the real scoring path, not from a stub
    # notes without the marker still moderate normally through the same backend
    assert [r.note_id for r in moderator.classify_batch([NOTES[0], NOTES[1]])] == ["a", "b"]


def test_classify_iter_fails_closed_too(moderator: Moderator, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(monkeypatch, moderator, "text", float("nan"))
    notes = [f"plain note {i}" for i in range(moderator.chunk_size)] + [f"note {MARKER}"]
    stream = moderator.classify_iter(iter(notes))
    first = [next(stream) for _ in range(moderator.chunk_size)]  # the first chunk is clean
    assert all(r.invalid_output is False for r in first)
    with pytest.raises(ModelOutputError, match=f"index {moderator.chunk_size} "):
        next(stream)


def test_review_policy_sends_invalid_outputs_to_review_never_allow(
    moderator: Moderator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = moderator.classify_batch(NOTES)
    reviewing = moderator.with_policy(_review_policy(moderator))
    _poison(monkeypatch, moderator, "text", float("nan"))  # the clone shares the engine
    results = reviewing.classify_batch(NOTES)
    bad = results[2]
    assert (bad.action, bad.flagged, bad.invalid_output) == ("review", True, True)
    assert bad.label in moderator.categories
    assert all(np.isnan(v) for v in bad.scores.values())
    assert json.loads(bad.model_dump_json())["scores"] == dict.fromkeys(moderator.categories)  # null in JSON
    for before, after in zip(clean, results, strict=True):
        if after.note_id != "poisoned":
            assert after.invalid_output is False
            assert after.scores == pytest.approx(before.scores, abs=1e-2)
    assert clean[2].invalid_output is False  # the field defaults to False on a normal result


def test_policy_decide_fails_closed_on_its_own() -> None:
    """`Policy.decide` is also used directly (the service's per-request policies): it must never allow a NaN."""
    policy = Policy.from_dict({"default": {"review": 0.5, "block": 0.9}})
    assert policy.on_invalid_output == "error"
    assert policy.decide({"hate": 0.1, "offensive": 0.2}) == ("safe", "allow")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ModelOutputError, match="hate"):
            policy.decide({"offensive": 0.2, "hate": bad})
    reviewing = Policy.from_dict({"default": {"review": 0.5}, "on_invalid_output": "review"})
    assert reviewing.decide({"offensive": 0.2, "hate": float("nan")}) == ("hate", "review")


@pytest.mark.parametrize("value", ["allow", "Review", True, None, 1])
def test_on_invalid_output_is_strict(value: object, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="on_invalid_output"):
        Policy.from_dict({"default": {"review": 0.5}, "on_invalid_output": value})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": {"review": 0.5}, "on_invalid_output": value}))
    with pytest.raises(PolicyError, match="on_invalid_output"):
        Policy.load(path)


def test_review_option_round_trips_through_a_policy_file(moderator: Moderator, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    _review_policy(moderator).save(path)
    loaded = Moderator.load(moderator.bundle, policy=path, workers=1)
    assert loaded.policy.on_invalid_output == "review"


def test_matcher_fails_closed(default_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matcher = NoteQueryMatcher.load(default_bundle, workers=1)
    _poison(monkeypatch, matcher, "note", float("nan"))
    pairs: list[tuple[str, object]] = [("waffle", "egg waffles"), ("waffle", f"{MARKER} waffles")]
    with pytest.raises(ModelOutputError, match=r"pair at index 1 \(note_id '1'\)"):
        matcher.score_pairs(pairs)  # type: ignore[arg-type]
    with pytest.raises(ModelOutputError):
        matcher.rank("waffle", ["egg waffles", f"{MARKER} waffles"])
