from pathlib import Path

import pytest

from redone_sdk import InvalidInputError, MatchResult, NoteQueryMatcher


@pytest.fixture(scope="module")
def matcher(default_bundle: Path) -> NoteQueryMatcher:
    return NoteQueryMatcher.load(default_bundle)


def test_score_returns_grade_and_relevance_fused_with_coverage(matcher: NoteQueryMatcher) -> None:
    """The shipped bundle fuses (redone-base 0.4.2 on); the arithmetic on any weight is in test_lexical.py."""
    result = matcher.score("egg waffle recipe", {"note_id": "n", "title": "Egg waffles", "content": "Mix flour"})
    assert isinstance(result, MatchResult)
    assert result.grade in (-1, 0, 1, 2, 3)
    assert 0.0 <= result.score <= 1.0
    fusion = matcher.bundle.manifest.tasks["matching"].lexical
    assert fusion is not None and result.lexical_coverage == pytest.approx(1 / 3)  # "egg"; "waffles" is not "waffle"
    values = {"-1": 0.0, "0": 0.25, "1": 0.5, "2": 0.75, "3": 1.0}
    expected = sum(values[g] * p for g, p in result.grade_probabilities.items())
    fused = (1 - fusion.weight) * expected + fusion.weight * result.lexical_coverage
    assert result.score == pytest.approx(fused, abs=1e-5)
    assert result.grade == sum(cut <= result.score for cut in fusion.grade_cuts) - 1


def test_rank_sorts_and_cuts(matcher: NoteQueryMatcher) -> None:
    notes = [{"note_id": str(i), "content": text} for i, text in enumerate(["cake", "car repair", "waffle iron", "x"])]
    ranked = matcher.rank("waffle", notes)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r.note_id for r in ranked) == ["0", "1", "2", "3"]
    assert [r.note_id for r in matcher.rank("waffle", notes, top_k=2)] == [r.note_id for r in ranked[:2]]


def test_bad_queries(matcher: NoteQueryMatcher) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        matcher.score("  ", "note")
    with pytest.raises(InvalidInputError, match="must be a str"):
        matcher.score(3, "note")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="top_k"):
        matcher.rank("q", ["a"], top_k=0)
