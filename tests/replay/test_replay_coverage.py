"""Coverage of the exposure replay's intervals on synthetic logs whose truth is known, with the users AND the
notes redrawn every repetition (the notes of an online test are a fresh draw, not the log's).

Generator: note popularity is log-normal (σ 1.5: heavy-tailed, few notes carry most exposures), 15 % of notes
are harmful, the arm catches a harmful note with probability 0.7 and a benign one with 0.05; users differ in
activity (log-normal) and in their affinity for harmful notes (Gamma, mean 1). Exposures of user u to note n
are Poisson with mean ∝ activity_u · popularity_n · affinity_u^harmful_n, so the superpopulation truth is
closed-form: control rate p, arm rate p(1−q₁) / (p(1−q₁) + (1−p)(1−q₀)).

Tolerance: REPS repetitions; the test fails when the number of intervals that cover the truth is below the
1 % quantile of Binomial(REPS, 0.90), i.e. when the data are inconsistent with a coverage of at least 90 %
(a true coverage of 90 % fails it 1 % of the time; the nominal 95 % practically never). The same logs with users
resampled only must fall far short — the failure the two-way bootstrap fixes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import binom

from redone_sdk.replay.exposure_metrics import rates_from_cells
from redone_sdk.replay.exposure_results import ExposureSettings
from redone_sdk.replay.hashing import string_hash64

REPS = 120
USERS, NOTES, PER_USER = 1500, 1000, 30.0
P_HARMFUL, CATCH_HARMFUL, CATCH_BENIGN = 0.15, 0.7, 0.05
U_BUCKETS, V_BUCKETS = 128, 32


def _buckets(prefix: str, n: int, buckets: int) -> np.ndarray:
    hashes = string_hash64(pa.array([f"{prefix}{i}" for i in range(n)]))
    return ((hashes >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


USER_BUCKET, NOTE_BUCKET = _buckets("user-", USERS, U_BUCKETS), _buckets("note-", NOTES, V_BUCKETS)


def _truth() -> dict[str, float]:
    control = P_HARMFUL
    kept_h = P_HARMFUL * (1 - CATCH_HARMFUL)
    arm = kept_h / (kept_h + (1 - P_HARMFUL) * (1 - CATCH_BENIGN))
    return {"rate": control, "change": arm / control - 1.0, "diff": arm - control}


def _log(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One fresh draw of users and notes: logged and removed cells [U, V, 1 day, 3]."""
    popularity = rng.lognormal(0.0, 1.5, NOTES)
    harmful = rng.random(NOTES) < P_HARMFUL
    caught = rng.random(NOTES) < np.where(harmful, CATCH_HARMFUL, CATCH_BENIGN)
    activity = rng.lognormal(-0.5, 1.0, USERS)
    affinity = rng.gamma(2.0, 0.5, USERS)
    mean_pop = np.exp(1.5**2 / 2)
    users, notes = [], []
    for is_harmful, boost in ((True, affinity), (False, 1.0)):
        pool = np.flatnonzero(harmful == is_harmful)
        share = popularity[pool].sum() / mean_pop / NOTES
        counts = rng.poisson(PER_USER * activity * boost * share)
        users.append(np.repeat(np.arange(USERS), counts))
        notes.append(rng.choice(pool, counts.sum(), p=popularity[pool] / popularity[pool].sum()))
    user, note = np.concatenate(users), np.concatenate(notes)
    cell = (USER_BUCKET[user] * V_BUCKETS + NOTE_BUCKET[note]) * 3 + harmful[note].astype(np.int64)
    size = U_BUCKETS * V_BUCKETS * 3
    logged = np.bincount(cell, minlength=size).reshape(U_BUCKETS, V_BUCKETS, 1, 3)
    removed = np.bincount(cell[caught[note]], minlength=size).reshape(U_BUCKETS, V_BUCKETS, 1, 3)
    return logged, removed


def _coverage(unit: str, interval: str, reps: int = REPS) -> dict[str, int]:
    rng = np.random.default_rng(2012)
    truth = _truth()
    hits = dict.fromkeys(truth, 0)
    for rep in range(reps):
        logged, removed = _log(rng)
        settings = ExposureSettings(bootstrap=200, bootstrap_unit=unit, interval=interval, seed=rep)
        rates = rates_from_cells(logged, {"arm": removed}, ["control", "arm"], "control", settings)
        found = {
            "rate": rates.estimate("control", "rate"),
            "change": rates.estimate("arm", "change"),
            "diff": rates.estimate("arm", "diff"),
        }
        for name, est in found.items():
            hits[name] += est.contains(truth[name])
    return hits


FLOOR = int(binom.ppf(0.01, REPS, 0.90))


@pytest.mark.parametrize("interval", ["t", "percentile"])
def test_two_way_intervals_cover_a_fresh_draw_of_notes(interval):
    hits = _coverage("two-way", interval)
    assert min(hits.values()) >= FLOOR, (hits, FLOOR, REPS)


def test_user_bootstrap_alone_misses_the_note_draw():
    hits = _coverage("users", "t", reps=40)
    assert max(hits.values()) <= 40 * 0.5, hits
