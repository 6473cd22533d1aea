import pytest

from redone_sdk import InvalidInputError, Note
from redone_sdk.schemas import coerce_note


def test_note_accepts_minimal_and_numeric_id() -> None:
    note = Note.model_validate({"note_id": 42, "content": "hello"})
    assert note.note_id == "42"
    assert note.text == "hello"


def test_note_text_joins_title_and_content() -> None:
    assert Note(note_id="a", title="T", content="C").text == "T\nC"
    assert Note(note_id="a", title="T").text == "T"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"note_id": "a", "title": "", "content": "  "}, "non-empty title or content"),
        ({"note_id": "a", "content": "x", "likes": 3}, "likes: Extra inputs are not permitted"),
        ({"content": "x"}, "note_id: Field required"),
        ({"note_id": "", "content": "x"}, "note_id"),
        ({"note_id": "a", "content": 5}, "content: Input should be a valid string"),
        ({"note_id": "a", "content": "x", "created_at": "yesterday"}, "created_at"),
    ],
)
def test_bad_notes_say_what_is_wrong(payload: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        coerce_note(payload)
    assert fragment in str(info.value)


def test_coerce_plain_string_uses_position_as_id() -> None:
    assert coerce_note("text", index=3).note_id == "3"
    assert coerce_note("text").note_id == "text"


def test_coerce_rejects_other_types() -> None:
    with pytest.raises(InvalidInputError, match="cannot read a note from int"):
        coerce_note(7)  # type: ignore[arg-type]


def test_note_is_frozen() -> None:
    note = Note(note_id="a", content="x")
    with pytest.raises(Exception, match="frozen"):
        note.content = "y"  # type: ignore[misc]
