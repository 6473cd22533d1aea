"""Request and response bodies of the HTTP API (pydantic v2); FastAPI builds the OpenAPI page from them.

Notes and results are the SDK's own `Note`, `ModerationResult` and `MatchResult`, so the service validates a
note exactly as the library does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from redone_sdk.schemas import Action, MatchResult, ModerationResult, Note

__all__ = [
    "ClassifyRequest",
    "ClassifyResponse",
    "ErrorBody",
    "ErrorDetail",
    "ImageInput",
    "MatchPair",
    "MatchRequest",
    "MatchResponse",
    "ModerationRequest",
    "ModerationResponse",
    "OpenAIModeration",
    "RankRequest",
    "RankResponse",
    "ReadyResponse",
    "RedOneVerdict",
    "TextInput",
]

Query = Annotated[str, Field(min_length=1, description="The search query (the matcher checks its length).")]


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextInput(_Request):
    """OpenAI's multi-modal input item of type text."""

    type: Literal["text"]
    text: str


class ImageInput(_Request):
    """OpenAI's image input item: accepted by the schema so that the error can say images are not supported."""

    type: Literal["image_url"]
    image_url: dict[str, str]


class ModerationRequest(_Request):
    """`POST /v1/moderations`: OpenAI's moderation request."""

    @model_validator(mode="before")
    @classmethod
    def _input_shape(cls, data: Any) -> Any:
        # one clear message instead of one per member of the union below
        value = data.get("input") if isinstance(data, dict) else None
        if value is None or isinstance(value, str):
            return data
        if not isinstance(value, list):
            raise ValueError(f"input must be a string or a list of strings, not {_json_type(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, (str, dict)):
                raise ValueError(f"input[{i}] must be a string (or an input item object), not {_json_type(item)}")
        return data

    input: str | list[str] | list[Annotated[TextInput | ImageInput, Field(discriminator="type")]] = Field(
        description="A text, a list of texts, or OpenAI's list of input items (text only)."
    )
    model: str | None = Field(
        default=None,
        max_length=256,
        description="Ignored (any OpenAI model name is accepted); the answer names the bundle that classified.",
    )


class RedOneVerdict(BaseModel):
    """The service's own verdict beside OpenAI's fields: what `POST /v1/classify` returns for the same text."""

    label: str
    action: Action
    scores: dict[str, float] = Field(description="Scores under the bundle's own category names.")
    truncated: bool
    invalid_output: bool = Field(
        default=False, description="The model's scores were not finite; the policy sent the note to review."
    )


class OpenAIModeration(BaseModel):
    """One result in OpenAI's shape, categories named as OpenAI names them (see docs/serve.md for the mapping)."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[Literal["text"]]]
    redone: RedOneVerdict


class ModerationResponse(BaseModel):
    id: str = Field(description="modr-… , unique per request.")
    model: str = Field(description="The bundle: name and version.")
    results: list[OpenAIModeration]


class ClassifyRequest(_Request):
    """`POST /v1/classify`: one note or a list of notes, and optionally a policy by name."""

    input: Note | list[Note]
    policy: str | None = Field(default=None, description="A policy loaded at start (`--policy NAME=FILE`).")


class ClassifyResponse(BaseModel):
    model: str
    policy: str
    results: list[ModerationResult]


class MatchPair(_Request):
    query: Query
    note: Note


class MatchRequest(_Request):
    """`POST /v1/match`: one (query, note) pair or a list of them."""

    input: MatchPair | list[MatchPair]


class MatchResponse(BaseModel):
    model: str
    results: list[MatchResult]


class RankRequest(_Request):
    """`POST /v1/rank`: notes sorted by relevance to the query, best first."""

    query: Query
    notes: list[Note]
    top_k: int | None = Field(default=None, ge=1)


class RankResponse(BaseModel):
    model: str
    query: str
    results: list[MatchResult]


class ReadyResponse(BaseModel):
    ready: bool
    model: str
    draining: bool
    database: bool


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: OpenAI's error shape."""

    error: ErrorDetail
