import numpy as np
import pytest

from redone_sdk.replay.clickmodel import Cells, PBMFit, fit_pbm, fit_pbm_cells, session_click_probability


def simulate(seed: int, sessions: int = 6000, queries: int = 60, page: int = 6):
    """Sessions from a known PBM; the logged order is relevance plus noise, so ranks vary per pair."""
    rng = np.random.default_rng(seed)
    theta = 1.0 / np.arange(1, page + 1) ** 0.7
    grades = rng.integers(0, 4, size=(queries, page))
    alpha = np.array([0.05, 0.2, 0.45, 0.7])[grades]
    rank, pair, click = [], [], []
    for q in rng.integers(0, queries, size=sessions):
        order = np.argsort(-(grades[q] + rng.normal(0, 1.5, page)))
        rank.append(np.arange(page))
        pair.append(q * page + order)
        click.append(rng.random(page) < theta * alpha[q, order])
    return np.concatenate(rank), np.concatenate(pair), np.concatenate(click), grades.ravel(), theta, alpha.ravel()


def test_em_recovers_examination() -> None:
    rank, pair, click, grade, theta, _ = simulate(0)
    fit = fit_pbm(rank, pair, click, grade)
    assert fit.converged
    assert fit.theta[0] == pytest.approx(1.0)
    assert np.abs(fit.theta - theta).max() < 0.06


def test_em_recovers_attractiveness() -> None:
    rank, pair, click, grade, _, alpha = simulate(1)
    fit = fit_pbm(rank, pair, click, grade)
    # The bin means (the pairs' prior) and the pairs themselves (about 100 views each: sampling error ~0.05).
    assert np.abs(fit.alpha_bin - np.array([0.05, 0.2, 0.45, 0.7])).max() < 0.05
    assert np.abs(fit.alpha_pair - alpha).mean() < 0.07


def test_cells_in_parts_fit_like_the_observations() -> None:
    rank, pair, click, grade, _, _ = simulate(2, sessions=2000)
    whole = fit_pbm(rank, pair, click, grade)
    parts = [(rank[i : i + 997], pair[i : i + 997], click[i : i + 997]) for i in range(0, len(rank), 997)]
    cells = Cells.accumulate(parts)
    assert cells.shown.sum() == len(rank) and cells.clicks.sum() == click.sum()
    assert len(cells.shown) == len(np.unique(pair * 100 + rank))
    split = fit_pbm_cells(cells, grade, n_ranks=6)
    assert np.allclose(split.theta, whole.theta) and np.allclose(split.alpha_pair, whole.alpha_pair)
    # Weights per cell act like repeated observations: doubling every cell changes nothing but the likelihood.
    doubled = fit_pbm_cells(cells.weighted(np.full(len(cells.shown), 2.0)), grade, n_ranks=6, prior_strength=4.0)
    assert np.allclose(doubled.theta, whole.theta, atol=1e-4)


def test_session_click_probability_by_hand() -> None:
    fit = PBMFit(
        theta=np.array([1.0, 0.5]),
        alpha_bin=np.array([0.0]),
        alpha_pair=np.array([0.2, 0.6, 0.1]),
        iterations=0,
        converged=True,
        log_likelihood=0.0,
    )
    starts = np.array([0, 2, 3])
    p = session_click_probability(fit, starts, np.array([0, 1, 0]), np.array([0, 1, 2]))
    assert p.tolist() == pytest.approx([1 - (1 - 0.2) * (1 - 0.5 * 0.6), 0.1])
