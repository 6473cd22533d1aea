"""Property tests: no Unicode text crashes `classify`, and scores stay probabilities."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redone_sdk import InvalidInputError, Moderator


@pytest.fixture(scope="module")
def moderator(default_bundle: Path) -> Moderator:
    return Moderator.load(default_bundle)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=400))
def test_classify_never_crashes_on_unicode(moderator: Moderator, text: str) -> None:
    if not text.strip():
        with pytest.raises(InvalidInputError):
            moderator.classify(text)
        return
    result = moderator.classify(text)
    assert set(result.scores) == set(moderator.categories)
    assert all(0.0 <= p <= 1.0 for p in result.scores.values())
    assert sum(result.scores.values()) <= 1.0 + 1e-5
    assert result.label in {"safe", *moderator.categories}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=50).filter(str.strip),
        max_size=12,
    )
)
def test_batch_matches_input_length(moderator: Moderator, texts: list[str]) -> None:
    results = moderator.classify_batch(texts)
    assert [r.note_id for r in results] == [str(i) for i in range(len(texts))]
