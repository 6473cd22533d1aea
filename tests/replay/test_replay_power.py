"""The minimum detectable effect: a simulated two-arm test at the MDE rejects with the stated power."""

from __future__ import annotations

import numpy as np
from scipy.stats import binom, norm

from redone_sdk.replay.power import PowerSettings, minimum_detectable_effect, power_result


def test_a_test_at_the_mde_has_the_stated_power():
    rng = np.random.default_rng(0)
    users, rate, reps = 4000, 0.1, 400
    settings = PowerSettings(alpha=0.05, power=0.8, treatment_share=0.3)
    sd = 0.3  # per-user standard deviation, the same in both arms (the formula's assumption)
    mde = minimum_detectable_effect(sd, users, settings)
    n_t = int(users * settings.treatment_share)
    n_c = users - n_t
    rejected = 0
    for _ in range(reps):
        c = rng.normal(rate, sd, n_c).mean()
        t = rng.normal(rate - mde, sd, n_t).mean()
        se = sd * np.sqrt(1 / n_c + 1 / n_t)
        rejected += abs(t - c) / se > norm.ppf(1 - settings.alpha / 2)
    lo, hi = binom.ppf([0.005, 0.995], reps, settings.power)
    assert lo <= rejected <= hi


def test_mde_shrinks_with_users_and_the_two_way_figure_is_larger():
    settings = PowerSettings()
    assert np.isclose(
        minimum_detectable_effect(1.0, 4000, settings), minimum_detectable_effect(1.0, 1000, settings) / 2
    )
    result = power_result(0.05, 1e-6, 4e-6, 10_000, PowerSettings(users=40_000))
    assert result.users == 40_000
    assert result.mde_two_way > result.mde_users
    # The notes' variance is a floor: a million users still cannot detect less than it allows.
    huge = power_result(0.05, 1e-6, 4e-6, 10_000, PowerSettings(users=10**9))
    assert huge.mde_users < 1e-4 < np.sqrt(4e-6) * 2.8 * 0.99 < huge.mde_two_way
    assert np.isclose(result.mde_users_relative, result.mde_users / 0.05)
    assert power_result(float("nan"), 1e-6, 1e-6, 100, settings) is None
