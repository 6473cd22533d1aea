"""A position-based click model (PBM) fitted by EM, and the click page rate it predicts for a ranking.

PBM: a note shown at rank k is clicked iff the user examines rank k (probability `theta[k]`, depending
on the rank only) and finds the note attractive (probability `alpha`, depending on the (query, note) pair
only), the two independently. Each pair has its own `alpha`: its posterior mean under a prior centred on
its relevance bin's mean attractiveness, with `prior_strength` pseudo-observations.

The fit works on cells — (pair, rank) with the times shown and clicked there — which are sufficient for
the PBM: the EM costs the distinct cells, not the page views, and a bootstrap replicate refits it by
weighting the cells (`Cells.weighted`).

Only products `theta * alpha` are identified; the fit is scaled so that the most examined rank has
`theta = 1`. Examination is separated from attractiveness by the same pair appearing at different ranks,
so the logged ranker must vary its order (noise, tie-breaks, updates): `search_diagnostics` measures it.
(A mode with one attractiveness per relevance bin was dropped: pairs of a bin that the logged ranker put
higher were also the more attractive ones, so rank and attractiveness were confounded and the estimate
biased, +11.3 % for a true +5.3 %.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["PBMFit", "Cells", "CellCounter", "fit_pbm", "fit_pbm_cells", "session_click_probability"]

EPS = 1e-9


@dataclass(frozen=True)
class Cells:
    """(pair, rank) cells: how often the pair was shown at the rank (`shown`) and clicked there (`clicks`)."""

    pair: np.ndarray
    rank: np.ndarray
    shown: np.ndarray
    clicks: np.ndarray

    @classmethod
    def from_observations(cls, rank: np.ndarray, pair: np.ndarray, click: np.ndarray) -> Cells:
        return cls.accumulate([(np.asarray(rank), np.asarray(pair), np.asarray(click))])

    @classmethod
    def accumulate(cls, parts: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Cells:
        """Cells of observations given in parts (rank, pair, click); memory follows the distinct cells."""
        counter = CellCounter()
        for rank, pair, click in parts:
            counter.add(rank, pair, click)
        return counter.cells()

    def weighted(self, weight_per_cell: np.ndarray) -> Cells:
        return Cells(self.pair, self.rank, self.shown * weight_per_cell, self.clicks * weight_per_cell)


class CellCounter:
    """Adds observations to (pair, rank) cells part by part; holds only the distinct cells."""

    WIDTH = 1 << 16  # ranks per pair in a cell's key (pages are far shorter)

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.shown = np.zeros(0, dtype=np.float64)
        self.clicks = np.zeros(0, dtype=np.float64)

    def add(self, rank: np.ndarray, pair: np.ndarray, click: np.ndarray) -> None:
        part = np.asarray(pair, dtype=np.int64) * self.WIDTH + np.asarray(rank, dtype=np.int64)
        part_keys, inverse = np.unique(part, return_inverse=True)
        part_shown = np.bincount(inverse, minlength=len(part_keys)).astype(np.float64)
        part_clicks = np.bincount(inverse, weights=np.asarray(click, dtype=np.float64), minlength=len(part_keys))
        keys, inverse = np.unique(np.concatenate([self.keys, part_keys]), return_inverse=True)
        self.shown = np.bincount(inverse, weights=np.concatenate([self.shown, part_shown]), minlength=len(keys))
        self.clicks = np.bincount(inverse, weights=np.concatenate([self.clicks, part_clicks]), minlength=len(keys))
        self.keys = keys

    def cells(self) -> Cells:
        return Cells(self.keys // self.WIDTH, self.keys % self.WIDTH, self.shown, self.clicks)


@dataclass(frozen=True)
class PBMFit:
    """Fitted PBM: examination per rank (0-based), mean attractiveness per relevance bin, and per pair."""

    theta: np.ndarray
    alpha_bin: np.ndarray
    alpha_pair: np.ndarray
    iterations: int
    converged: bool
    log_likelihood: float

    def click_probability(self, rank: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return self.theta[rank] * self.alpha_pair[pair]


def fit_pbm_cells(
    cells: Cells,
    pair_bin: np.ndarray,
    *,
    n_ranks: int | None = None,
    prior_strength: float = 2.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    start: PBMFit | None = None,
) -> PBMFit:
    """Fit the PBM by EM on cells; `pair_bin[p]` is the relevance bin of pair `p`. `start` warm-starts the
    EM (a bootstrap replicate starts from the full fit)."""
    pair_bin = np.asarray(pair_bin, dtype=np.int64)
    rank, pair, n, c = cells.rank, cells.pair, cells.shown, cells.clicks
    n_ranks = int(n_ranks if n_ranks is not None else (rank.max() + 1 if len(rank) else 1))
    n_pairs = len(pair_bin)
    n_bins = int(pair_bin.max()) + 1 if n_pairs else 0
    cell_bin = pair_bin[pair]
    no = np.maximum(n - c, 0.0)
    n_rank = np.bincount(rank, weights=n, minlength=n_ranks)
    n_bin = np.bincount(cell_bin, weights=n, minlength=n_bins)
    n_pair = np.bincount(pair, weights=n, minlength=n_pairs)

    if start is not None:
        theta, alpha_bin, alpha_pair = start.theta.copy(), start.alpha_bin.copy(), start.alpha_pair.copy()
    else:  # examination from click-through by rank, attractiveness from click-through by bin
        ctr_rank = np.bincount(rank, weights=c, minlength=n_ranks) / np.maximum(n_rank, EPS)
        theta = np.clip(ctr_rank / max(ctr_rank.max(initial=0.0), EPS), 0.05, 1.0)
        alpha_bin = np.clip(np.bincount(cell_bin, weights=c, minlength=n_bins) / np.maximum(n_bin, EPS), 0.01, 0.99)
        alpha_pair = alpha_bin[pair_bin].copy()

    def log_likelihood(theta: np.ndarray, alpha_pair: np.ndarray) -> float:
        p = np.clip(theta[rank] * alpha_pair[pair], EPS, 1.0 - EPS)
        return float(np.sum(c * np.log(p) + no * np.log1p(-p)))

    def em_step(theta: np.ndarray, alpha_pair: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, a = theta[rank], alpha_pair[pair]
        no_click = np.maximum(1.0 - t * a, EPS)
        exam = c + no * t * (1.0 - a) / no_click
        attr = c + no * a * (1.0 - t) / no_click
        new_theta = np.bincount(rank, weights=exam, minlength=n_ranks) / np.maximum(n_rank, EPS)
        new_alpha_bin = np.bincount(cell_bin, weights=attr, minlength=n_bins) / np.maximum(n_bin, EPS)
        sums = np.bincount(pair, weights=attr, minlength=n_pairs)
        new_alpha_pair = (sums + prior_strength * new_alpha_bin[pair_bin]) / (n_pair + prior_strength)
        # Only theta * alpha is identified: scale so the most examined rank has theta = 1.
        top = max(new_theta.max(initial=0.0), EPS)
        return new_theta / top, np.clip(new_alpha_bin * top, 0.0, 1.0), np.clip(new_alpha_pair * top, 0.0, 1.0)

    # EM accelerated by SQUAREM (Varadhan & Roland 2008, scheme S3): two EM steps give a direction, an
    # extrapolated point along it is projected into [0, 1] and stabilized by one more EM step. Plain EM creeps
    # along the PBM's flat ridges (hundreds of steps); this keeps a bootstrap refit cheap.
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (iterations is read after the loop)
        x0 = np.concatenate([theta, alpha_pair])
        t1, _, a1 = em_step(theta, alpha_pair)
        x1 = np.concatenate([t1, a1])
        if np.abs(x1 - x0).max(initial=0.0) < tol:
            theta, alpha_pair = t1, a1
            converged = True
            break
        t2, _, a2 = em_step(t1, a1)
        x2 = np.concatenate([t2, a2])
        r, v = x1 - x0, x2 - 2.0 * x1 + x0
        v_norm = float(np.sqrt((v * v).sum()))
        step = -float(np.sqrt((r * r).sum())) / v_norm if v_norm > 0 else -1.0
        step = min(step, -1.0)
        x = np.clip(x0 - 2.0 * step * r + step * step * v, EPS, 1.0)
        theta, alpha_bin, alpha_pair = em_step(x[:n_ranks], x[n_ranks:])
    theta, alpha_bin, alpha_pair = em_step(theta, alpha_pair)
    return PBMFit(theta, alpha_bin, alpha_pair, iterations, converged, log_likelihood(theta, alpha_pair))


def fit_pbm(
    rank: np.ndarray,
    pair: np.ndarray,
    click: np.ndarray,
    pair_bin: np.ndarray,
    *,
    n_ranks: int | None = None,
    prior_strength: float = 2.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> PBMFit:
    """Fit a PBM to logged observations (one per note shown): its 0-based rank, its pair, its click."""
    rank = np.asarray(rank, dtype=np.int64)
    cells = Cells.from_observations(rank, np.asarray(pair, dtype=np.int64), np.asarray(click, dtype=bool))
    n_ranks = int(n_ranks if n_ranks is not None else rank.max() + 1)
    return fit_pbm_cells(cells, pair_bin, n_ranks=n_ranks, prior_strength=prior_strength, max_iter=max_iter, tol=tol)


def session_click_probability(fit: PBMFit, starts: np.ndarray, rank: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """P(at least one click) per session under the PBM; a session's observations are `starts[s]:starts[s+1]`."""
    p = np.clip(fit.click_probability(rank, pair), 0.0, 1.0 - EPS)
    log_none = np.add.reduceat(np.log1p(-p), starts[:-1]) if len(p) else np.zeros(0)
    return 1.0 - np.exp(log_none)
