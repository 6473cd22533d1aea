"""A model-free second estimate of the click page rate: rejection-sampling replay (an IPS estimator with
the logging propensity estimated per query), beside the click model's.

A logged page view whose top `prefix` notes are the ones the new ranking puts there, in the same order, is
*accepted*: its click outcome is what the new ranking would have got. Per query, the new ranking's CPR is
the observed CPR of its accepted page views (self-normalized inverse propensity: the acceptance rate of the
query is its estimated propensity); queries are then weighted by their page views. The logged CPR is
taken over the same queries, so the change compares like with like.

Assumptions: the logged order varied at random with respect to the user (noise, not click feedback);
notes below the prefix affect the page's click little, or alike under both rankings; queries with no
accepted page view are left out (their share is the coverage). No click model is involved, so the two
estimates fail in different ways: when they disagree, neither should be trusted alone.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from redone_sdk.replay.bootstrap import Estimate
from redone_sdk.replay.search_log import PageChunk

__all__ = ["IpsResult", "IpsAccumulator"]


class IpsResult(BaseModel):
    prefix: int = Field(description="Top ranks that must match for a logged page view to be accepted.")
    accepted: int = Field(description="Page views whose logged top ranks equal the new ranking's.")
    coverage: float = Field(description="Share of page views whose query has an accepted page view.")
    reordered_coverage: float | None = Field(
        description="Share of the page views the new ranking reorders whose query has an accepted page view."
    )
    cpr_logged: Estimate = Field(description="Observed CPR of the logged page views of the covered queries.")
    cpr_new: Estimate = Field(description="CPR of the new ranking: accepted page views, per query, weighted.")
    change: Estimate = Field(description="cpr_new / cpr_logged - 1 (None when no reordered page view is covered).")


class IpsAccumulator:
    """Per-query counts of the replay estimator, filled chunk by chunk."""

    def __init__(self, n_queries: int, prefix: int) -> None:
        self.prefix = prefix
        self.views = np.zeros(n_queries)
        self.clicked = np.zeros(n_queries)
        self.accepted = np.zeros(n_queries)
        self.accepted_clicked = np.zeros(n_queries)
        self.reordered = np.zeros(n_queries)

    def add(self, chunk: PageChunk, new_pair: np.ndarray, reordered: np.ndarray) -> None:
        n = len(self.views)
        mismatch = ((chunk.pair != new_pair) & (chunk.rank < self.prefix)).astype(np.int64)
        accepted = np.add.reduceat(mismatch, chunk.starts[:-1]) == 0
        clicked = np.add.reduceat(chunk.click.astype(np.int64), chunk.starts[:-1]) > 0
        q = chunk.query
        self.views += np.bincount(q, minlength=n)
        self.clicked += np.bincount(q, weights=clicked.astype(np.float64), minlength=n)
        self.accepted += np.bincount(q, weights=accepted.astype(np.float64), minlength=n)
        self.accepted_clicked += np.bincount(q, weights=(accepted & clicked).astype(np.float64), minlength=n)
        self.reordered += np.bincount(q, weights=reordered.astype(np.float64), minlength=n)

    def columns(self) -> np.ndarray:
        """[queries, 3]: covered page views, their new-ranking clicks (rate x views), their logged clicks."""
        covered = self.accepted > 0
        rate = np.divide(self.accepted_clicked, self.accepted, out=np.zeros_like(self.views), where=covered)
        views = np.where(covered, self.views, 0.0)
        return np.stack([views, rate * views, np.where(covered, self.clicked, 0.0)], axis=1)

    def covered_reordered(self) -> bool:
        return bool((self.reordered[self.accepted > 0] > 0).any())

    def summary(self) -> tuple[int, float, float | None]:
        covered = self.accepted > 0
        views = self.views.sum()
        reordered = self.reordered.sum()
        return (
            int(self.accepted.sum()),
            float(self.views[covered].sum() / views) if views else 0.0,
            float(self.reordered[covered].sum() / reordered) if reordered else None,
        )
