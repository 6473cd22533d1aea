"""The bootstrap's building blocks (two-way weighted sums, degrees of freedom, p-value correction) and the
statistics of a small end-to-end exposure replay."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, replay_exposure
from redone_sdk.replay.bootstrap import cluster_weights, combined_df, influence_sides, weighted_sums
from redone_sdk.replay.multiple_testing import adjust, t_p_value

CATS = ("offensive", "hate", "sexism")


@pytest.mark.parametrize("unit", ["two-way", "users", "notes"])
def test_weighted_sums_equal_the_weighted_loop(unit):
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 5, size=(7, 5, 2, 3))
    weights = cluster_weights(unit, 7, 5, reps=9, seed=1)
    wu = weights.users if weights.users is not None else np.ones((9, 7))
    wv = weights.notes if weights.notes is not None else np.ones((9, 5))
    expected = np.stack([(cells * np.outer(wu[r], wv[r])[:, :, None, None]).sum(axis=(0, 1)) for r in range(9)])
    got = weighted_sums(cells, weights, chunk=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert (weights.users is None) == (unit == "notes") and (weights.notes is None) == (unit == "users")


def test_weights_are_reproducible_and_differ_by_seed():
    a, b, c = (cluster_weights("two-way", 10, 6, 20, s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.notes, b.notes)
    assert not np.array_equal(a.users, c.users)


def _share(flat: np.ndarray) -> np.ndarray:
    """Statistic of [n, 2] sums: share of the first."""
    return (flat[:, :1] / flat.sum(axis=1, keepdims=True)).reshape(-1, 1)


def test_degrees_of_freedom_follow_the_effective_number_of_notes():
    rng = np.random.default_rng(5)
    even = np.zeros((50, 40, 2))
    even[..., 0] = rng.poisson(20, (50, 40))
    even[..., 1] = rng.poisson(80, (50, 40))
    df_even = combined_df(influence_sides(even, _share), "notes")[0]
    assert 25 < df_even <= 40
    skewed = even.copy()
    skewed[:, 0, :] *= 200  # one note bucket carries most exposures, with its own harmful share
    skewed[:, 0, 0] *= 3
    df_skewed = combined_df(influence_sides(skewed, _share), "notes")[0]
    assert df_skewed < 4
    # Users are many and even: two-way df sits between the two sides, never above their sum.
    assert combined_df(influence_sides(skewed, _share), "two-way")[0] < df_even


def test_p_values_and_their_correction():
    assert t_p_value(0.0, 1.0, 10) == pytest.approx(1.0)
    assert t_p_value(1.0, 0.0, 10) is None
    assert t_p_value(2.0, 1.0, None) < t_p_value(2.0, 1.0, 5)  # fewer df, fatter tails
    raw = [0.01, 0.04, None, 0.03, 0.5]
    holm = adjust(raw, "holm")
    bh = adjust(raw, "bh")
    assert holm[2] is None and bh[2] is None
    finite = [p for p in raw if p is not None]
    m = len(finite)
    order = np.argsort(finite)
    by_hand = np.maximum.accumulate([min(1.0, (m - i) * finite[j]) for i, j in enumerate(order)])
    expected = np.empty(m)
    expected[order] = by_hand
    np.testing.assert_allclose([p for p in holm if p is not None], expected)
    assert all(b <= h + 1e-12 for b, h in zip([p for p in bh if p is not None], expected, strict=True))
    with pytest.raises(ValueError):
        adjust(raw, "bonferroni")


def _replay(write_rows, **kw):
    rng = np.random.default_rng(11)
    n_notes = 60
    notes = [{"note_id": f"n{i}", "content": f"text {i}"} for i in range(n_notes)]
    harmful = rng.random(n_notes) < 0.3
    labels = [{"note_id": f"n{i}", "label": "offensive" if harmful[i] else "safe"} for i in range(n_notes)]
    popularity = rng.lognormal(0, 1.2, n_notes)
    picks = rng.choice(n_notes, 4000, p=popularity / popularity.sum())
    rows = [
        {
            "timestamp": f"2025-01-{6 + int(rng.integers(0, 3)):02d}T{int(rng.integers(0, 24)):02d}:00:00Z",
            "user": f"u{int(rng.integers(0, 400))}",
            "note": f"n{note}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for note in picks
    ]
    paths = [write_rows("i.parquet", rows), write_rows("n.jsonl", notes), write_rows("l.jsonl", labels)]
    scores = NoteScores.from_mapping(
        {f"n{i}": {c: float(rng.random() * (0.5 + harmful[i])) for c in CATS} for i in range(n_notes)}, CATS
    )
    strict = Arm("strict", policy=Policy(default=CategoryRule(review=0.6, block=0.8)), scores=scores)
    settings = ExposureSettings(review_delay=timedelta(hours=2), bootstrap=300, note_buckets=16, **kw)
    return replay_exposure(*paths[:2], [Arm.control(), strict], labels=paths[2], settings=settings)


def test_two_way_interval_is_wider_than_users_alone_and_tests_are_corrected(write_rows):
    two_way = _replay(write_rows)
    users = _replay(write_rows, bootstrap_unit="users")
    a, b = two_way.arm("strict").change_vs_control, users.arm("strict").change_vs_control
    assert a.value == b.value
    assert a.se > b.se and (a.hi - a.lo) > (b.hi - b.lo)
    assert a.df is not None and a.df < b.df  # 16 note buckets bound the two-way df
    assert two_way.note_clusters > 1 and two_way.user_clusters > 1
    # One test overall and one per day for the non-control arm, corrected together (Holm never lowers a p).
    assert len(two_way.comparisons) == 1 + len(two_way.days)
    for c in two_way.comparisons:
        assert c.p_adjusted >= c.p_value
        assert c.significant == (c.p_adjusted < 0.05)
    assert a.p_value == two_way.comparisons[0].p_value
    bh = _replay(write_rows, correction="bh")
    assert all(x.p_adjusted <= y.p_adjusted + 1e-12 for x, y in zip(bh.comparisons, two_way.comparisons, strict=True))
    power = two_way.power
    assert power is not None and power.users == two_way.distinct_users
    assert 0 < power.mde_users <= power.mde_two_way


def test_percentile_interval_option(write_rows):
    result = _replay(write_rows, interval="percentile")
    est = result.arm("strict").change_vs_control
    assert est.df is None and est.lo < est.value < est.hi
