"""A position-based click model (PBM) fitted by EM, and the click page rate it predicts for a ranking.

PBM: a note shown at rank k is clicked iff the user examines rank k (probability `theta[k]`, depending
on the rank only) and finds the note attractive (probability `alpha`, depending on the (query, note) pair
only), the two independently. Here `alpha` is modelled from relevance: one value per relevance bin
(`attractiveness="relevance"`), or one per (query, note) pair shrunk toward its bin's value with
`prior_strength` pseudo-observations (`attractiveness="pair"`).

Only products `theta * alpha` are identified; the fit is scaled so that the most examined rank has
`theta = 1`. Examination is separated from attractiveness by notes of the same relevance appearing at
different ranks, so the logged ranker must vary its order somewhat (noise, tie-breaks, updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["PBMFit", "fit_pbm", "session_click_probability"]

EPS = 1e-9


@dataclass(frozen=True)
class PBMFit:
    """Fitted PBM: examination per rank (0-based), attractiveness per relevance bin and per pair."""

    theta: np.ndarray
    alpha_bin: np.ndarray
    alpha_pair: np.ndarray
    iterations: int
    converged: bool
    log_likelihood: float
    attractiveness: str

    def click_probability(self, rank: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return self.theta[rank] * self.alpha_pair[pair]


def fit_pbm(
    rank: np.ndarray,
    pair: np.ndarray,
    click: np.ndarray,
    pair_bin: np.ndarray,
    *,
    n_ranks: int | None = None,
    attractiveness: Literal["relevance", "pair"] = "pair",
    prior_strength: float = 10.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> PBMFit:
    """Fit a PBM to logged observations (one per note shown): its 0-based rank, its pair, its click.

    `pair_bin[p]` is the relevance bin of pair `p`. With `attractiveness="relevance"` every pair of a bin
    shares the bin's attractiveness; with `"pair"`, a pair's attractiveness is its posterior mean under a
    prior centred on its bin's value (`prior_strength` pseudo-observations), fitted jointly by EM.
    """
    rank = np.asarray(rank, dtype=np.int64)
    pair = np.asarray(pair, dtype=np.int64)
    click = np.asarray(click, dtype=bool)
    pair_bin = np.asarray(pair_bin, dtype=np.int64)
    n_ranks = int(n_ranks if n_ranks is not None else rank.max() + 1)
    n_pairs = len(pair_bin)
    n_bins = int(pair_bin.max()) + 1 if n_pairs else 0
    obs_bin = pair_bin[pair]
    n_rank = np.bincount(rank, minlength=n_ranks).astype(np.float64)
    n_bin = np.bincount(obs_bin, minlength=n_bins).astype(np.float64)
    n_pair = np.bincount(pair, minlength=n_pairs).astype(np.float64)
    c = click.astype(np.float64)

    # Start: examination from click-through by rank, attractiveness from click-through by bin.
    ctr_rank = np.bincount(rank, weights=c, minlength=n_ranks) / np.maximum(n_rank, 1)
    theta = np.clip(ctr_rank / max(ctr_rank.max(), EPS), 0.05, 1.0)
    alpha_bin = np.clip(np.bincount(obs_bin, weights=c, minlength=n_bins) / np.maximum(n_bin, 1), 0.01, 0.99)
    alpha_pair = alpha_bin[pair_bin].copy()

    def log_likelihood(theta: np.ndarray, alpha_bin: np.ndarray, alpha_pair: np.ndarray) -> float:
        a = alpha_pair[pair] if attractiveness == "pair" else alpha_bin[obs_bin]
        p = np.clip(theta[rank] * a, EPS, 1.0 - EPS)
        return float(np.sum(np.where(click, np.log(p), np.log1p(-p))))

    converged = False
    iterations = 0
    previous = log_likelihood(theta, alpha_bin, alpha_pair)
    for iterations in range(1, max_iter + 1):  # noqa: B007 (iterations is read after the loop)
        a = alpha_pair[pair] if attractiveness == "pair" else alpha_bin[obs_bin]
        t = theta[rank]
        p = t * a
        no_click = np.maximum(1.0 - p, EPS)
        exam_post = np.where(click, 1.0, t * (1.0 - a) / no_click)
        attr_post = np.where(click, 1.0, a * (1.0 - t) / no_click)
        new_theta = np.bincount(rank, weights=exam_post, minlength=n_ranks) / np.maximum(n_rank, 1)
        new_alpha_bin = np.bincount(obs_bin, weights=attr_post, minlength=n_bins) / np.maximum(n_bin, 1)
        if attractiveness == "pair":
            sums = np.bincount(pair, weights=attr_post, minlength=n_pairs)
            new_alpha_pair = (sums + prior_strength * new_alpha_bin[pair_bin]) / (n_pair + prior_strength)
        else:
            new_alpha_pair = new_alpha_bin[pair_bin]
        # Only theta * alpha is identified: scale so the most examined rank has theta = 1.
        top = max(new_theta.max(), EPS)
        new_theta, new_alpha_bin, new_alpha_pair = new_theta / top, new_alpha_bin * top, new_alpha_pair * top
        change = max(
            float(np.abs(new_theta - theta).max(initial=0.0)),
            float(np.abs(new_alpha_bin - alpha_bin).max(initial=0.0)),
            float(np.abs(new_alpha_pair - alpha_pair).max(initial=0.0)),
        )
        theta, alpha_bin, alpha_pair = new_theta, np.clip(new_alpha_bin, 0.0, 1.0), np.clip(new_alpha_pair, 0.0, 1.0)
        current = log_likelihood(theta, alpha_bin, alpha_pair)
        # Converged: parameters stop moving, or the likelihood stops improving (EM creeps along flat ridges).
        if change < tol or abs(current - previous) <= tol * 1e-3 * max(abs(current), 1.0):
            converged = True
            break
        previous = current
    loglik = log_likelihood(theta, alpha_bin, alpha_pair)
    if attractiveness == "relevance":
        alpha_pair = alpha_bin[pair_bin]
    return PBMFit(theta, alpha_bin, alpha_pair, iterations, converged, loglik, attractiveness)


def session_click_probability(fit: PBMFit, starts: np.ndarray, rank: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """P(at least one click) per session under the PBM; a session's observations are `starts[s]:starts[s+1]`."""
    p = np.clip(fit.click_probability(rank, pair), 0.0, 1.0 - EPS)
    log_none = np.add.reduceat(np.log1p(-p), starts[:-1]) if len(p) else np.zeros(0)
    return 1.0 - np.exp(log_none)
