"""What the batch methods accept (issue #20, point 8) and the streaming `classify_iter` / `score_iter` (point 10).

Before: `classify_batch("abc")` moderated three notes "a", "b", "c", `classify_batch(None)` raised `TypeError` and
a lone surrogate reached the tokenizer (a tokenizers `TypeError`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from redone_sdk import InvalidInputError, Moderator, Note, NoteQueryMatcher

FIXTURE_DEV = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "cold" / "dev.csv"


@pytest.fixture(scope="module")
def moderator(default_bundle: Path) -> Moderator:
    # small passes and one worker: a chunk of classify_iter is 4 x 2 = 8 notes, so a short input spans chunks
    return Moderator.load(default_bundle, batch_size=2, workers=1)


@pytest.fixture(scope="module")
def matcher(default_bundle: Path) -> NoteQueryMatcher:
    return NoteQueryMatcher.load(default_bundle, batch_size=2, workers=1)


def _fixture_texts(count: int) -> list[str]:
    with FIXTURE_DEV.open(encoding="utf-8-sig") as handle:
        return [row["TEXT"] for row, _ in zip(csv.DictReader(handle), range(count), strict=False)]


def _without_id(result: BaseModel) -> dict[str, object]:
    """A result's fields but its note_id (a text's id is its index in the call: chunks restart it at 0)."""
    return result.model_dump(exclude={"note_id"})


ONE_NOTE = ["abc", b"abc", Note(note_id="n", content="abc"), {"note_id": "n", "content": "abc"}]


@pytest.mark.parametrize("value", ONE_NOTE, ids=["str", "bytes", "Note", "dict"])
def test_one_note_passed_as_a_batch_is_refused(moderator: Moderator, value: object) -> None:
    for method in (moderator.classify_batch, moderator.classify_iter):
        with pytest.raises(InvalidInputError, match="pass a list of notes; for one note use classify"):
            method(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 3, 1.5])
def test_a_non_iterable_batch_is_invalid_input_not_type_error(moderator: Moderator, value: object) -> None:
    for method in (moderator.classify_batch, moderator.classify_iter):
        with pytest.raises(InvalidInputError, match="pass a list of notes"):
            method(value)  # type: ignore[arg-type]


def test_matcher_batches_refuse_one_pair_or_note(matcher: NoteQueryMatcher) -> None:
    with pytest.raises(InvalidInputError, match="pass a list of"):
        matcher.score_pairs(("query", "note"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="for one note use score"):
        matcher.rank("query", "a note's text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="pass a list of"):
        matcher.score_pairs(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="pair at index 1"):
        matcher.score_pairs([("q", "n"), "not a pair"])  # type: ignore[list-item]


LONE = "a\ud800b"


def test_lone_surrogates_are_invalid_input_in_every_text_field(moderator: Moderator, matcher: NoteQueryMatcher) -> None:
    with pytest.raises(InvalidInputError, match="query is not valid Unicode"):
        matcher.score(LONE, "a note")
    with pytest.raises(InvalidInputError):
        matcher.score("a query", LONE)
    with pytest.raises(InvalidInputError):
        moderator.classify(LONE)
    base = {"note_id": "n", "content": "fine"}
    for field, value in (
        ("note_id", LONE),
        ("title", LONE),
        ("content", LONE),
        ("tags", ["ok", LONE]),
        ("lang", "e\udc80"),
        ("author_id", LONE),
    ):
        with pytest.raises(InvalidInputError, match=field):
            moderator.classify({**base, field: value})
        with pytest.raises(InvalidInputError, match=f"note at index 1.*{field}"):
            moderator.classify_batch([base, {**base, field: value}])


def test_classify_iter_equals_classify_batch_on_the_fixtures(moderator: Moderator) -> None:
    texts = _fixture_texts(20)
    assert len(texts) == 20 and moderator.chunk_size == 8
    streamed = list(moderator.classify_iter(iter(texts)))
    assert [r.note_id for r in streamed] == [str(i) for i in range(20)]  # indices count across chunks
    # chunk by chunk it is classify_batch exactly; over the whole input, up to the int8 graph's batch effect
    expected = [r for start in range(0, 20, 8) for r in moderator.classify_batch(texts[start : start + 8])]
    assert [_without_id(r) for r in streamed] == [_without_id(r) for r in expected]
    whole = moderator.classify_batch(texts)
    for s, w in zip(streamed, whole, strict=True):
        assert s.scores == pytest.approx(w.scores, abs=5e-2)  # int8 batch effect: issue #20 point 11
    short = texts[:5]  # within one chunk: the very same results
    assert list(moderator.classify_iter(short)) == moderator.classify_batch(short)


def test_classify_iter_is_lazy_and_streams_before_the_input_ends(moderator: Moderator) -> None:
    consumed = 0

    def notes() -> Iterator[str]:
        nonlocal consumed
        for i in range(20):
            consumed += 1
            yield f"note number {i}"
        raise RuntimeError("the input broke after 20 notes")

    stream = moderator.classify_iter(notes())
    assert consumed == 0  # nothing read before the first result is asked for
    first = next(stream)
    assert first.note_id == "0" and consumed <= moderator.chunk_size
    got = [first]
    with pytest.raises(RuntimeError, match="after 20 notes"):
        for result in stream:
            got.append(result)
    assert [r.note_id for r in got] == [str(i) for i in range(16)]  # two whole chunks came out before the error


def test_classify_iter_reports_a_bad_note_by_its_index_in_the_whole_input(moderator: Moderator) -> None:
    notes = [f"note {i}" for i in range(10)] + [{"note_id": "x"}]
    stream = moderator.classify_iter(notes)
    assert len([next(stream) for _ in range(8)]) == 8
    with pytest.raises(InvalidInputError, match="note at index 10"):
        list(stream)


def test_score_iter_streams_pairs(matcher: NoteQueryMatcher) -> None:
    pairs = [("waffle", f"egg waffle recipe {i}") for i in range(10)]
    streamed = list(matcher.score_iter(iter(pairs)))
    assert [r.note_id for r in streamed] == [str(i) for i in range(10)]
    expected = matcher.score_pairs(pairs[:8]) + matcher.score_pairs(pairs[8:])
    assert [_without_id(r) for r in streamed] == [_without_id(r) for r in expected]
