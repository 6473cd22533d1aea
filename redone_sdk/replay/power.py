"""Sizing the online test that should follow a replay: the minimum detectable effect on the harmful exposure
rate for a given number of users, traffic split, significance level and power.

The variance per user is read off the replay: the control rate's linearized variance from the user buckets,
times the users of the log (a rate over N users has variance σ²/N). `mde_users` uses that user part only — an
online test randomizes users while both arms see the same notes. `mde_two_way` adds the rate's variance from the
draw of notes as measured in the log, which more users do not reduce: the figure to plan with when the test's
notes are a fresh draw like the log's (conservative for a difference between arms that share the notes, where
part of it cancels).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PowerSettings", "PowerResult", "minimum_detectable_effect"]


class PowerSettings(BaseModel):
    """The online test to size."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="Two-sided significance level.")
    power: float = Field(default=0.8, gt=0.0, lt=1.0)
    treatment_share: float = Field(default=0.5, gt=0.0, lt=1.0, description="Share of users in the treatment arm.")
    users: int | None = Field(default=None, ge=2, description="Users in the test (None: the log's distinct users).")


class PowerResult(BaseModel):
    settings: PowerSettings
    users: int = Field(description="Users the figures are for.")
    control_rate: float
    sd_per_user_users: float = Field(description="√(N · variance of the control rate), user part only.")
    se_notes: float = Field(description="Standard error of the control rate from the draw of notes (log's notes).")
    mde_users: float = Field(description="Absolute minimum detectable change of the rate, user variance only.")
    mde_two_way: float = Field(description="Absolute minimum detectable change, users' and notes' variance.")
    mde_users_relative: float | None
    mde_two_way_relative: float | None


def minimum_detectable_effect(sd_per_user: float, users: int, settings: PowerSettings, floor_var: float = 0.0) -> float:
    """(z_{1−α/2} + z_power) · √(sd² · (1/(sN) + 1/((1−s)N)) + floor_var): the smallest true difference of the
    rate that a two-sided z-test at level α detects with the given power (equal variance in both arms; floor_var:
    variance that does not shrink with users)."""
    from scipy.stats import norm

    share = settings.treatment_share
    var = sd_per_user**2 * (1.0 / (share * users) + 1.0 / ((1.0 - share) * users)) + floor_var
    return float((norm.ppf(1.0 - settings.alpha / 2.0) + norm.ppf(settings.power)) * math.sqrt(var))


def power_result(
    control_rate: float, var_users: float, var_notes: float, log_users: int, settings: PowerSettings
) -> PowerResult | None:
    """The MDE figures from the control rate's variances in the log, per side (None when not defined)."""
    if not (math.isfinite(control_rate) and math.isfinite(var_users) and math.isfinite(var_notes)) or log_users < 2:
        return None
    users = settings.users or log_users
    sd_u = math.sqrt(var_users * log_users)
    mde_u = minimum_detectable_effect(sd_u, users, settings)
    mde_2 = minimum_detectable_effect(sd_u, users, settings, floor_var=var_notes)
    return PowerResult(
        settings=settings,
        users=users,
        control_rate=control_rate,
        sd_per_user_users=sd_u,
        se_notes=math.sqrt(var_notes),
        mde_users=mde_u,
        mde_two_way=mde_2,
        mde_users_relative=mde_u / control_rate if control_rate > 0 else None,
        mde_two_way_relative=mde_2 / control_rate if control_rate > 0 else None,
    )
