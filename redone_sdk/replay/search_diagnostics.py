"""Is the search replay identified? Measures of how much the logged order varied, and the verdict.

The PBM separates examination (rank) from attractiveness (pair) only through pairs seen at several ranks:
a log whose order never varies fits any examination curve equally well, and the replay then reports
whatever the EM drifted to (the issue's +19.3 % [+0.5, +43.5] for a true −35.2 %). So before any estimate
is trusted, this module measures, from the (pair, rank) cells:

- rank spread: the share of impressions not at their pair's most frequent rank (0 when the order never varies);
- the share of impressions whose pair was shown at two ranks or more;
- the rank graph: ranks linked when a pair was shown at both; examination is identified (up to scale)
  only across one connected component;
- per query, the same rank spread, and the share of the page views the new ranking reorders whose query
  varied at least `min_rank_spread` — the page views whose change the data can speak to.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from redone_sdk.replay.clickmodel import Cells

__all__ = ["SearchDiagnostics", "diagnose"]


class SearchDiagnostics(BaseModel):
    """What the log can identify, the thresholds applied, and the warnings (empty when identified)."""

    rank_spread: float = Field(description="Share of impressions not at their pair's most frequent rank.")
    multi_rank_impressions: float = Field(description="Share of impressions whose pair was shown at >= 2 ranks.")
    rank_components: int = Field(description="Connected groups of ranks (linked by a pair shown at both).")
    queries_varied: float = Field(description="Share of page views whose query's rank spread >= min_rank_spread.")
    reordered_varied: float | None = Field(
        description="Share of the page views the new ranking reorders whose query's rank spread >= min_rank_spread."
    )
    query_spread_quartiles: list[float] = Field(description="25/50/75 % of per-query rank spread, by page views.")
    min_rank_spread: float
    min_reordered_varied: float
    identified: bool
    warnings: list[str]
    accepted_unidentified: bool = Field(
        default=False, description="The run went on although unidentified (--accept-unidentified)."
    )


def _components(cells: Cells, n_ranks: int) -> int:
    """Connected components of the ranks that were shown, linked by pairs shown at both ranks (union-find)."""
    parent = list(range(n_ranks))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    order = np.lexsort((cells.rank, cells.pair))
    pair, rank = cells.pair[order], cells.rank[order]
    same = np.flatnonzero(pair[1:] == pair[:-1])
    for i in same:  # consecutive ranks of one pair
        a, b = find(int(rank[i])), find(int(rank[i + 1]))
        if a != b:
            parent[a] = b
    shown = np.unique(cells.rank)
    return len({find(int(r)) for r in shown})


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: list[float]) -> list[float]:
    if weights.sum() <= 0:
        return [0.0 for _ in qs]
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return [float(values[order][min(np.searchsorted(cum, q), len(values) - 1)]) for q in qs]


def diagnose(
    cells: Cells,
    pair_query: np.ndarray,
    views_per_query: np.ndarray,
    reordered_per_query: np.ndarray,
    *,
    n_ranks: int,
    min_rank_spread: float,
    min_reordered_varied: float,
) -> SearchDiagnostics:
    """Measure the logged order's variation from the cells; `reordered_per_query`: page views the new
    ranking reorders, per query."""
    n_queries = len(views_per_query)
    shown = cells.shown
    total = float(shown.sum())
    # The most frequent rank of each pair: sort cells by pair, then by count descending.
    order = np.lexsort((-shown, cells.pair))
    pair_sorted = cells.pair[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair_sorted[1:] != pair_sorted[:-1]
    at_mode = np.zeros(len(order), dtype=bool)
    at_mode[order[first]] = True
    off = np.where(at_mode, 0.0, shown)
    ranks_per_pair = np.bincount(cells.pair, minlength=len(pair_query))
    multi = ranks_per_pair[cells.pair] >= 2

    cell_query = pair_query[cells.pair]
    off_q = np.bincount(cell_query, weights=off, minlength=n_queries)
    shown_q = np.bincount(cell_query, weights=shown, minlength=n_queries)
    spread_q = np.divide(off_q, shown_q, out=np.zeros(n_queries), where=shown_q > 0)
    varied_q = spread_q >= min_rank_spread
    views = views_per_query.astype(np.float64)
    reordered = reordered_per_query.astype(np.float64)

    rank_spread = float(off.sum() / total) if total else 0.0
    components = _components(cells, n_ranks)
    queries_varied = float(views[varied_q].sum() / views.sum()) if views.sum() else 0.0
    reordered_varied = float(reordered[varied_q].sum() / reordered.sum()) if reordered.sum() else None

    warnings = []
    if rank_spread < min_rank_spread:
        warnings.append(
            f"the logged order hardly varies: {rank_spread:.1%} of impressions are off their pair's usual rank "
            f"(threshold {min_rank_spread:.1%}); examination and attractiveness are confounded and the click "
            "model's change can have any sign"
        )
    if components > 1:
        warnings.append(
            f"the ranks fall into {components} groups that no pair links (no note was shown at ranks of two "
            "groups): examination across groups is not identified"
        )
    if reordered_varied is not None and reordered_varied < min_reordered_varied:
        warnings.append(
            f"only {reordered_varied:.1%} of the page views the new ranking reorders come from queries whose "
            f"logged order varied (rank spread >= {min_rank_spread:.1%}; threshold {min_reordered_varied:.0%} "
            "of them): the change rests on the click model's prior, not on the data"
        )
    return SearchDiagnostics(
        rank_spread=rank_spread,
        multi_rank_impressions=float(shown[multi].sum() / total) if total else 0.0,
        rank_components=components,
        queries_varied=queries_varied,
        reordered_varied=reordered_varied,
        query_spread_quartiles=_weighted_quantiles(spread_q, views, [0.25, 0.5, 0.75]),
        min_rank_spread=min_rank_spread,
        min_reordered_varied=min_reordered_varied,
        identified=not warnings,
        warnings=warnings,
    )
