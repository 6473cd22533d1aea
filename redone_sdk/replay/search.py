"""Click-page-rate replay for search: rerank logged result pages with `NoteQueryMatcher` and estimate the
share of page views with at least one click under the new ranking, two ways, after checking that the log
can tell.

1. Stream the page views into compact columns on disk (`search_log`); score each distinct (query, note)
   pair once; rerank each page view by score (ties keep the logged order), and a BM25 rerank with
   `baselines`.
2. Diagnostics (`search_diagnostics`): how much the logged order varied (rank spread, rank graph, per
   query). Below the thresholds the result says so in `diagnostics.warnings` (the CLI exits 3 unless
   `--accept-unidentified`).
3. Click model: a position-based model (`clickmodel`) fitted by EM on (pair, rank) cells: examination by
   rank, attractiveness per pair shrunk toward its relevance bin. CPR(ranking) = mean over page views of
   1 - prod_k (1 - theta_k * alpha(note at k)); change = CPR(new) / CPR(logged) - 1.
4. Model-free: rejection-sampling replay (`search_ips`): logged page views whose top ranks equal the new
   ranking's, per query.
5. Intervals: Poisson bootstrap over queries; the click model is refitted in every replicate, so its own
   estimation error is in the interval (`change_model_fixed` gives the narrower interval with the model
   held fixed, for comparison).
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
from redone_sdk.replay.bootstrap import Estimate, estimate, ratio
from redone_sdk.replay.clickmodel import CellCounter, Cells, PBMFit, fit_pbm_cells, session_click_probability
from redone_sdk.replay.hashing import text_hash
from redone_sdk.replay.notes import NotesIndex, load_notes, read_notes
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.search_diagnostics import SearchDiagnostics, diagnose
from redone_sdk.replay.search_ips import IpsAccumulator, IpsResult
from redone_sdk.replay.search_log import PageChunk, PageLog, spill_sessions
from redone_sdk.replay.sessions import SearchSessions, read_judgments
from redone_sdk.schemas import Note

__all__ = ["SearchSettings", "SearchResult", "RankerResult", "replay_search", "ASSUMPTIONS"]

log = logging.getLogger(__name__)

ASSUMPTIONS = (
    "Click model: a note is clicked iff its rank is examined and the note is attractive, independently "
    "(position-based model; no cascade or satisfaction effects between ranks).",
    "Examination depends on the rank only; attractiveness on the (query, note) pair only (not on the other notes "
    "shown); a pair's attractiveness is shrunk toward the mean of its matcher-score bin.",
    "The logged order varied at random (noise, updates), so pairs were seen at several ranks; the diagnostics "
    "measure it and warn below their thresholds.",
    "The new ranking reorders the notes each page view showed; it adds no unseen notes and changes no query.",
    "Replay (IPS) estimate: logged page views whose top ranks equal the new ranking's stand for it; notes below "
    "those ranks matter little; queries without such a page view are left out (coverage).",
    "Intervals resample queries (all their page views together) and refit the click model in each replicate; "
    "they leave out misspecification of the click model.",
)

PairScorer = Callable[[Sequence[tuple[str, Note]]], Sequence[float]]


class SearchSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    relevance_bins: int = Field(default=10, ge=1, description="Quantile bins of matcher score (attractiveness prior).")
    prior_strength: float = Field(default=2.0, gt=0.0, description="Pseudo-observations of a pair's bin prior.")
    bootstrap: int = Field(default=1000, ge=0)
    refit_model: bool = Field(default=True, description="Refit the click model in every bootstrap replicate.")
    refit_replicates: int = Field(
        default=200,
        ge=10,
        description="Replicates (the first ones) that refit the click model; the model-error interval uses these. "
        "Each refit costs an EM on the (pair, rank) cells.",
    )
    refit_passes: Literal["auto", "exact", "linearized"] = Field(
        default="auto",
        description="How a refitted model's CPR is computed: exact (a pass over the log per replicate), linearized "
        "(first order around the full fit, no pass), auto (exact while the log is one chunk).",
    )
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0
    max_iter: int = Field(default=1000, ge=1)
    tol: float = Field(default=1e-6, gt=0.0)
    max_page: int = Field(default=100, ge=1, description="Longest page accepted (notes per page view).")
    ips_prefix: int = Field(default=3, ge=1, description="Top ranks that must match for the replay (IPS) estimate.")
    min_rank_spread: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Least share of impressions off their pair's usual rank."
    )
    min_reordered_varied: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Least share of reordered page views from queries that varied."
    )
    accept_unidentified: bool = Field(
        default=False, description="Recorded in the diagnostics; the CLI then exits 0 though unidentified."
    )
    chunk_sessions: int = Field(default=65_536, ge=1, description="Page views per chunk read or processed.")
    spill_dir: str | None = Field(default=None, description="Folder for the temporary page-view columns.")


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


class RankerResult(BaseModel):
    """One new ranking against the logged one: both estimators."""

    name: str
    sessions_reordered: float = Field(description="Share of page views whose order this ranking changes.")
    model_cpr_new: Estimate = Field(description="The click model's CPR of this ranking.")
    change: Estimate = Field(description="Click model: CPR(new) / CPR(logged) - 1; interval with the model refitted.")
    change_model_fixed: Estimate = Field(description="The same change, interval with the click model held fixed.")
    difference: Estimate = Field(description="Click model: CPR(new) - CPR(logged).")
    ips: IpsResult
    ndcg_new: float | None = None


class SearchResult(BaseModel):
    """Everything the search replay found; `model_dump_json()` is what `search.json` holds."""

    kind: str = "search"
    settings: SearchSettings
    matcher: str
    inputs: dict[str, TableIssues]
    sessions: int
    queries: int
    pairs: int
    pairs_scored_by_model: int
    diagnostics: SearchDiagnostics
    sessions_reordered: float = Field(description="Share of page views whose order the matcher changes.")
    observed_cpr_logged: Estimate = Field(description="Share of logged page views with a click (data).")
    model_cpr_logged: Estimate = Field(description="The click model's CPR of the logged rankings.")
    model_cpr_new: Estimate = Field(description="The click model's CPR of the matcher's rankings.")
    change: Estimate = Field(description="model_cpr_new / model_cpr_logged - 1 (click model refitted per replicate).")
    change_model_fixed: Estimate = Field(description="The same change, interval with the click model held fixed.")
    difference: Estimate = Field(description="model_cpr_new - model_cpr_logged.")
    ips: IpsResult = Field(description="The model-free replay (IPS) estimate for the matcher's ranking.")
    estimators_agree: bool | None = Field(
        description="Do the click model's and the replay's intervals of the change overlap (None: not both)."
    )
    baselines: list[RankerResult] = Field(default_factory=list, description="Other rerankings (e.g. BM25).")
    ndcg_logged: float | None = None
    ndcg_new: float | None = None
    judged_share: float | None = Field(default=None, description="Share of shown (query, note) pairs with a judgment.")
    ranks: list[RankStat]
    bins: list[BinStat]
    em_iterations: int
    em_converged: bool
    bootstrap_refit: str | None = Field(
        default=None, description="How the refitted replicates were computed: exact, linearized, or None (fixed)."
    )
    refits_converged: float | None = Field(
        default=None, description="Share of bootstrap refits of the click model that converged (None: no refits)."
    )
    log_likelihood: float
    assumptions: list[str]
    timings_s: dict[str, float]


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
class _Ranker:
    name: str
    scores: np.ndarray  # relevance of each pair
    column: str  # the log's extra column holding its reranked pairs


@dataclass
class _FirstPass:
    """What one pass over the log gathers: cells, per-query counts, each ranking's reorders and replay counts."""

    cells: Cells
    views: np.ndarray
    clicked: np.ndarray
    reordered: list[np.ndarray]
    ips: list[IpsAccumulator]
    ndcg_logged: float | None
    ndcg_new: list[float | None]
    judged_share: float | None


