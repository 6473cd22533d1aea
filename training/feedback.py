"""`redone train feedback`: the review console's decisions as training data (SFT examples and DPO pairs).

Reads the review tables of the service's database (read-only: SELECTs only, no migration) and writes, under
`--out DIR`: `sft.jsonl` (the reviewers' label as gold), `dpo.jsonl` (chosen = the reviewers' label, rejected =
the model's, where they differ), `holdout.jsonl` (notes kept out of training, for `redone replay decisions`) and
`manifest.json` (counts, bundle versions, the database URL without its password, the time, a SHA-256 of each
file). Each reviewer casts one vote per note (their latest decision); a note's gold label is the majority of the
votes, and a tie drops the note (counted). Reviewer identities never leave the database: rows carry counts only.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redone_sdk.errors import RedOneError

__all__ = [
    "FEEDBACK_FILES",
    "Decision",
    "FeedbackError",
    "NoteVotes",
    "export_feedback",
    "in_holdout",
    "read_decisions",
    "read_feedback",
    "split_notes",
]

FEEDBACK_FILES = ("sft.jsonl", "dpo.jsonl", "holdout.jsonl")
TASK = "moderation"  # the console reviews moderation verdicts


class FeedbackError(RedOneError):
    """The decisions cannot be exported as asked (no database, no decisions, a bad option)."""


@dataclass(frozen=True)
class Decision:
    """One reviewer decision joined with the queued item it settled (what the console stored)."""

    decision_id: int
    note_id: str
    text: str
    reviewer_id: int
    label: str  # the reviewer's label: `safe` for approve, the model's for remove, the category for relabel
    model_label: str
    bundle_version: str


@dataclass
class NoteVotes:
    """A note's decisions reduced to one vote per reviewer (their latest), and the model labels it was given."""

    note_id: str
    text: str = ""
    votes: dict[int, str] = field(default_factory=dict)  # reviewer id -> label (never written out)
    model_labels: dict[str, str] = field(default_factory=dict)  # bundle version -> the model's label
    latest_version: str = ""

    def gold(self) -> str | None:
        """The majority label, or None on a tie between the top labels."""
        ranked = Counter(self.votes.values()).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        return ranked[0][0]


def text_of(title: str, content: str) -> str:
    """A note's text as the model reads it (`redone_sdk.schemas.Note.text`)."""
    if title and content:
        return f"{title}\n{content}"
    return title or content


def read_decisions(url: str) -> tuple[list[Decision], str]:
    """Every decision in the database at `url`, oldest first, and the URL with its password hidden.

    Reads the service's tables (`review_items`, `review_decisions`, as its migrations make them) by reflection,
    read-only: training never imports the service (its layer sits beside, not under, training)."""
    from sqlalchemy import MetaData, create_engine, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchTableError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise FeedbackError(f"not a database URL: {url!r}") from None
    safe_url = parsed.render_as_string(hide_password=True)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:") and not Path(path).expanduser().is_file():  # connecting would create it
        raise FeedbackError(f"no database file at {path}")
    try:
        engine = create_engine(parsed)
    except (ArgumentError, ImportError) as exc:
        raise FeedbackError(f"cannot use database {safe_url}: {exc}") from None
    try:
        tables = MetaData()
        tables.reflect(engine, only=["review_items", "review_decisions"])
        items, decisions = tables.tables["review_items"], tables.tables["review_decisions"]
        query = (
            select(
                decisions.c.id,
                decisions.c.reviewer_id,
                decisions.c.label,
                decisions.c.model_label,
                decisions.c.bundle_version,
                items.c.note_id,
                items.c.title,
                items.c.content,
            )
            .join(items, items.c.id == decisions.c.item_id)
            .order_by(decisions.c.id)
        )
        with engine.connect() as connection:
            rows = [
                Decision(
                    decision_id=row.id,
                    note_id=row.note_id,
                    text=text_of(row.title or "", row.content or ""),
                    reviewer_id=row.reviewer_id,
                    label=row.label,
                    model_label=row.model_label,
                    bundle_version=row.bundle_version,
                )
                for row in connection.execute(query)
            ]
    except (NoSuchTableError, InvalidRequestError, KeyError):  # reflect() names missing tables this way
        raise FeedbackError(
            f"database {safe_url}: no such table review_items / review_decisions; is it the service's database? "
            "(`redone serve db upgrade` creates its tables)"
        ) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise FeedbackError(f"database {safe_url} is unavailable: {reason[0] if reason else exc}") from None
    finally:
        engine.dispose()
    return rows, safe_url


def group_votes(decisions: Iterable[Decision]) -> dict[str, NoteVotes]:
    """Decisions by note id; later decisions (higher id) replace a reviewer's earlier vote on the same note."""
    notes: dict[str, NoteVotes] = {}
    for d in sorted(decisions, key=lambda d: d.decision_id):
        note = notes.setdefault(d.note_id, NoteVotes(d.note_id))
        note.text = d.text
        note.votes[d.reviewer_id] = d.label
        note.model_labels[d.bundle_version] = d.model_label
        note.latest_version = d.bundle_version
    return notes


def in_holdout(note_id: str, share: float) -> bool:
    """Whether a note is held out: a hash of its id against `share`, so a note keeps its side across exports."""
    if share <= 0:
        return False
    point = int(hashlib.sha256(note_id.encode("utf-8")).hexdigest()[:15], 16) / 16**15
    return point < share


def split_notes(notes: dict[str, NoteVotes], holdout: float) -> tuple[dict[str, list[dict[str, Any]]], Counter]:
    """The rows of each file and the counts: majority gold per note, ties dropped, hold-out notes kept apart."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in FEEDBACK_FILES}
    counts: Counter = Counter()
    for note_id in sorted(notes):
        note = notes[note_id]
        counts["notes"] += 1
        gold = note.gold()
        if gold is None:
            counts["ties_dropped"] += 1
            continue
        common = {
            "note_id": note_id,
            "task": TASK,
            "reviewers": len(note.votes),
            "votes": sum(label == gold for label in note.votes.values()),
            "bundle_versions": sorted(note.model_labels),
        }
        counts["agreed_with_latest_model"] += int(note.model_labels[note.latest_version] == gold)
        if in_holdout(note_id, holdout):
            rows["holdout.jsonl"].append(
                {
                    **common,
                    "text": note.text,
                    "label": gold,
                    "model_label": note.model_labels[note.latest_version],
                    "bundle_version": note.latest_version,
                }
            )
            continue
        rows["sft.jsonl"].append({**common, "fields": {"text": note.text}, "label": gold})
        for version, rejected in sorted(note.model_labels.items()):
            if rejected == gold:
                continue
            if any(r["rejected"] == rejected for r in rows["dpo.jsonl"] if r["note_id"] == note_id):
                continue  # two bundle versions made the same mistake: one pair
            rows["dpo.jsonl"].append(
                {**common, "text": note.text, "chosen": gold, "rejected": rejected, "bundle_version": version}
            )
    for name, found in rows.items():
        counts[name.removesuffix(".jsonl")] = len(found)
    return rows, counts


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def export_feedback(url: str, out: str | Path, *, holdout: float = 0.2) -> dict[str, Any]:
    """Write the feedback folder from the decisions at `url`; returns its manifest."""
    if not 0 <= holdout < 1:
        raise FeedbackError(f"--holdout is a share of the notes in [0, 1), got {holdout}")
    decisions, safe_url = read_decisions(url)
    if not decisions:
        raise FeedbackError(f"no review decisions in {safe_url}: decide some notes in the console first")
    notes = group_votes(decisions)
    rows, counts = split_notes(notes, holdout)
    if not rows["sft.jsonl"] and not rows["holdout.jsonl"]:
        raise FeedbackError(f"all {len(notes)} decided notes are ties between reviewers: nothing to export")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {name: _write_jsonl(folder / name, found) for name, found in rows.items()}
    versions = Counter(d.bundle_version for d in decisions)
    manifest = {
        "source": safe_url,
        "created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "task": TASK,
        "holdout": holdout,
        "counts": {
            "decisions": len(decisions),
            "reviewers": len({d.reviewer_id for d in decisions}),
            **dict(sorted(counts.items())),
        },
        "bundle_versions": dict(sorted(versions.items())),
        "sha256": hashes,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def read_feedback(folder: str | Path, name: str) -> list[dict[str, Any]]:
    """The rows of one feedback file, checked against the manifest's hash (a clear error when it changed)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FeedbackError(f"{folder} is not a feedback folder (no manifest.json); run `redone train feedback`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    data = (folder / name).read_bytes() if (folder / name).is_file() else None
    if data is None or hashlib.sha256(data).hexdigest() != manifest.get("sha256", {}).get(name):
        raise FeedbackError(f"{folder / name} is missing or does not match manifest.json's SHA-256")
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
