"""Typed inputs of the replay: Arrow schemas of each table, and the accounting of rows that fail validation.

Every table is read at the edge into one canonical Arrow schema (below). A row that breaks a rule is
not used, and it is never dropped silently: it is counted under the first rule it breaks
(`TableIssues.reasons`), a few examples are kept with their row number, and the report shows both.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from redone_sdk.errors import InvalidInputError
from redone_sdk.labeled_data import HARM_LABELS  # ground truth: `safe` is benign, every other label harmful

__all__ = [
    "HARM_LABELS",
    "IMPRESSIONS_SCHEMA",
    "NOTES_SCHEMA",
    "LABELS_SCHEMA",
    "SESSIONS_SCHEMA",
    "JUDGMENTS_SCHEMA",
    "IMPRESSION_COLUMNS",
    "ReplayInputError",
    "RowExample",
    "TableIssues",
]

#: One row per impression (a note shown to a user). `position` is 1-based; `click` is 0/1.
#: Timestamps are read as UTC: a Parquet timestamp (any unit, naive means UTC), an ISO-8601 string,
#: or integer epoch seconds.
IMPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("s", tz="UTC"), nullable=False),
        pa.field("user", pa.string(), nullable=False),
        pa.field("note", pa.string(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("click", pa.bool_(), nullable=False),
    ]
)
IMPRESSION_COLUMNS = tuple(IMPRESSIONS_SCHEMA.names)

#: The notes table: the SDK's `Note` fields (each row is validated as a `Note`).
NOTES_SCHEMA = pa.schema(
    [
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("content", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("lang", pa.string()),
        pa.field("author_id", pa.string()),
        pa.field("created_at", pa.timestamp("s", tz="UTC")),
    ]
)

#: Ground truth per note: `label` is `safe` (benign) or a harmful category of `HARM_LABELS`.
LABELS_SCHEMA = pa.schema(
    [pa.field("note_id", pa.string(), nullable=False), pa.field("label", pa.string(), nullable=False)]
)

#: One row per search page view: the query, the notes shown in logged order (top first) and a 0/1 click
#: for each of them.
SESSIONS_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("notes", pa.list_(pa.string()), nullable=False),
        pa.field("clicks", pa.list_(pa.int8()), nullable=False),
    ]
)

#: Optional graded relevance of (query, note) pairs (SNS-Bench grades -1 … 3); written by `synth`.
JUDGMENTS_SCHEMA = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("grade", pa.int8()),
    ]
)


class ReplayInputError(InvalidInputError):
    """A replay input cannot be used at all (missing file or column, wrong column type, unknown format)."""


class RowExample(BaseModel):
    """One bad row, to show the analyst what went wrong: 0-based row (Parquet) or 1-based line (JSON lines)."""

    model_config = ConfigDict(frozen=True)

    row: int
    reason: str
    value: str = ""


class TableIssues(BaseModel):
    """What reading one table found: rows read, rows used, and the bad rows counted by reason."""

    table: str
    source: str = ""
    rows_read: int = 0
    rows_used: int = 0
    rows_filtered: int = Field(default=0, description="Valid rows left out on purpose (e.g. another surface).")
    reasons: dict[str, int] = Field(default_factory=dict, description="Bad rows per reason; each row counted once.")
    examples: list[RowExample] = Field(default_factory=list)
    ignored_columns: list[str] = Field(default_factory=list)

    max_examples_per_reason: int = Field(default=3, exclude=True)

    @property
    def bad_rows(self) -> int:
        return sum(self.reasons.values())

    def add(self, reason: str, count: int = 1, *, row: int | None = None, value: object = "") -> None:
        """Count `count` bad rows under `reason` (and keep `row` as an example if there is room)."""
        if count <= 0:
            return
        self.reasons[reason] = self.reasons.get(reason, 0) + int(count)
        if row is not None:
            self.example(reason, row, value)

    def example(self, reason: str, row: int, value: object = "") -> None:
        if sum(1 for e in self.examples if e.reason == reason) < self.max_examples_per_reason:
            text = value if isinstance(value, str) else repr(value)
            self.examples.append(RowExample(row=int(row), reason=reason, value=text[:200]))

    def summary(self) -> str:
        """One line: `impressions: 1000 rows read, 990 used, 10 bad (missing user: 7, …)`."""
        parts = [f"{self.table}: {self.rows_read} rows read, {self.rows_used} used"]
        if self.rows_filtered:
            parts.append(f"{self.rows_filtered} filtered out")
        if self.reasons:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            parts.append(f"{self.bad_rows} bad ({detail})")
        else:
            parts.append("0 bad")
        return ", ".join(parts)
