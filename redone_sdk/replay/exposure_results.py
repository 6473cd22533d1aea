"""What an exposure replay is told and what it finds: its settings and its results (`exposure.json` holds an
`ExposureResult`; `ExposureResult.model_validate_json` reads it back)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from redone_sdk.replay.bootstrap import BootstrapUnit, Estimate, IntervalMethod
from redone_sdk.replay.impressions import DEFAULT_BATCH_ROWS
from redone_sdk.replay.power import PowerResult, PowerSettings
from redone_sdk.replay.schemas import TableIssues

__all__ = [
    "ExposureSettings",
    "ExposureResult",
    "Comparison",
    "SegmentResult",
    "ArmResult",
    "DayArm",
    "DayResult",
    "SweepPoint",
    "Sweep",
]


class ExposureSettings(BaseModel):
    """How the exposure replay runs; every field is written into the result and the report."""

    model_config = ConfigDict(frozen=True)

    review_delay: timedelta = Field(default=timedelta(hours=6), description="Default time from review to removal.")
    review_clock: Literal["created_at", "first_exposure"] = Field(
        default="created_at",
        description="When a note enters review: its created_at (else first exposure), or its first exposure.",
    )
    unlabeled_review: Literal["keep", "remove"] = Field(
        default="keep",
        description="Reviewed notes without ground truth: keep their exposures, or remove them after the delay.",
    )
    bootstrap: int = Field(default=1000, ge=0, description="Bootstrap replicates (0: no intervals).")
    bootstrap_unit: BootstrapUnit = Field(
        default="two-way",
        description="What the bootstrap resamples: users and notes (product weights), users only, or notes only.",
    )
    interval: IntervalMethod = Field(
        default="t",
        description="t: estimate ± t(df) · bootstrap SE, df from the clusters' influence (Satterthwaite); "
        "percentile: 2.5–97.5 % of the replicates.",
    )
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    correction: Literal["holm", "bh"] = Field(
        default="holm", description="Multiple-testing correction of the p-values across arms and days."
    )
    seed: int = 0
    user_buckets: int = Field(default=256, ge=1, description="Users are hashed into this many bootstrap clusters.")
    note_buckets: int = Field(default=64, ge=1, description="Notes are hashed into this many bootstrap clusters.")
    power: PowerSettings = Field(default_factory=PowerSettings, description="The follow-up online test sized.")
    segments: tuple[Literal["lang", "category", "cohort", "surface"], ...] = Field(
        default=(),
        description="Breakdowns: the note's language, its ground-truth category, the user's cohort, the surface.",
    )
    cohorts: int = Field(default=4, ge=1, description="User cohorts of the `cohort` segment (user bucket modulo).")
    users_table: str | None = Field(
        default=None,
        description="A users table (user, cohort): the `cohort` segment's levels, instead of user-hash buckets.",
    )
    stratum_sizes: dict[str, int] | None = Field(
        default=None,
        description="Notes per stratum in the population, for labels drawn by stratum (labels table `stratum`).",
    )
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1)
    surfaces: tuple[str, ...] | None = Field(default=None, description="Keep only these surfaces (None: all).")
    period: tuple[date, date] | None = Field(
        default=None, description="Keep only impressions of these UTC days, inclusive (None: all)."
    )
    sweep_points: int = Field(default=25, ge=0)
    spill_dir: str | None = Field(
        default=None, description="Folder for pass 1's temporary columns (default: the system's)."
    )


class ArmResult(BaseModel):
    name: str
    description: str
    is_control: bool
    policy: dict | None = None
    review_delay_s: float
    exposures: int = Field(description="Exposures kept (labeled or not).")
    labeled_exposures: int = Field(description="Exposures kept of notes with ground truth.")
    harmful_exposures: int = Field(description="Exposures kept of harmful notes.")
    removed_by_block: int
    removed_by_review: int
    benign_exposures_removed: int = Field(description="Exposures of benign notes removed (over-removal).")
    harmful_exposures_removed: int
    unlabeled_exposures_removed: int
    notes_actioned: int = Field(description="Notes of the log the policy blocks or sends to review.")
    notes_blocked: int
    notes_reviewed: int
    notes_removed_after_review: int = Field(description="Reviewed notes whose reviewer agreed (harmful).")
    benign_notes_blocked: int
    harmful_notes_missed: int = Field(description="Harmful notes of the log the policy allows.")
    harmful_exposure_rate: Estimate
    benign_removed_share: Estimate = Field(description="Benign exposures removed / benign exposures logged.")
    change_vs_control: Estimate = Field(description="Relative change of the harmful exposure rate vs control.")
    difference_vs_control: Estimate = Field(description="Harmful exposure rate minus control's (absolute).")


class DayArm(BaseModel):
    harmful_exposure_rate: Estimate
    change_vs_control: Estimate
    exposures: int


class DayResult(BaseModel):
    day: str
    logged_exposures: int
    arms: dict[str, DayArm]


class SweepPoint(BaseModel):
    threshold: float | None = Field(
        description="Block threshold of every category (None: nothing actioned, the sweep's end; in "
        "`arm_points`: the arm's own policy)."
    )
    harmful_exposure_rate: float | None
    benign_removed_share: float | None
    benign_exposures_removed: int
    harmful_exposures_removed: int
    notes_actioned: int
    harmful_exposure_rate_lo: float | None = Field(default=None, description="Interval: bootstrap over notes.")
    harmful_exposure_rate_hi: float | None = None
    benign_removed_share_lo: float | None = None
    benign_removed_share_hi: float | None = None
    change_vs_control: float | None = Field(
        default=None, description="Relative change of the harmful exposure rate vs the control arm."
    )
    change_vs_control_se: float | None = Field(default=None, description="Its SE: bootstrap over notes, paired.")
    p_value: float | None = Field(default=None, description="Two-sided, normal, against no change vs control.")
    p_adjusted: float | None = Field(
        default=None, description="Corrected (the run's correction) across every point of every sweep."
    )
    significant: bool | None = Field(default=None, description="p_adjusted below 1 − confidence.")


class Sweep(BaseModel):
    source: str = Field(description="The scores swept: a bundle, or an arm's precomputed scores.")
    rule: str
    points: list[SweepPoint]
    arm_points: dict[str, SweepPoint]


class SegmentResult(BaseModel):
    """One level of a segment dimension: per arm, its harmful exposure rate and change vs control (`category`:
    the exposures of that category over all labeled exposures)."""

    dimension: str
    level: str
    logged_exposures: int = Field(description="Exposures logged in the level (category: of that category).")
    arms: dict[str, DayArm]


class Comparison(BaseModel):
    """One test of 'no change vs control' (an arm overall or on one day): the relative change, its two-sided
    p-value (t with the interval's df) and the p-value after the correction across every comparison."""

    arm: str
    day: str | None = Field(description="None: the whole period.")
    segment: str | None = Field(
        default=None, description="`dimension=level`; segment tests are corrected as their own family."
    )
    change: float | None
    p_value: float | None
    p_adjusted: float | None
    significant: bool = Field(description="p_adjusted below 1 − confidence.")


class ExposureResult(BaseModel):
    """Everything the exposure replay found; `model_dump_json()` is what `exposure.json` holds."""

    kind: Literal["exposure"] = "exposure"
    settings: ExposureSettings
    control: str
    inputs: dict[str, TableIssues]
    period_start: str
    period_end: str
    logged_exposures: int
    labeled_exposures: int
    harmful_exposures: int
    label_coverage: float | None = Field(description="Share of logged exposures whose note has ground truth.")
    distinct_notes: int
    distinct_users: int = Field(description="Distinct users (HyperLogLog estimate of distinct user-id hashes, ~1 %).")
    user_clusters: int
    note_clusters: int = Field(default=0, description="Note buckets with at least one exposure.")
    comparisons: list[Comparison] = Field(
        default_factory=list, description="Every change vs control tested, with raw and corrected p-values."
    )
    power: PowerResult | None = Field(default=None, description="Minimum detectable effect of a follow-up online test.")
    segments: list[SegmentResult] = Field(default_factory=list, description="Per-segment breakdowns, if asked.")
    effective_notes: float | None = Field(
        default=None,
        description="(Σ e)² / Σ e² over the labeled notes' exposures e: how many equally shown notes the log is worth.",
    )
    effective_harmful_notes: float | None = Field(
        default=None, description="The same over harmful notes; below ~30 the intervals are not to be trusted."
    )
    label_weighting: str | None = Field(
        default=None, description="How labeled notes were weighted in the rates (None: unweighted)."
    )
    scoring: dict[str, dict[str, int | str]] = Field(description="Per bundle: notes scored by the model, from cache.")
    arms: list[ArmResult]
    days: list[DayResult]
    sweeps: list[Sweep]
    timings_s: dict[str, float]

    def arm(self, name: str) -> ArmResult:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)
