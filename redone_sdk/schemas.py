"""Typed inputs and results of the SDK (pydantic v2): what crosses the library's boundary."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from redone_sdk.errors import InvalidInputError

__all__ = [
    "Action",
    "Note",
    "ModelInfo",
    "ModerationResult",
    "MatchResult",
    "NoteLike",
    "coerce_note",
    "format_validation_error",
    "check_utf8",
]

Action = Literal["allow", "review", "block"]

# Field limits of `Note`, also used by readers that check notes in bulk (the replay's notes table).
MAX_FIELD_CHARS = 100_000  # title, content
MAX_ID_CHARS = 256  # note_id, author_id
MAX_LANG_CHARS = 16

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_utf8(value: str, what: str = "text") -> str:
    """`value` unchanged, or `ValueError` when it cannot be encoded as UTF-8 (a lone surrogate such as "\\ud800",
    which JSON escapes and Python strings allow but the tokenizer and every UTF-8 output refuse)."""
    found = _SURROGATE.search(value)
    if found is not None:
        raise ValueError(
            f"{what} is not valid Unicode: a lone surrogate U+{ord(found.group()):04X} at character {found.start()}"
        )
    return value


class Note(BaseModel):
    """A platform note: a title and a body, with optional metadata. Unknown fields are refused.

    `title` and `content` hold at most 100,000 characters each (`MAX_FIELD_CHARS`), ids 256; at least one of
    the two must be non-blank. The model reads only a note's first tokens (the bundle's truncation rule).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    note_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="Stable identifier of the note.")
    title: str = Field(default="", max_length=MAX_FIELD_CHARS, description="Title; may be empty.")
    content: str = Field(default="", max_length=MAX_FIELD_CHARS, description="Body text; may be empty.")
    tags: tuple[str, ...] = Field(default=(), description="Hashtags or topics, without '#'.")
    lang: str | None = Field(default=None, max_length=MAX_LANG_CHARS, description="BCP-47 language tag, if known.")
    author_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    created_at: datetime | None = None

    @field_validator("note_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Numeric ids are common in exported logs; accept them as their decimal text.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("note_id", "title", "content", "tags", "lang", "author_id", mode="after")
    @classmethod
    def _encodable(cls, value: Any, info: ValidationInfo) -> Any:
        # every text field must encode as UTF-8: it is tokenized, logged and written out as JSON (pydantic's own
        # str check refuses most lone surrogates; this covers the rest, such as tags)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str):
                check_utf8(item, info.field_name or "the text")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Note:
        if not self.title.strip() and not self.content.strip():
            raise ValueError("a note needs a non-empty title or content")
        return self

    @property
    def text(self) -> str:
        """Title and content joined the way the model reads them."""
        if self.title and self.content:
            return f"{self.title}\n{self.content}"
        return self.title or self.content


NoteLike = Note | Mapping[str, Any] | str


def format_validation_error(error: ValidationError, what: str) -> str:
    """One readable line per problem: `field: message`."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{loc}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


def coerce_note(value: NoteLike, *, index: int | None = None) -> Note:
    """Turn a `Note`, a mapping or a plain string into a validated `Note`.

    A plain string becomes the content of a note whose id is its position (`"0"`, `"1"`, …) or `"text"`.
    """
    if isinstance(value, Note):
        return value
    try:
        if isinstance(value, str):
            return Note(note_id=str(index) if index is not None else "text", content=value)
        if isinstance(value, Mapping):
            return Note.model_validate(dict(value))
    except ValidationError as exc:
        where = "note" if index is None else f"note at index {index}"
        raise InvalidInputError(format_validation_error(exc, where)) from None
    raise InvalidInputError(f"cannot read a note from {type(value).__name__}: pass a Note, a mapping or a str")


class ModelInfo(BaseModel):
    """Which bundle produced a result: its name, version and (bundles loaded from a manifest) digest."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    digest: str | None = Field(
        default=None,
        description="The bundle digest (SHA-256 over manifest.json and every file, docs/bundles.md); what pins it.",
    )


class ModerationResult(BaseModel):
    """The verdict on one note."""

    model_config = ConfigDict(frozen=True)

    note_id: str
    flagged: bool = Field(description="True when the policy's action is not `allow`.")
    label: str = Field(description="The top harmful category, or `safe` when none passes its threshold.")
    scores: dict[str, float] = Field(
        description="Probability of each harmful category of the bundle's taxonomy; `safe` is 1 minus their sum."
    )
    action: Action
    model: ModelInfo
    truncated: bool = Field(description="True when the note was longer than the model reads and was cut.")
    invalid_output: bool = Field(
        default=False,
        description="True when the model's scores for this note were not finite (NaN, infinity) and the policy's "
        "`on_invalid_output` sent it to review; its scores are then meaningless (null in JSON).",
    )


class MatchResult(BaseModel):
    """How relevant a note is to a search query."""

    model_config = ConfigDict(frozen=True)

    note_id: str
    query: str
    grade: int = Field(
        description="SNS-Bench relevance grade: -1 (unrelated) … 3 (exact); the model's most likely one, or the "
        "lexical fusion's cut on `score` when the bundle has one."
    )
    score: float = Field(
        ge=0.0,
        le=1.0,
        description="Relevance in [0, 1]: the expected grade value, mixed with `lexical_coverage` when the bundle "
        "fuses them.",
    )
    grade_probabilities: dict[str, float] = Field(description="The model's own grade distribution (calibrated).")
    lexical_coverage: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of the query's terms found in the whole note, when the bundle fuses it; else null.",
    )
    model: ModelInfo
    truncated: bool
