from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redone_sdk.inference.backend import BackendInfo
from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay.arms import ACTION_NAMES, Arm, NoteScores, ScoreCache, decide_actions
from redone_sdk.replay.schemas import ReplayInputError
from redone_sdk.schemas import ModelInfo, ModerationResult, Note

CATS = ("offensive", "hate", "sexism")
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)


@st.composite
def rules(draw) -> CategoryRule:
    review = draw(unit)
    block = draw(st.one_of(st.none(), st.floats(min_value=review, max_value=1.0, allow_nan=False)))
    return CategoryRule(review=review, block=block)


@st.composite
def policies(draw) -> Policy:
    named = draw(st.dictionaries(st.sampled_from(CATS), rules(), max_size=3))
    return Policy(rules=named, default=draw(rules()))


@settings(max_examples=200, deadline=None)
@given(policy=policies(), scores=st.lists(st.tuples(unit, unit, unit), min_size=1, max_size=20))
def test_vectorized_decide_equals_policy_decide(policy: Policy, scores: list) -> None:
    matrix = np.array(scores, dtype=np.float32)
    codes = decide_actions(policy, CATS, matrix)
    expected = [policy.decide({c: float(v) for c, v in zip(CATS, row, strict=True)})[1] for row in matrix]
    assert [ACTION_NAMES[c] for c in codes] == expected


def test_decide_at_threshold_boundaries() -> None:
    policy = Policy(default=CategoryRule(review=0.5, block=0.9))
    matrix = np.array([[0.5, 0, 0], [0.9, 0, 0], [0.4999, 0, 0], [0, 0, 0.95]], dtype=np.float64)
    assert [ACTION_NAMES[c] for c in decide_actions(policy, CATS, matrix)] == ["review", "block", "allow", "block"]
    # Scores kept as float32 (as the model emits them) compare as `Policy.decide` sees them: float32(0.9) < 0.9.
    as_float32 = matrix.astype(np.float32)
    assert (
        ACTION_NAMES[decide_actions(policy, CATS, as_float32)[1]]
        == policy.decide({"offensive": float(as_float32[1, 0])})[1]
    )


class CountingModerator:
    """Stands in for `Moderator`: scores from the text length, counts the notes it is asked to score."""

    categories = CATS

    def __init__(self, name: str = "fake") -> None:
        from types import SimpleNamespace

        manifest = SimpleNamespace(files={"graph": "abc"}, default_graph="int8")
        self.bundle = SimpleNamespace(name=name, version="1", manifest=manifest)
        self.policy = Policy(default=CategoryRule(review=0.5, block=0.9))
        self.seen: list[str] = []
        self.backend_info = BackendInfo(name="onnx", precision="int8", providers=("CPUExecutionProvider",))

    def classify_batch(self, notes: list[Note]) -> list[ModerationResult]:
        self.seen += [n.note_id for n in notes]
        out = []
        for note in notes:
            value = min(1.0, len(note.text) / 100)
            scores = {"offensive": value, "hate": value / 2, "sexism": 0.0}
            out.append(
                ModerationResult(
                    note_id=note.note_id,
                    flagged=False,
                    label="safe",
                    scores=scores,
                    action="allow",
                    model=ModelInfo(name="fake", version="1"),
                    truncated=False,
                )
            )
        return out


def test_score_cache_scores_each_note_once_and_persists(tmp_path: Path) -> None:
    notes = [Note(note_id=f"n{i}", content="x" * (10 * i + 1)) for i in range(5)]
    ids = pa.array([n.note_id for n in notes])
    model = CountingModerator()
    cache = ScoreCache(tmp_path)
    first = cache.moderation_scores(model, ids, reversed(notes), chunk=2)
    assert sorted(model.seen) == [n.note_id for n in notes]
    assert first[3].tolist() == pytest.approx([0.31, 0.155, 0.0])
    again = cache.moderation_scores(model, ids, notes)
    assert len(model.seen) == 5 and (again == first).all()
    # A new cache on the same folder reads the scores back; an edited note is scored again.
    fresh = ScoreCache(tmp_path)
    edited = [*notes[:4], Note(note_id="n4", content="changed")]
    values = fresh.moderation_scores(model, ids, edited)
    assert model.seen[5:] == ["n4"]
    assert values[4, 0] == pytest.approx(0.07) and (values[:4] == first[:4]).all()
    with pytest.raises(ReplayInputError, match="not found in the notes table"):
        fresh.moderation_scores(model, pa.array(["n0", "missing"]), notes[:1])


def test_arm_validation() -> None:
    scores = NoteScores.from_mapping({"n0": {c: 0.1 for c in CATS}}, CATS)
    with pytest.raises(ReplayInputError, match="need a policy"):
        Arm("a", scores=scores)
    with pytest.raises(ReplayInputError, match="needs a moderator or precomputed scores"):
        Arm("a", policy=Policy(default=CategoryRule(review=0.5)))
    with pytest.raises(ReplayInputError, match="non-empty name"):
        Arm("")
    with pytest.raises(ReplayInputError, match="categories the bundle does not have"):
        Arm(
            "a",
            scores=scores,
            policy=Policy(rules={"spam": CategoryRule(review=0.5)}, default=CategoryRule(review=0.5)),
        )
    arm = Arm("a", moderator=CountingModerator())
    assert arm.policy is not None and not arm.is_control and arm.categories == CATS
    assert Arm.control().is_control
    values, missing = scores.lookup(pa.array(["n0", "zz"]))
    assert missing.tolist() == [False, True] and values[0, 0] == pytest.approx(0.1)
