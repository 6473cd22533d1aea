"""The review queue in the service's database: enqueue `review` verdicts, reviewer accounts, console sessions,
claim-and-release, decisions, the audit trail and agreement figures.

Every state change that two reviewers could race on is one conditional UPDATE checked by its row count, which is
atomic on SQLite and PostgreSQL alike: a claim succeeds only on an unclaimed (or expired-claim) pending item, a
decision only by the reviewer whose claim is still valid.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from redone_sdk.errors import RedOneError
from redone_sdk.schemas import ModerationResult, Note

from ..db import Database, ReviewAudit, ReviewDecision, Reviewer, ReviewItem, ReviewSession, utcnow

__all__ = [
    "DECISIONS",
    "SAFE_LABEL",
    "AuditEntry",
    "ClaimLostError",
    "Item",
    "ReviewError",
    "ReviewStore",
    "ReviewerInfo",
    "SessionInfo",
]

DECISIONS = ("approve", "remove", "relabel")
SAFE_LABEL = "safe"
Decision = Literal["approve", "remove", "relabel"]
_USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


class ReviewError(RedOneError):
    """A review operation that cannot be done as asked (bad name, unknown category, ...)."""


class ClaimLostError(ReviewError):
    """The item is not (or no longer) claimed by this reviewer: someone else holds it, or it was decided."""


@dataclass(frozen=True)
class ReviewerInfo:
    id: int
    username: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class SessionInfo:
    """A logged-in reviewer: who, and the CSRF token every form of the session must carry."""

    reviewer_id: int
    username: str
    csrf: str


@dataclass(frozen=True)
class Item:
    """A queued note as the console shows it."""

    id: int
    note_id: str
    title: str
    content: str
    label: str
    action: str
    scores: dict[str, float]
    bundle_name: str
    bundle_version: str
    bundle_digest: str
    policy: str
    source: str
    status: str
    created_at: datetime
    claim_expires: float | None = None
    decision: str | None = None
    reviewer_label: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    username: str
    event: str
    item_id: int | None
    bundle_version: str
    detail: str


@dataclass
class Agreement:
    """Model vs reviewers for one model label: decided items, those where the reviewer kept the label."""

    label: str
    decided: int = 0
    agreed: int = 0
    reviewer_labels: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.agreed / self.decided if self.decided else None


def _item(row: ReviewItem, decision: ReviewDecision | None = None) -> Item:
    return Item(
        id=row.id,
        note_id=row.note_id,
        title=row.title,
        content=row.content,
        label=row.label,
        action=row.action,
        scores={str(k): float(v) for k, v in (row.scores or {}).items()},
        bundle_name=row.bundle_name,
        bundle_version=row.bundle_version,
        bundle_digest=row.bundle_digest,
        policy=row.policy,
        source=row.source,
        status=row.status,
        created_at=row.created_at,
        claim_expires=row.claim_expires,
        decision=decision.decision if decision else None,
        reviewer_label=decision.label if decision else None,
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ReviewStore:
    """The review tables of one `Database`; `categories` are the bundle's (relabel targets)."""

    def __init__(
        self,
        db: Database,
        *,
        categories: Sequence[str] = (),
        claim_s: float = 600.0,
        session_s: float = 8 * 3600.0,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self.categories = tuple(categories)
        self.claim_s = claim_s
        self.session_s = session_s
        self._hasher = hasher or PasswordHasher()  # Argon2id with argon2-cffi's (RFC 9106) defaults
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    # -- the queue --------------------------------------------------------------------------------------

    def enqueue(
        self,
        notes: Sequence[Note],
        results: Sequence[ModerationResult],
        *,
        policy: str,
        source: str,
        actions: Collection[str] = ("review",),
    ) -> int:
        """Queue the notes whose action is in `actions` (the service: `review`; the Kafka review topic: `review`
        and `block`); already-queued ones (same note id, bundle version and digest) are skipped. Returns how many
        rows were new."""
        rows = []
        for note, result in zip(notes, results, strict=True):
            if result.action not in actions:
                continue
            model = result.model
            rows.append(
                {
                    "note_id": note.note_id,
                    "title": note.title,
                    "content": note.content,
                    "label": result.label,
                    "action": result.action,
                    "scores": {k: float(v) for k, v in result.scores.items()},
                    "bundle_name": model.name if model else "",
                    "bundle_version": model.version if model else "",
                    "bundle_digest": (model.digest or "") if model else "",
                    "policy": policy,
                    "source": source,
                    "status": "pending",
                    "created_at": utcnow(),
                }
            )
        if not rows:
            return 0
        with self._db.session() as session:
            insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
            statement = (
                insert(ReviewItem)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["note_id", "bundle_version", "bundle_digest"])
                .returning(ReviewItem.id)
            )
            # the ids of the new rows (a multi-row INSERT's rowcount is -1 on PostgreSQL with psycopg)
            return len(session.execute(statement).all())

    def counts(self) -> dict[str, int]:
        """Items by status (`pending`, `decided`)."""
        with self._db.session() as session:
            rows = session.execute(select(ReviewItem.status, func.count()).group_by(ReviewItem.status))
            return {str(status): int(n) for status, n in rows}

    def pending(self, *, limit: int = 50) -> list[Item]:
        with self._db.session() as session:
            query = select(ReviewItem).where(ReviewItem.status == "pending").order_by(ReviewItem.id).limit(limit)
            return [_item(row) for row in session.scalars(query)]

    def decided(self, *, limit: int = 50) -> list[Item]:
        with self._db.session() as session:
            query = (
                select(ReviewItem, ReviewDecision)
                .join(ReviewDecision, ReviewDecision.item_id == ReviewItem.id)
                .order_by(ReviewDecision.id.desc())
                .limit(limit)
            )
            return [_item(row, decision) for row, decision in session.execute(query)]

    def get(self, item_id: int) -> Item | None:
        with self._db.session() as session:
            row = session.get(ReviewItem, item_id)
            if row is None:
                return None
            decision = session.scalars(select(ReviewDecision).where(ReviewDecision.item_id == item_id)).first()
            return _item(row, decision)

    # -- claim, release, decide ----------------------------------------------------------------------------

    def claim_next(self, reviewer: SessionInfo, after: int | None = None) -> Item | None:
        """The reviewer's current claim if any, else the oldest claimable pending item, claimed now; None when
        the queue holds nothing this reviewer may take. `after`: the item just skipped; items above it come
        first, and it is not offered again."""
        now = time.time()
        with self._db.session() as session:
            mine = session.scalars(
                select(ReviewItem)
                .where(
                    ReviewItem.status == "pending",
                    ReviewItem.claimed_by == reviewer.reviewer_id,
                    ReviewItem.claim_expires > now,
                )
                .order_by(ReviewItem.id)
                .limit(1)
            ).first()
            if mine is not None:
                return _item(mine)
        for _ in range(20):  # each round: the oldest free items; a lost race moves on to the next one
            with self._db.session() as session:
                query = select(ReviewItem.id).where(ReviewItem.status == "pending", _claimable(now))
                candidates = []
                if after is not None:
                    candidates = list(
                        session.scalars(query.where(ReviewItem.id > after).order_by(ReviewItem.id).limit(5))
                    )
                    query = query.where(ReviewItem.id != after)  # wrapping around: not the skipped one again
                if not candidates:
                    candidates = list(session.scalars(query.order_by(ReviewItem.id).limit(5)))
            if not candidates:
                return None
            for item_id in candidates:
                if self._try_claim(item_id, reviewer, now):
                    return self.get(item_id)
        return None

    def claim(self, item_id: int, reviewer: SessionInfo) -> Item:
        """Claim one item (or renew this reviewer's claim); `ClaimLostError` when another reviewer holds it."""
        if not self._try_claim(item_id, reviewer, time.time()):
            raise ClaimLostError(f"item {item_id} is claimed by another reviewer or already decided")
        item = self.get(item_id)
        assert item is not None
        return item

    def _try_claim(self, item_id: int, reviewer: SessionInfo, now: float) -> bool:
        with self._db.session() as session:
            result = session.execute(
                update(ReviewItem)
                .where(
                    ReviewItem.id == item_id,
                    ReviewItem.status == "pending",
                    or_(_claimable(now), ReviewItem.claimed_by == reviewer.reviewer_id),
                )
                .values(claimed_by=reviewer.reviewer_id, claim_expires=now + self.claim_s)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            bundle = session.scalar(select(ReviewItem.bundle_version).where(ReviewItem.id == item_id)) or ""
            self._audit(session, reviewer, "claim", item_id=item_id, bundle_version=bundle)
            return True

    def release(self, item_id: int, reviewer: SessionInfo) -> bool:
        """Give back this reviewer's claim on an item (others may take it at once)."""
        with self._db.session() as session:
            result = session.execute(
                update(ReviewItem)
                .where(
                    ReviewItem.id == item_id,
                    ReviewItem.status == "pending",
                    ReviewItem.claimed_by == reviewer.reviewer_id,
                )
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            self._audit(session, reviewer, "release", item_id=item_id)
            return True

    def decide(self, item_id: int, reviewer: SessionInfo, decision: str, category: str | None = None) -> Item:
        """Record a decision on an item this reviewer holds a valid claim on (`ClaimLostError` otherwise).

        approve: the note is fine (label `safe`); remove: the model's label stands; relabel: `category`.
        """
        if decision not in DECISIONS:
            raise ReviewError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
        if decision == "relabel" and category not in self.categories:
            raise ReviewError(f"relabel needs a category of the bundle: {', '.join(self.categories)}")
        now = time.time()
        with self._db.session() as session:
            result = session.execute(
                update(ReviewItem)
                .where(
                    ReviewItem.id == item_id,
                    ReviewItem.status == "pending",
                    ReviewItem.claimed_by == reviewer.reviewer_id,
                    ReviewItem.claim_expires > now,
                )
                .values(status="decided", decided_at=utcnow(), claim_expires=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise ClaimLostError(f"item {item_id} is not claimed by you (claim expired, taken or decided)")
            row = session.get(ReviewItem, item_id)
            assert row is not None
            if decision == "approve":
                label = SAFE_LABEL
            elif decision == "remove":
                label = row.label
            else:
                label = str(category)
            session.add(
                ReviewDecision(
                    item_id=item_id,
                    reviewer_id=reviewer.reviewer_id,
                    decision=decision,
                    label=label,
                    model_label=row.label,
                    bundle_version=row.bundle_version,
                    bundle_digest=row.bundle_digest,
                )
            )
            detail = f"{decision} (model {row.label}, reviewer {label})"
            self._audit(session, reviewer, "decide", item_id=item_id, bundle_version=row.bundle_version, detail=detail)
        item = self.get(item_id)
        assert item is not None
        return item

    # -- figures and the trail --------------------------------------------------------------------------------

    def agreement(self) -> tuple[list[Agreement], list[tuple[str, int, int]]]:
        """Per model label: decided items, agreements and the reviewers' labels; and per day (UTC):
        (date, decided, agreed)."""
        by_label: dict[str, Agreement] = {}
        by_day: dict[str, list[int]] = {}
        with self._db.session() as session:
            for model_label, label, created in session.execute(
                select(ReviewDecision.model_label, ReviewDecision.label, ReviewDecision.created_at)
            ):
                entry = by_label.setdefault(model_label, Agreement(model_label))
                entry.decided += 1
                entry.agreed += int(model_label == label)
                entry.reviewer_labels[label] = entry.reviewer_labels.get(label, 0) + 1
                day = by_day.setdefault(created.strftime("%Y-%m-%d"), [0, 0])
                day[0] += 1
                day[1] += int(model_label == label)
        return sorted(by_label.values(), key=lambda a: a.label), [(d, n, a) for d, (n, a) in sorted(by_day.items())]

    def audit_trail(self, *, limit: int = 100) -> list[AuditEntry]:
        with self._db.session() as session:
            rows = session.scalars(select(ReviewAudit).order_by(ReviewAudit.id.desc()).limit(limit))
            return [AuditEntry(r.at, r.username, r.event, r.item_id, r.bundle_version, r.detail) for r in rows]

    @staticmethod
    def _audit(
        session: Any,
        who: SessionInfo | ReviewerInfo | None,
        event: str,
        *,
        item_id: int | None = None,
        bundle_version: str = "",
        detail: str = "",
    ) -> None:
        reviewer_id = who.reviewer_id if isinstance(who, SessionInfo) else (who.id if who else None)
        session.add(
            ReviewAudit(
                reviewer_id=reviewer_id,
                username=who.username if who else "",
                event=event,
                item_id=item_id,
                bundle_version=bundle_version,
                detail=detail[:500],
            )
        )

    # -- reviewers ------------------------------------------------------------------------------------------

    def add_reviewer(self, username: str, password: str) -> ReviewerInfo:
        """Create an account; the password is stored only as an Argon2id hash."""
        username = username.strip().lower()
        if not username or len(username) > 64 or not set(username) <= _USERNAME_CHARS:
            raise ReviewError("a reviewer name is 1-64 characters of a-z, 0-9, '.', '_' or '-'")
        if len(password) < 8:
            raise ReviewError("a reviewer password needs at least 8 characters")
        with self._db.session() as session:
            if session.scalars(select(Reviewer).where(Reviewer.username == username)).first() is not None:
                raise ReviewError(f"reviewer {username!r} exists already")
            row = Reviewer(username=username, password_hash=self._hasher.hash(password))
            session.add(row)
            session.flush()
            info = ReviewerInfo(row.id, row.username, row.created_at, row.disabled_at)
            self._audit(session, info, "reviewer_add")
            return info

    def reviewers(self) -> list[ReviewerInfo]:
        with self._db.session() as session:
            rows = session.scalars(select(Reviewer).order_by(Reviewer.id))
            return [ReviewerInfo(r.id, r.username, r.created_at, r.disabled_at) for r in rows]

    def disable_reviewer(self, username: str) -> ReviewerInfo | None:
        """Disable an account: its sessions end and its claims are released; its decisions stay."""
        with self._db.session() as session:
            row = session.scalars(select(Reviewer).where(Reviewer.username == username.strip().lower())).first()
            if row is None:
                return None
            if row.disabled_at is None:
                row.disabled_at = utcnow()
            session.execute(delete(ReviewSession).where(ReviewSession.reviewer_id == row.id))
            session.execute(
                update(ReviewItem)
                .where(ReviewItem.claimed_by == row.id, ReviewItem.status == "pending")
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )
            info = ReviewerInfo(row.id, row.username, row.created_at, row.disabled_at)
            self._audit(session, info, "reviewer_disable")
            return info

    # -- sessions -----------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> tuple[str, SessionInfo] | None:
        """Check a password; on success a new session: its token (for the cookie, never stored) and info."""
        username = username.strip().lower()
        with self._db.session() as session:
            row = session.scalars(select(Reviewer).where(Reviewer.username == username)).first()
            stored = row.password_hash if row is not None and row.disabled_at is None else self._dummy_hash
            try:
                ok = self._hasher.verify(stored, password) and row is not None and row.disabled_at is None
            except (VerificationError, InvalidHashError):
                ok = False
            if not ok or row is None:
                self._audit(session, None, "login_failed", detail=f"user {username[:64]!r}")
                return None
            if self._hasher.check_needs_rehash(row.password_hash):
                row.password_hash = self._hasher.hash(password)
            token = secrets.token_urlsafe(32)
            info = SessionInfo(row.id, row.username, secrets.token_urlsafe(32))
            session.add(
                ReviewSession(
                    digest=_digest(token), reviewer_id=row.id, csrf=info.csrf, expires=time.time() + self.session_s
                )
            )
            session.execute(delete(ReviewSession).where(ReviewSession.expires < time.time()))
            self._audit(session, info, "login")
            return token, info

    def session(self, token: str) -> SessionInfo | None:
        """The live session of a token (an active reviewer, not expired), or None."""
        with self._db.session() as session:
            found = session.execute(
                select(ReviewSession, Reviewer)
                .join(Reviewer, Reviewer.id == ReviewSession.reviewer_id)
                .where(
                    ReviewSession.digest == _digest(token),
                    ReviewSession.expires > time.time(),
                    Reviewer.disabled_at.is_(None),
                )
            ).first()
            if found is None:
                return None
            row, reviewer = found
            return SessionInfo(reviewer.id, reviewer.username, row.csrf)

    def logout(self, token: str, who: SessionInfo) -> None:
        """End a session and release the reviewer's claims."""
        with self._db.session() as session:
            session.execute(delete(ReviewSession).where(ReviewSession.digest == _digest(token)))
            session.execute(
                update(ReviewItem)
                .where(ReviewItem.claimed_by == who.reviewer_id, ReviewItem.status == "pending")
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )
            self._audit(session, who, "logout")

    @staticmethod
    def csrf_ok(expected: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def _claimable(now: float) -> Any:
    return or_(
        ReviewItem.claimed_by.is_(None), and_(ReviewItem.claim_expires.is_not(None), ReviewItem.claim_expires <= now)
    )
