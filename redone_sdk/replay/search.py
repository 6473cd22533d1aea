"""Click-page-rate replay for search: rerank logged result pages with `NoteQueryMatcher` and estimate the
share of page views with at least one click under the new ranking, with a click model fitted on the log.

Estimator:

1. Fit a position-based click model (`clickmodel.fit_pbm`) on the logged pages: examination by rank,
   attractiveness by relevance (matcher-score bins; per pair, shrunk toward the bin, by default).
2. Rerank each page's notes by matcher score (ties keep the logged order).
3. CPR(ranking) = mean over page views of 1 - prod_k (1 - theta_k * alpha(note at k)).
   The change is CPR(new) / CPR(logged) - 1, both from the model, so a model bias common to both
   largely cancels; the observed logged CPR is reported beside the modelled one as a calibration check.
4. Intervals: Poisson bootstrap over queries (all page views of a query together), the click model held
   fixed (its own estimation error is not in the interval).

Assumptions: clicks follow the PBM (no cascade or satisfaction effects between ranks); examination
depends on rank only; attractiveness on the (query, note) pair only; the new ranking shows the same notes
(reordered) to the same page views; the logged order varied enough to separate rank from relevance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from redone_sdk.replay.arms import ScoreCache, matcher_fingerprint
from redone_sdk.replay.bootstrap import Estimate, estimate, poisson_weights, ratio
from redone_sdk.replay.clickmodel import PBMFit, fit_pbm, session_click_probability
from redone_sdk.replay.hashing import text_hash
from redone_sdk.replay.notes import NotesIndex, load_notes, read_notes
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.sessions import SearchSessions, read_judgments, read_sessions
from redone_sdk.schemas import Note

__all__ = ["SearchSettings", "SearchResult", "replay_search", "ASSUMPTIONS"]

log = logging.getLogger(__name__)

ASSUMPTIONS = (
    "Clicks follow a position-based model: a note is clicked iff its rank is examined and the note is attractive, "
    "independently.",
    "Examination depends on the rank only; attractiveness on the (query, note) pair only (not on the other notes "
    "shown).",
    "Attractiveness is a function of relevance: one value per matcher-score bin, refined per pair from its logged "
    "clicks (shrunk toward its bin) when attractiveness='pair'.",
    "The new ranking reorders the notes each page view showed; it adds no unseen notes and changes no query.",
    "The logged order varied (noise, updates), so notes of the same relevance appeared at several ranks; "
    "without that, examination and attractiveness are confounded.",
    "Intervals resample queries (all their page views together) with the click model held fixed; they leave out "
    "the model's own estimation error and any misspecification.",
)

PairScorer = Callable[[Sequence[tuple[str, Note]]], Sequence[float]]


class SearchSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    attractiveness: Literal["relevance", "pair"] = "pair"
    relevance_bins: int = Field(default=10, ge=1, description="Quantile bins of matcher score for attractiveness.")
    prior_strength: float = Field(default=2.0, gt=0.0, description="Pseudo-observations of a pair's bin prior.")
    bootstrap: int = Field(default=1000, ge=0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0
    max_iter: int = Field(default=1000, ge=1)
    tol: float = Field(default=1e-6, gt=0.0)
    max_page: int = Field(default=100, ge=1, description="Longest page accepted (notes per page view).")


class RankStat(BaseModel):
    rank: int
    impressions: int
    examination: float
    observed_ctr: float
    predicted_ctr: float


class BinStat(BaseModel):
    bin: int
    score_lo: float
    score_hi: float
    impressions: int
    attractiveness: float


class SearchResult(BaseModel):
    """Everything the search replay found; `model_dump_json()` is what `search.json` holds."""

    kind: Literal["search"] = "search"
    settings: SearchSettings
    matcher: str
    inputs: dict[str, TableIssues]
    sessions: int
    queries: int
    pairs: int
    pairs_scored_by_model: int
    sessions_reordered: float = Field(description="Share of page views whose order the matcher changes.")
    observed_cpr_logged: Estimate = Field(description="Share of logged page views with a click (data).")
    model_cpr_logged: Estimate = Field(description="The click model's CPR of the logged rankings.")
    model_cpr_new: Estimate = Field(description="The click model's CPR of the matcher's rankings.")
    change: Estimate = Field(description="model_cpr_new / model_cpr_logged - 1.")
    difference: Estimate = Field(description="model_cpr_new - model_cpr_logged.")
    ndcg_logged: float | None = None
    ndcg_new: float | None = None
    judged_share: float | None = Field(default=None, description="Share of shown (query, note) pairs with a judgment.")
    ranks: list[RankStat]
    bins: list[BinStat]
    em_iterations: int
    em_converged: bool
    log_likelihood: float
    assumptions: list[str]
    timings_s: dict[str, float]


def _dcg(gains: np.ndarray, starts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    discounted = gains / np.log2(rank + 2.0)
    return np.add.reduceat(discounted, starts[:-1])


@dataclass(frozen=True)
class Pages:
    """The logged page views flattened: one observation per note shown, in page order."""

    starts: np.ndarray  # first observation of each page view, plus the total at the end
    rank: np.ndarray  # 0-based rank of each observation
    click: np.ndarray  # bool per observation
    session_query: np.ndarray  # query index of each page view
    pair: np.ndarray  # (query, note) pair index of each observation
    pairs: list[tuple[str, str]]  # the distinct (query, note) pairs
    n_queries: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def n_ranks(self) -> int:
        return int(self.lengths.max())

    @property
    def session_of(self) -> np.ndarray:
        """Page view of each observation."""
        return np.repeat(np.arange(len(self.lengths)), self.lengths)


def _flatten(data: SearchSessions) -> Pages:
    lengths = np.array([len(n) for n in data.notes], dtype=np.int64)
    query_ids: dict[str, int] = {}
    session_query = np.array([query_ids.setdefault(q, len(query_ids)) for q in data.queries], dtype=np.int64)
    pair_ids: dict[tuple[str, str], int] = {}
    pair = np.array(
        [
            pair_ids.setdefault((q, n), len(pair_ids))
            for q, shown in zip(data.queries, data.notes, strict=True)
            for n in shown
        ],
        dtype=np.int64,
    )
    return Pages(
        starts=np.concatenate([[0], np.cumsum(lengths)]),
        rank=np.concatenate([np.arange(k) for k in lengths]),
        click=np.concatenate([np.asarray(c, dtype=bool) for c in data.clicks]),
        session_query=session_query,
        pair=pair,
        pairs=list(pair_ids),
        n_queries=len(query_ids),
    )


def _pair_scores(
    matcher: object, pairs: list[tuple[str, str]], notes: NotesIndex, cache: ScoreCache
) -> tuple[str, np.ndarray, int]:
    """(matcher label, relevance of each distinct pair, pairs the model scored). A `NoteQueryMatcher` runs once
    per pair not cached (by bundle, query, note and note text); a plain function scores every pair."""
    if hasattr(matcher, "score_pairs") and hasattr(matcher, "bundle"):
        fingerprint = matcher_fingerprint(matcher)
        label = f"{matcher.bundle.name} {matcher.bundle.version}"
        found = load_notes(notes.path, {n for _, n in pairs})
        hashes = {n: text_hash(note.text) for n, note in found.items()}
        keys = pa.array([f"{q}\x1f{n}\x1f{hashes[n]}" for q, n in pairs], type=pa.string())

        def compute(todo: np.ndarray) -> np.ndarray:
            wanted = [pairs[int(i)] for i in todo]
            out = np.zeros(len(wanted), dtype=np.float32)
            for s in range(0, len(wanted), 512):
                chunk = wanted[s : s + 512]
                results = matcher.score_pairs([(q, found[n]) for q, n in chunk])
                out[s : s + len(chunk)] = [r.score for r in results]
                log.info("matched %d / %d pairs", s + len(chunk), len(wanted))
            return out

        before = cache.model_calls.get(fingerprint, 0)
        scores = cache.scores(fingerprint, ("score",), keys, compute)[:, 0].astype(np.float64)
        return label, scores, cache.model_calls[fingerprint] - before
    if callable(matcher):
        label = getattr(matcher, "__name__", "custom scorer")
        found = load_notes(notes.path, {n for _, n in pairs})
        scores = np.asarray(matcher([(q, found[n]) for q, n in pairs]), dtype=np.float64)
        if scores.shape != (len(pairs),):
            raise ReplayInputError(f"the pair scorer returned {scores.shape} scores for {len(pairs)} pairs")
        return label, scores, len(pairs)
    raise ReplayInputError("matcher must be a NoteQueryMatcher or a function scoring (query, Note) pairs")


@dataclass(frozen=True)
class Reranked:
    """Each page sorted by score, ties in logged order: `order` maps new positions to logged observations."""

    order: np.ndarray
    pair: np.ndarray  # pair at each new position
    reordered: np.ndarray  # per page view: did the order change


def _rerank(pages: Pages, scores: np.ndarray) -> Reranked:
    order = np.lexsort((pages.rank, -scores[pages.pair], pages.session_of))
    new_pair = pages.pair[order]
    reordered = np.add.reduceat((new_pair != pages.pair).astype(np.int64), pages.starts[:-1]) > 0
    return Reranked(order, new_pair, reordered)


def _cpr_estimates(pages: Pages, fit: PBMFit, new: Reranked, settings: SearchSettings) -> dict[str, Estimate]:
    """Click page rates of both rankings (modelled) and of the log (observed), with the query bootstrap:
    per-query sums, Poisson weights per query."""
    p_logged = session_click_probability(fit, pages.starts, pages.rank, pages.pair)
    p_new = session_click_probability(fit, pages.starts, pages.rank, new.pair)
    clicked = np.add.reduceat(pages.click.astype(np.int64), pages.starts[:-1]) > 0
    n_q, session_query = pages.n_queries, pages.session_query
    per_query = np.stack(
        [
            np.bincount(session_query, weights=p_logged, minlength=n_q),
            np.bincount(session_query, weights=p_new, minlength=n_q),
            np.bincount(session_query, weights=clicked.astype(np.float64), minlength=n_q),
            np.bincount(session_query, minlength=n_q).astype(np.float64),
        ],
        axis=1,
    )
    total = per_query.sum(axis=0)
    boot = poisson_weights(n_q, settings.bootstrap, settings.seed) @ per_query if settings.bootstrap else None
    conf = settings.confidence

    def est(num: int, den: int = 3, *, minus: int | None = None) -> Estimate:
        value = total[num] / total[den] - (total[minus] / total[den] if minus is not None else 0.0)
        samples = None
        if boot is not None:
            samples = ratio(boot[:, num], boot[:, den]) - (
                ratio(boot[:, minus], boot[:, den]) if minus is not None else 0.0
            )
        return estimate(float(value), samples, conf)

    change_samples = ratio(boot[:, 1], boot[:, 0]) - 1.0 if boot is not None else None
    return {
        "observed_cpr_logged": est(2),
        "model_cpr_logged": est(0),
        "model_cpr_new": est(1),
        "change": estimate(float(total[1] / total[0] - 1.0) if total[0] else float("nan"), change_samples, conf),
        "difference": est(1, minus=0),
    }


def _calibration(
    pages: Pages, fit: PBMFit, edges: np.ndarray, pair_bin: np.ndarray
) -> tuple[list[RankStat], list[BinStat]]:
    """Observed vs predicted click-through by rank; attractiveness by relevance bin."""
    rank, click, n_ranks = pages.rank, pages.click, pages.n_ranks
    predicted = fit.click_probability(rank, pages.pair)
    n_rank = np.bincount(rank, minlength=n_ranks)
    ranks = [
        RankStat(
            rank=k + 1,
            impressions=int(n_rank[k]),
            examination=float(fit.theta[k]),
            observed_ctr=float(click[rank == k].mean()) if n_rank[k] else 0.0,
            predicted_ctr=float(predicted[rank == k].mean()) if n_rank[k] else 0.0,
        )
        for k in range(n_ranks)
    ]
    obs_bin = pair_bin[pages.pair]
    bins = [
        BinStat(
            bin=b,
            score_lo=float(edges[b]),
            score_hi=float(edges[min(b + 1, len(edges) - 1)]),
            impressions=int((obs_bin == b).sum()),
            attractiveness=float(fit.alpha_bin[b]),
        )
        for b in range(len(fit.alpha_bin))
    ]
    return ranks, bins


def _ndcg(
    pages: Pages, new: Reranked, grades: Mapping[tuple[str, str], int]
) -> tuple[float | None, float | None, float]:
    """(NDCG of the logged ranking, of the new one, share of shown pairs judged); gain = grade + 1."""
    pair, starts, rank = pages.pair, pages.starts, pages.rank
    pair_grade = np.array([grades.get(p, -2) for p in pages.pairs], dtype=np.int64)
    judged = pair_grade[pair] > -2
    gain = np.where(judged, pair_grade[pair] + 1, 0).astype(np.float64)  # grades -1..3 -> gains 0..4
    gain_new = np.where(judged[new.order], gain[new.order], 0.0)
    ideal_gain = gain[np.lexsort((-gain, pages.session_of))]
    dcg_ideal = _dcg(ideal_gain, starts, rank)
    has = dcg_ideal > 0
    if not has.any():
        return None, None, float(judged.mean())
    ndcg_logged = float((_dcg(gain, starts, rank)[has] / dcg_ideal[has]).mean())
    ndcg_new = float((_dcg(gain_new, starts, rank)[has] / dcg_ideal[has]).mean())
    return ndcg_logged, ndcg_new, float(judged.mean())


def replay_search(
    sessions: str | Path | SearchSessions,
    notes: str | Path,
    matcher: object,
    *,
    judgments: str | Path | Mapping[tuple[str, str], int] | None = None,
    settings: SearchSettings | None = None,
    cache: ScoreCache | None = None,
) -> SearchResult:
    """Replay search page views under `matcher` (a `NoteQueryMatcher`, or a function scoring (query, Note)
    pairs); see the module docstring for the estimator and its assumptions."""
    settings = settings or SearchSettings()
    cache = cache or ScoreCache()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes_index = read_notes(notes)
    data = (
        sessions
        if isinstance(sessions, SearchSessions)
        else read_sessions(sessions, notes=notes_index, max_page=settings.max_page)
    )
    if len(data) == 0:
        raise ReplayInputError(f"no valid search session: {data.issues.summary()}")
    inputs = {"search sessions": data.issues, "notes": notes_index.issues}
    pages = _flatten(data)

    t0 = time.perf_counter()
    label, scores, scored_by_model = _pair_scores(matcher, pages.pairs, notes_index, cache)
    timings["matching"] = time.perf_counter() - t0

    # Relevance bins (quantiles of the pair scores), then the click model.
    t0 = time.perf_counter()
    edges = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, settings.relevance_bins + 1)))
    pair_bin = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, max(len(edges) - 2, 0))
    fit = fit_pbm(
        pages.rank,
        pages.pair,
        pages.click,
        pair_bin,
        n_ranks=pages.n_ranks,
        attractiveness=settings.attractiveness,
        prior_strength=settings.prior_strength,
        max_iter=settings.max_iter,
        tol=settings.tol,
    )
    timings["click_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    new = _rerank(pages, scores)
    cpr = _cpr_estimates(pages, fit, new, settings)
    ranks, bins = _calibration(pages, fit, edges, pair_bin)
    ndcg_logged = ndcg_new = judged_share = None
    if judgments is not None:
        if isinstance(judgments, (str, Path)):
            grades, inputs["judgments"] = read_judgments(judgments)
        else:
            grades = dict(judgments)
        ndcg_logged, ndcg_new, judged_share = _ndcg(pages, new, grades)
    timings["estimate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    return SearchResult(
        settings=settings,
        matcher=label,
        inputs=inputs,
        sessions=len(data),
        queries=pages.n_queries,
        pairs=len(pages.pairs),
        pairs_scored_by_model=int(scored_by_model),
        sessions_reordered=float(new.reordered.mean()),
        **cpr,
        ndcg_logged=ndcg_logged,
        ndcg_new=ndcg_new,
        judged_share=judged_share,
        ranks=ranks,
        bins=bins,
        em_iterations=fit.iterations,
        em_converged=fit.converged,
        log_likelihood=fit.log_likelihood,
        assumptions=list(ASSUMPTIONS),
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )
