"""The review console of `redone serve` (issue #18, first part): a queue of the notes the model sent to
`review`, reviewer accounts, claim-and-release, decisions with an audit trail, and the `/review` web pages.
See docs/review.md."""

from .store import (
    DECISIONS,
    SAFE_LABEL,
    AuditEntry,
    ClaimLostError,
    Item,
    ReviewerInfo,
    ReviewError,
    ReviewStore,
    SessionInfo,
)
from .web import add_review_routes, visible_controls

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
    "add_review_routes",
    "visible_controls",
]