def _dcg(gains: np.ndarray, starts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    return np.add.reduceat(gains / np.log2(rank + 2.0), starts[:-1])


def _first_pass(log: PageLog, rankers: list[_Ranker], pair_grade: np.ndarray | None, prefix: int) -> _FirstPass:
    """Cells for the click model, per-query views and clicks, and per ranking: rerank each page view (ties keep
    the logged order; written to the log as a column), count reorders, replay counts, NDCG sums."""
    n_q = log.n_queries
    counter = CellCounter()
    views, clicked = np.zeros(n_q), np.zeros(n_q)
    reordered = [np.zeros(n_q) for _ in rankers]
    ips = [IpsAccumulator(n_q, prefix) for _ in rankers]
    ndcg_sum, ndcg_new_sum = 0.0, np.zeros(len(rankers))
    ideal_pages = judged = observations = 0
    gain_of = None if pair_grade is None else np.where(pair_grade > -2, pair_grade + 1, 0).astype(np.float64)
    files = {r.column: log.write_column(r.column) for r in rankers}
    try:
        for chunk in log.chunks():
            counter.add(chunk.rank, chunk.pair, chunk.click)
            views += np.bincount(chunk.query, minlength=n_q)
            page_clicked = np.add.reduceat(chunk.click.astype(np.int64), chunk.starts[:-1]) > 0
            clicked += np.bincount(chunk.query, weights=page_clicked.astype(np.float64), minlength=n_q)
            session_of = chunk.session_of
            has = dcg_ideal = None
            if gain_of is not None:
                gain = gain_of[chunk.pair]
                dcg_ideal = _dcg(gain[np.lexsort((-gain, session_of))], chunk.starts, chunk.rank)
                has = dcg_ideal > 0
                ndcg_sum += float((_dcg(gain, chunk.starts, chunk.rank)[has] / dcg_ideal[has]).sum())
                ideal_pages += int(has.sum())
                judged += int((pair_grade[chunk.pair] > -2).sum())
                observations += len(chunk.pair)
            for i, ranker in enumerate(rankers):
                order = np.lexsort((chunk.rank, -ranker.scores[chunk.pair], session_of))
                new = chunk.pair[order]
                files[ranker.column].write(new.astype(np.int32).tobytes())
                changed = np.add.reduceat((new != chunk.pair).astype(np.int64), chunk.starts[:-1]) > 0
                reordered[i] += np.bincount(chunk.query, weights=changed.astype(np.float64), minlength=n_q)
                ips[i].add(chunk, new, changed)
                if gain_of is not None:
                    ndcg_new_sum[i] += float((_dcg(gain_of[new], chunk.starts, chunk.rank)[has] / dcg_ideal[has]).sum())
    finally:
        for handle in files.values():
            handle.close()
    with_ideal = gain_of is not None and ideal_pages > 0
    return _FirstPass(
        cells=counter.cells(),
        views=views,
        clicked=clicked,
        reordered=reordered,
        ips=ips,
        ndcg_logged=ndcg_sum / ideal_pages if with_ideal else None,
        ndcg_new=[float(v / ideal_pages) if with_ideal else None for v in ndcg_new_sum],
        judged_share=judged / observations if gain_of is not None and observations else None,
    )


def _chunk_source(log: PageLog, columns: list[str]) -> Callable[[], Sequence[PageChunk] | object]:
    """Chunks with the rerank columns, again and again: kept in memory when the log is one chunk, else re-read."""
    if log.kept_sessions <= log.chunk_sessions:
        cached = list(log.chunks(extra=columns))
        return lambda: cached
    return lambda: log.chunks(extra=columns)


def _model_sums(chunks, fit: PBMFit, rankers: list[_Ranker], n_q: int) -> np.ndarray:
    """[queries, 1 + rankings]: the click model's P(click on the page) summed per query, logged then each ranking."""
    out = np.zeros((n_q, 1 + len(rankers)))
    for chunk in chunks:
        p = session_click_probability(fit, chunk.starts, chunk.rank, chunk.pair)
        out[:, 0] += np.bincount(chunk.query, weights=p, minlength=n_q)
        for i, ranker in enumerate(rankers):
            p = session_click_probability(fit, chunk.starts, chunk.rank, chunk.extra[ranker.column])
            out[:, 1 + i] += np.bincount(chunk.query, weights=p, minlength=n_q)
    return out


@dataclass(frozen=True)
class _Gradients:
    """Derivatives of `_model_sums` in the click model's parameters: per pair (a pair has one query) and per
    (query, rank), for the logged ranking then each new one."""

    alpha: np.ndarray  # [pairs, 1 + rankings]
    theta: np.ndarray  # [queries, ranks, 1 + rankings]


def _model_gradients(chunks, fit: PBMFit, rankers: list[_Ranker], n_q: int, n_pairs: int, n_ranks: int) -> _Gradients:
    """One pass: d(sum over a query's page views of P(click))/d alpha_p and /d theta_k. With
    P = 1 - prod_j (1 - theta_j alpha_j), dP/d alpha at rank k = theta_k prod_{j != k} (1 - theta_j alpha_j)."""
    alpha = np.zeros((n_pairs, 1 + len(rankers)))
    theta = np.zeros((n_q * n_ranks, 1 + len(rankers)))
    for chunk in chunks:
        query_obs = np.repeat(chunk.query, chunk.lengths)
        for col, pair in enumerate([chunk.pair, *[chunk.extra[r.column] for r in rankers]]):
            p = np.clip(fit.click_probability(chunk.rank, pair), 0.0, 1.0 - 1e-9)
            none = np.exp(np.add.reduceat(np.log1p(-p), chunk.starts[:-1]))
            others = none[chunk.session_of] / (1.0 - p)
            alpha[:, col] += np.bincount(pair, weights=fit.theta[chunk.rank] * others, minlength=n_pairs)
            theta[:, col] += np.bincount(
                query_obs * n_ranks + chunk.rank, weights=fit.alpha_pair[pair] * others, minlength=n_q * n_ranks
            )
    return _Gradients(alpha, theta.reshape(n_q, n_ranks, -1))


def _linearized_sums(
    model: np.ndarray, grads: _Gradients, fit: PBMFit, fit_b: PBMFit, pair_query: np.ndarray
) -> np.ndarray:
    """`_model_sums` under `fit_b`, to first order around `fit` (the delta method): no pass over the log."""
    d_alpha, d_theta = fit_b.alpha_pair - fit.alpha_pair, fit_b.theta - fit.theta
    out = model + np.einsum("qkc,k->qc", grads.theta, d_theta)
    for col in range(model.shape[1]):
        out[:, col] += np.bincount(pair_query, weights=grads.alpha[:, col] * d_alpha, minlength=model.shape[0])
    return out


def _calibration(
    cells: Cells, fit: PBMFit, edges: np.ndarray, pair_bin: np.ndarray, n_ranks: int
) -> tuple[list[RankStat], list[BinStat]]:
    """Observed vs predicted click-through by rank; attractiveness by relevance bin."""
    n, c = cells.shown, cells.clicks
    predicted = n * fit.click_probability(cells.rank, cells.pair)
    n_rank = np.bincount(cells.rank, weights=n, minlength=n_ranks)
    c_rank = np.bincount(cells.rank, weights=c, minlength=n_ranks)
    p_rank = np.bincount(cells.rank, weights=predicted, minlength=n_ranks)
    ranks = [
        RankStat(
            rank=k + 1,
            impressions=int(n_rank[k]),
            examination=float(fit.theta[k]),
            observed_ctr=float(c_rank[k] / n_rank[k]) if n_rank[k] else 0.0,
            predicted_ctr=float(p_rank[k] / n_rank[k]) if n_rank[k] else 0.0,
        )
        for k in range(n_ranks)
    ]
    n_bin = np.bincount(pair_bin[cells.pair], weights=n, minlength=len(fit.alpha_bin))
    bins = [
        BinStat(
            bin=b,
            score_lo=float(edges[b]),
            score_hi=float(edges[min(b + 1, len(edges) - 1)]),
            impressions=int(n_bin[b]),
            attractiveness=float(fit.alpha_bin[b]),
        )
        for b in range(len(fit.alpha_bin))
    ]
    return ranks, bins


def _overlap(a: Estimate, b: Estimate) -> bool | None:
    if None in (a.lo, a.hi, b.lo, b.hi):
        return None
    return bool(a.lo <= b.hi and b.lo <= a.hi)


def replay_search(
    sessions: str | Path | SearchSessions,
    notes: str | Path,
    matcher: object,
    *,
    judgments: str | Path | Mapping[tuple[str, str], int] | None = None,
    baselines: Mapping[str, object] | None = None,
    settings: SearchSettings | None = None,
    cache: ScoreCache | None = None,
) -> SearchResult:
    """Replay search page views under `matcher` (a `NoteQueryMatcher`, or a function scoring (query, Note)
    pairs), and under each of `baselines` (name -> the same kinds, e.g. `search_bm25.bm25_scorer()`); see the
    module docstring for the estimators and `ASSUMPTIONS`."""
    settings = settings or SearchSettings()
    cache = cache or ScoreCache()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes_index = read_notes(notes)
    page_log = spill_sessions(
        sessions,
        notes=notes_index,
        max_page=settings.max_page,
        chunk_sessions=settings.chunk_sessions,
        spill_dir=settings.spill_dir,
    )
    try:
        if page_log.kept_sessions == 0:
            raise ReplayInputError(f"no valid search session: {page_log.issues.summary()}")
        timings["reading"] = time.perf_counter() - started
        return _replay(page_log, notes_index, matcher, judgments, baselines or {}, settings, cache, timings, started)
    finally:
        page_log.close()


def _replay(
    page_log: PageLog,
    notes_index: NotesIndex,
    matcher: object,
    judgments: str | Path | Mapping[tuple[str, str], int] | None,
    baselines: Mapping[str, object],
    settings: SearchSettings,
    cache: ScoreCache,
    timings: dict[str, float],
    started: float,
) -> SearchResult:
    inputs = {"search sessions": page_log.issues, "notes": notes_index.issues}
    n_q, n_ranks = page_log.n_queries, page_log.max_rank

    t0 = time.perf_counter()
    label, scores, scored_by_model = _pair_scores(matcher, page_log.pairs, notes_index, cache)
    rankers = [_Ranker(label, scores, "rank0")]
    for i, (name, scorer) in enumerate(baselines.items(), start=1):
        rankers.append(_Ranker(name, _pair_scores(scorer, page_log.pairs, notes_index, cache)[1], f"rank{i}"))
    timings["matching"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pair_grade = None
    if judgments is not None:
        if isinstance(judgments, (str, Path)):
            grades, inputs["judgments"] = read_judgments(judgments)
        else:
            grades = dict(judgments)
        pair_grade = np.array([grades.get(p, -2) for p in page_log.pairs], dtype=np.int64)
    first = _first_pass(page_log, rankers, pair_grade, settings.ips_prefix)
    timings["pass"] = time.perf_counter() - t0

    # Relevance bins (quantiles of the matcher's pair scores) as the attractiveness prior, then the click model.
    t0 = time.perf_counter()
    edges = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, settings.relevance_bins + 1)))
    pair_bin = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, max(len(edges) - 2, 0))
    fit_args = {"n_ranks": n_ranks, "prior_strength": settings.prior_strength, "tol": settings.tol}
    fit = fit_pbm_cells(first.cells, pair_bin, max_iter=settings.max_iter, **fit_args)
    timings["click_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    diagnostics = diagnose(
        first.cells,
        page_log.pair_query,
        first.views,
        first.reordered[0],
        n_ranks=n_ranks,
        min_rank_spread=settings.min_rank_spread,
        min_reordered_varied=settings.min_reordered_varied,
    )
    if not diagnostics.identified:
        diagnostics.accepted_unidentified = settings.accept_unidentified
        for warning in diagnostics.warnings:
            log.warning("search replay not identified: %s", warning)
    timings["diagnostics"] = time.perf_counter() - t0

    # Per-query columns: views, clicked, model logged, model per ranking, then 3 replay columns per ranking.
    t0 = time.perf_counter()
    chunks = _chunk_source(page_log, [r.column for r in rankers])
    model = _model_sums(chunks(), fit, rankers, n_q)
    base = np.concatenate([first.views[:, None], first.clicked[:, None], model, *[a.columns() for a in first.ips]], 1)
    reps = settings.bootstrap
    fixed = np.zeros((reps, base.shape[1]))
    refit = np.zeros((reps, model.shape[1]))
    linear = settings.refit_model and (
        settings.refit_passes == "linearized"
        or (settings.refit_passes == "auto" and page_log.kept_sessions > settings.chunk_sessions)
    )
    grads = _model_gradients(chunks(), fit, rankers, n_q, len(page_log.pairs), n_ranks) if reps and linear else None
    cell_query = page_log.pair_query[first.cells.pair]
    rng = np.random.default_rng(settings.seed)
    refits_converged = 0
    refits = min(reps, settings.refit_replicates) if settings.refit_model else 0
    refit = refit[:refits]
    for b in range(reps):
        w = rng.poisson(1.0, n_q).astype(np.float64)
        fixed[b] = w @ base
        if b < refits:
            weighted = first.cells.weighted(w[cell_query])
            fit_b = fit_pbm_cells(weighted, pair_bin, start=fit, max_iter=min(settings.max_iter, 300), **fit_args)
            refits_converged += fit_b.converged
            if grads is not None:
                refit[b] = w @ _linearized_sums(model, grads, fit, fit_b, page_log.pair_query)
            else:
                refit[b] = w @ _model_sums(chunks(), fit_b, rankers, n_q)
    if reps and not settings.refit_model:
        refit = fixed[:, 2 : 2 + model.shape[1]]
    timings["bootstrap"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    total = base.sum(axis=0)
    conf = settings.confidence
    boot = reps > 0

    def est(value: float, samples: np.ndarray | None) -> Estimate:
        return estimate(value, samples if boot else None, conf)

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    views = total[0]
    observed = est(div(total[1], views), ratio(fixed[:, 1], fixed[:, 0]))
    views_r = fixed[: len(refit), 0]  # page views of the replicates behind `refit`
    model_logged = est(div(total[2], views), ratio(refit[:, 0], views_r))
    results: list[RankerResult] = []
    for i, ranker in enumerate(rankers):
        col = 3 + i
        ips_cols = fixed[:, 2 + model.shape[1] + 3 * i : 2 + model.shape[1] + 3 * i + 3]
        v, a, lg = total[2 + model.shape[1] + 3 * i : 2 + model.shape[1] + 3 * i + 3]
        accepted, coverage, reordered_coverage = first.ips[i].summary()
        ips_change = (
            est(div(a, lg) - 1.0, ratio(ips_cols[:, 1], ips_cols[:, 2]) - 1.0)
            if first.ips[i].covered_reordered()
            else Estimate(value=None)
        )
        results.append(
            RankerResult(
                name=ranker.name,
                sessions_reordered=float(first.reordered[i].sum() / views),
                model_cpr_new=est(div(total[col], views), ratio(refit[:, 1 + i], views_r)),
                change=est(div(total[col], total[2]) - 1.0, ratio(refit[:, 1 + i], refit[:, 0]) - 1.0),
                change_model_fixed=est(div(total[col], total[2]) - 1.0, ratio(fixed[:, col], fixed[:, 2]) - 1.0),
                difference=est(div(total[col] - total[2], views), ratio(refit[:, 1 + i] - refit[:, 0], views_r)),
                ips=IpsResult(
                    prefix=settings.ips_prefix,
                    accepted=accepted,
                    coverage=coverage,
                    reordered_coverage=reordered_coverage,
                    cpr_logged=est(div(lg, v), ratio(ips_cols[:, 2], ips_cols[:, 0])),
                    cpr_new=est(div(a, v), ratio(ips_cols[:, 1], ips_cols[:, 0])),
                    change=ips_change,
                ),
                ndcg_new=first.ndcg_new[i],
            )
        )
    main = results[0]
    ranks, bins = _calibration(first.cells, fit, edges, pair_bin, n_ranks)
    timings["estimate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    return SearchResult(
        settings=settings,
        matcher=label,
        inputs=inputs,
        sessions=int(views),
        queries=int((first.views > 0).sum()),
        pairs=len(page_log.pairs),
        pairs_scored_by_model=int(scored_by_model),
        diagnostics=diagnostics,
        sessions_reordered=main.sessions_reordered,
        observed_cpr_logged=observed,
        model_cpr_logged=model_logged,
        model_cpr_new=main.model_cpr_new,
        change=main.change,
        change_model_fixed=main.change_model_fixed,
        difference=main.difference,
        ips=main.ips,
        estimators_agree=_overlap(main.change, main.ips.change),
        baselines=results[1:],
        ndcg_logged=first.ndcg_logged,
        ndcg_new=main.ndcg_new,
        judged_share=first.judged_share,
        ranks=ranks,
        bins=bins,
        em_iterations=fit.iterations,
        em_converged=fit.converged,
        refits_converged=refits_converged / refits if refits else None,
        bootstrap_refit=("linearized" if linear else "exact") if refits else None,
        log_likelihood=fit.log_likelihood,
        assumptions=list(ASSUMPTIONS),
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )
