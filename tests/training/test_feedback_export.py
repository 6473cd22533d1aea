"""`redone train feedback`: decisions recorded through the review store become SFT rows, DPO pairs and a hold-out
part; several reviewers' votes on a note give its majority label, ties are dropped and counted, the hold-out split
is a pure function of the note id, and an empty or missing database is a one-line error."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from redone_sdk.schemas import ModelInfo, ModerationResult, Note
from redone_sdk.serve.db import Database
from redone_sdk.serve.review import ReviewStore
from redone_sdk.training.cli import main as train_main
from redone_sdk.training.feedback import FeedbackError, export_feedback, in_holdout

PASSWORD = "correct horse battery staple"
CATEGORIES = ("offensive", "hate", "sexism")


class Queue:
    """A SQLite service database with reviewers, and notes queued as the service queues `review` verdicts."""

    def __init__(self, path: Path, reviewers: tuple[str, ...] = ("alice", "bob", "carol")) -> None:
        self.url = f"sqlite:///{path}"
        self.db = Database(self.url)
        self.db.connect()
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # the hash's strength is not tested here
        self.store = ReviewStore(self.db, categories=CATEGORIES, hasher=cheap)
        self.sessions = {}
        for name in reviewers:
            self.store.add_reviewer(name, PASSWORD)
            found = self.store.login(name, PASSWORD)
            assert found is not None
            self.sessions[name] = found[1]

    def queue(self, note_id: str, text: str, model_label: str, version: str = "0.0.1") -> int:
        note = Note(note_id=note_id, title="t", content=text)
        result = ModerationResult(
            note_id=note_id,
            flagged=True,
            label=model_label,
            scores={c: 0.3 for c in CATEGORIES},
            action="review",
            model=ModelInfo(name="redone-tiny", version=version, digest="d" * 64),
            truncated=False,
        )
        assert self.store.enqueue([note], [result], policy="triage", source="classify") == 1
        return max(item.id for item in self.store.pending(limit=1000))

    def decide(self, item_id: int, reviewer: str, decision: str, category: str | None = None) -> None:
        self.store.claim(item_id, self.sessions[reviewer])
        self.store.decide(item_id, self.sessions[reviewer], decision, category)

    def note(self, note_id: str, model_label: str, votes: dict[str, tuple[str, str | None]]) -> None:
        """One item per reviewer (a note comes back under another bundle version) and their decision on it."""
        for i, (reviewer, (decision, category)) in enumerate(votes.items()):
            item = self.queue(note_id, f"笔记 {note_id}", model_label, version=f"0.0.{i + 1}")
            self.decide(item, reviewer, decision, category)


def _rows(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines()]


def test_majority_gold_pairs_ties_and_manifest(tmp_path: Path) -> None:
    q = Queue(tmp_path / "db.sqlite3")
    # 2 of 3 reviewers say safe (approve) against the model's `offensive`: gold safe, a pair safe > offensive
    q.note("n1", "offensive", {"alice": ("approve", None), "bob": ("approve", None), "carol": ("remove", None)})
    # one reviewer keeps the model's label: gold = the model's, an SFT row and no pair
    q.note("n2", "hate", {"alice": ("remove", None)})
    # a 1-1 tie: dropped
    q.note("n3", "sexism", {"alice": ("approve", None), "bob": ("relabel", "hate")})
    # a reviewer who changes their mind: their latest decision is their one vote
    q.note("n4", "hate", {"alice": ("relabel", "sexism")})
    q.decide(q.queue("n4", "笔记 n4", "hate", version="0.0.9"), "alice", "relabel", "offensive")

    manifest = export_feedback(q.url, tmp_path / "fb", holdout=0.0)
    out = tmp_path / "fb"
    sft = {r["note_id"]: r for r in _rows(out, "sft.jsonl")}
    dpo = _rows(out, "dpo.jsonl")
    assert set(sft) == {"n1", "n2", "n4"}
    assert sft["n1"]["label"] == "safe" and (sft["n1"]["reviewers"], sft["n1"]["votes"]) == (3, 2)
    assert sft["n1"]["fields"] == {"text": "t\n笔记 n1"}  # title and content as the model reads them
    assert sft["n2"]["label"] == "hate" and sft["n4"]["label"] == "offensive" and sft["n4"]["reviewers"] == 1
    assert sorted((p["note_id"], p["chosen"], p["rejected"]) for p in dpo) == [
        ("n1", "safe", "offensive"),
        ("n4", "offensive", "hate"),
    ]
    assert (out / "holdout.jsonl").read_text() == ""  # --holdout 0: nothing held out
    counts = manifest["counts"]
    assert (counts["decisions"], counts["notes"], counts["ties_dropped"], counts["reviewers"]) == (8, 4, 1, 3)
    assert (counts["sft"], counts["dpo"], counts["holdout"]) == (3, 2, 0)
    assert manifest["source"] == q.url and sum(manifest["bundle_versions"].values()) == 8
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest and list(on_disk) == sorted(on_disk)
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    # reviewer identities never leave the database
    everything = "".join((out / name).read_text(encoding="utf-8") for name in (*manifest["sha256"], "manifest.json"))
    assert not any(name in everything for name in ("alice", "bob", "carol", "reviewer_id"))


def test_holdout_is_a_function_of_the_note_id_and_never_trained_on(tmp_path: Path) -> None:
    q = Queue(tmp_path / "db.sqlite3", reviewers=("alice",))
    ids = [f"note-{i}" for i in range(60)]
    for note_id in ids[:40]:
        q.decide(q.queue(note_id, f"text {note_id}", "offensive"), "alice", "approve")
    export_feedback(q.url, tmp_path / "a", holdout=0.25)
    export_feedback(q.url, tmp_path / "b", holdout=0.25)
    for name in ("sft.jsonl", "dpo.jsonl", "holdout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    held = {r["note_id"] for r in _rows(tmp_path / "a", "holdout.jsonl")}
    trained = {r["note_id"] for r in _rows(tmp_path / "a", "sft.jsonl")} | {
        r["note_id"] for r in _rows(tmp_path / "a", "dpo.jsonl")
    }
    assert held and trained and not held & trained and held | trained == set(ids[:40])
    assert held == {i for i in ids[:40] if in_holdout(i, 0.25)}
    # more decisions later: the notes already split keep their side
    for note_id in ids[40:]:
        q.decide(q.queue(note_id, f"text {note_id}", "offensive"), "alice", "approve")
    export_feedback(q.url, tmp_path / "c", holdout=0.25)
    later = {r["note_id"] for r in _rows(tmp_path / "c", "holdout.jsonl")}
    assert later & set(ids[:40]) == held and later - held
    assert 0.1 < len(later) / len(ids) < 0.45


def test_empty_or_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = Queue(tmp_path / "db.sqlite3", reviewers=("alice",))
    q.queue("n1", "not decided yet", "offensive")
    with pytest.raises(FeedbackError, match="no review decisions"):
        export_feedback(q.url, tmp_path / "fb")
    assert not (tmp_path / "fb").exists()
    with pytest.raises(SystemExit) as exited:
        train_main(["train", "feedback", "--db", f"sqlite:///{tmp_path / 'absent.sqlite3'}", "--out", str(tmp_path)])
    assert "no database file" in str(exited.value.code) and not (tmp_path / "absent.sqlite3").exists()
    sqlite3.connect(tmp_path / "other.sqlite3").execute("CREATE TABLE notes (id INTEGER)").connection.close()
    with pytest.raises(FeedbackError, match=r"no such table.*db upgrade"):
        export_feedback(f"sqlite:///{tmp_path / 'other.sqlite3'}", tmp_path / "fb")
    with pytest.raises(SystemExit) as exited:
        train_main(["train", "feedback", "--db", q.url, "--out", str(tmp_path / "fb"), "--holdout", "1.5"])
    assert "--holdout" in str(exited.value.code)


def test_the_documented_purge_removes_a_reviewer_from_the_next_export(tmp_path: Path) -> None:
    """docs/review.md's SQL that drops a reviewer's data, run as written: their votes leave the next export."""
    from sqlalchemy import select, text

    from redone_sdk.serve.db import ReviewAudit, Reviewer

    docs = (Path(__file__).resolve().parents[2] / "docs" / "review.md").read_text(encoding="utf-8")
    sql = docs.split("## Privacy", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    statements = [s.strip() for s in sql.split(";") if s.strip() and s.strip() not in ("BEGIN", "COMMIT")]
    q = Queue(tmp_path / "db.sqlite3")
    q.note("n1", "offensive", {"alice": ("approve", None), "bob": ("approve", None), "carol": ("remove", None)})
    q.note("n2", "hate", {"bob": ("relabel", "sexism")})
    q.note("n4", "hate", {"alice": ("remove", None)})
    q.queue("n3", "claimed, not decided", "hate")
    q.store.claim_next(q.sessions["bob"])
    before = export_feedback(q.url, tmp_path / "before", holdout=0.0)
    assert before["counts"]["reviewers"] == 3 and before["counts"]["sft"] == 3
    with q.db.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), {"name": "bob"})
    after = export_feedback(q.url, tmp_path / "after", holdout=0.0)
    assert after["counts"]["reviewers"] == 2 and after["counts"]["decisions"] == 3 and after["counts"]["sft"] == 1
    assert after["counts"]["ties_dropped"] == 1  # n1: alice approve vs carol remove, bob's vote gone
    with q.db.session() as session:
        assert session.scalars(select(Reviewer.username)).all() == ["alice", "carol"]
        assert not session.scalars(select(ReviewAudit).where(ReviewAudit.username == "bob")).all()
    assert {item.note_id for item in q.store.pending(limit=10)} == {"n1", "n2", "n3"}  # back in the queue
