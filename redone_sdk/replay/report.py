"""The replay report: Markdown and HTML with the same content, PNG plots, and the data of every plot as JSON.

Layout of the output folder:

    report.md, report.html       the report (the HTML is self-contained except for the images)
    exposure.json, search.json   the full results (`ExposureResult` / `SearchResult`)
    figures/<name>.png           each plot (matplotlib, Agg)
    figures/<name>.json          exactly the numbers drawn in that plot

Every figure is a `Figure` spec first; the PNG is drawn from the spec and the spec is saved beside it.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from redone_sdk.replay.bootstrap import Estimate
from redone_sdk.replay.exposure import ExposureResult
from redone_sdk.replay.schemas import ReplayInputError, TableIssues
from redone_sdk.replay.search import SearchResult

__all__ = ["Figure", "Series", "write_report", "load_results", "render_figure"]

ResultT = TypeVar("ResultT", bound=BaseModel)


class Series(BaseModel):
    name: str
    x: list[float | str | None]
    y: list[float | None]
    lo: list[float | None] | None = None
    hi: list[float | None] | None = None
    style: Literal["line", "bar", "points"] = "line"
    labels: list[str] | None = Field(default=None, description="A text beside each point (e.g. its threshold).")


class Figure(BaseModel):
    """A plot as data: what `figures/<id>.json` holds and what `figures/<id>.png` shows."""

    id: str
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    y_percent: bool = False
    x_percent: bool = False
    x_scale: Literal["linear", "symlog"] = Field(
        default="linear", description="symlog: logarithmic above 0.1 %, linear below (0 stays on the axis)."
    )
    caption: str = ""
    reference_y: float | None = Field(default=None, description="A horizontal reference line (e.g. 0 change).")


_LINTHRESH = 1e-3  # a symlog x axis is linear below 0.1 %


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def render_figure(figure: Figure, path: Path) -> None:
    """Draw a `Figure` to PNG with matplotlib's Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    fig = MplFigure(figsize=(7.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    categorical = any(isinstance(v, str) for s in figure.series for v in s.x)
    bars = [s for s in figure.series if s.style == "bar"]
    width = 0.8 / max(len(bars), 1)
    for series in figure.series:
        y = [_num(v) for v in series.y]
        if categorical:
            labels = [str(v) for v in series.x]
            xs = list(range(len(labels)))
            ax.set_xticks(xs)
            ax.set_xticklabels(
                labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center"
            )
        else:
            xs = [_num(v) for v in series.x]
        if series.style == "bar":
            k = bars.index(series)
            pos = [x + (k - (len(bars) - 1) / 2) * width for x in xs]
            err = None
            if series.lo is not None and series.hi is not None:
                err = [
                    [
                        max(0.0, yy - _num(lo)) if not math.isnan(_num(lo)) else 0.0
                        for yy, lo in zip(y, series.lo, strict=True)
                    ],
                    [
                        max(0.0, _num(hi) - yy) if not math.isnan(_num(hi)) else 0.0
                        for yy, hi in zip(y, series.hi, strict=True)
                    ],
                ]
            ax.bar(pos, y, width=width, label=series.name, yerr=err, capsize=4, alpha=0.85)
        elif series.style == "points":
            ax.scatter(xs, y, label=series.name, zorder=5, s=40, marker="D")
        else:
            ax.plot(xs, y, marker="o", markersize=3, label=series.name)
            if series.lo is not None and series.hi is not None:
                ax.fill_between(xs, [_num(v) for v in series.lo], [_num(v) for v in series.hi], alpha=0.18)
        if series.labels is not None:
            for x, yy, text in zip(xs, y, series.labels, strict=True):
                if text and not (math.isnan(_num(x)) or math.isnan(yy)):
                    ax.annotate(text, (x, yy), xytext=(3, 3), textcoords="offset points", fontsize=6, alpha=0.8)
    if figure.reference_y is not None:
        ax.axhline(figure.reference_y, color="grey", linewidth=0.8, linestyle="--")
    if figure.y_percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if figure.x_scale == "symlog":
        ax.set_xscale("symlog", linthresh=_LINTHRESH, linscale=0.5)
    if figure.x_percent and figure.x_scale == "symlog":  # 0.1 %, 1 %, 10 %: as many decimals as each needs
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x * 100:.10g}%"))
    elif figure.x_percent:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(figure.title, fontsize=11)
    ax.set_xlabel(figure.x_label)
    ax.set_ylabel(figure.y_label)
    ax.grid(alpha=0.3)
    if len(figure.series) > 1 or any(s.style == "points" for s in figure.series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


# ------------------------------------------------------------------------------------------- blocks

# ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", headers, rows) | ("img", src, alt, caption)
Block = tuple


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f} %"


def _range(lo: float | None, hi: float | None, *, percent: bool = False) -> str:
    """` [lo, hi]` of an interval, empty when there is none."""
    if lo is None or hi is None:
        return ""
    return f" [{lo * 100:.2f}, {hi * 100:.2f}]" if percent else f" [{lo:.5f}, {hi:.5f}]"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.5f}"


def _est(e: Estimate, *, percent: bool = False, signed: bool = False, digits: int | None = None) -> str:
    return e.fmt(percent=percent, signed=signed, digits=digits if digits is not None else (2 if percent else 5))


def _issue_blocks(inputs: dict[str, TableIssues]) -> list[Block]:
    blocks: list[Block] = [("h", 3, "Input rows")]
    rows = []
    for issues in inputs.values():
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(issues.reasons.items(), key=lambda kv: -kv[1])) or "—"
        rows.append(
            [
                issues.table,
                issues.source,
                str(issues.rows_read),
                str(issues.rows_used),
                str(issues.rows_filtered),
                str(issues.bad_rows),
                reasons,
            ]
        )
    blocks.append(("table", ["table", "source", "read", "used", "filtered", "bad", "bad rows by reason"], rows))
    examples = [(i.table, e) for i in inputs.values() for e in i.examples]
    if examples:
        blocks.append(("p", "Examples of bad rows (row: 0-based in Parquet, line number in JSON lines):"))
        blocks.append(
            ("table", ["table", "row", "reason", "value"], [[t, str(e.row), e.reason, e.value] for t, e in examples])
        )
    ignored = [f"{i.table}: {', '.join(i.ignored_columns)}" for i in inputs.values() if i.ignored_columns]
    if ignored:
        blocks.append(("p", "Columns ignored: " + "; ".join(ignored) + "."))
    return blocks


def _sweep_labels(points: list) -> list[str]:
    """`t=0.85` beside sweep points, each far enough on the plot (symlog x, linear y) from the labels already
    placed not to overlap them; `t=1` and `off` (the end) always."""

    def where(p) -> tuple[float, float] | None:
        x, y = p.benign_removed_share, p.harmful_exposure_rate
        if x is None or y is None:
            return None
        return (x / _LINTHRESH if x < _LINTHRESH else 1.0 + math.log10(x / _LINTHRESH)), y

    spots = [where(p) for p in points]
    known = [s for s in spots if s is not None]
    width = max((s[0] for s in known), default=1.0) or 1.0
    height = max((s[1] for s in known), default=1.0) or 1.0
    placed: list[tuple[float, float]] = []
    labels = [""] * len(points)
    order = sorted(range(len(points)), key=lambda i: (points[i].threshold not in (None, 1.0), i))
    for i in order:
        spot, threshold = spots[i], points[i].threshold
        if spot is None:
            continue
        u, v = spot[0] / width, spot[1] / height
        if threshold in (None, 1.0) or all(math.hypot(u - a, v - b) > 0.07 for a, b in placed):
            labels[i] = "off" if threshold is None else f"t={threshold:.3g}"
            placed.append((u, v))
    return labels


def _exposure_figures(result: ExposureResult) -> list[Figure]:
    arms = result.arms
    figures = [
        Figure(
            id="exposure_rate_by_arm",
            title="Harmful exposure rate by arm",
            x_label="arm",
            y_label="harmful / labeled exposures kept",
            y_percent=True,
            series=[
                Series(
                    name="harmful exposure rate",
                    x=[a.name for a in arms],
                    y=[a.harmful_exposure_rate.value for a in arms],
                    lo=[a.harmful_exposure_rate.lo for a in arms],
                    hi=[a.harmful_exposure_rate.hi for a in arms],
                    style="bar",
                )
            ],
            caption=f"{int(result.settings.confidence * 100)} % intervals: bootstrap over users.",
        ),
        Figure(
            id="exposure_change_by_day",
            title=f"Change of the harmful exposure rate vs {result.control}, by day",
            x_label="day (UTC)",
            y_label="relative change",
            y_percent=True,
            reference_y=0.0,
            series=[
                Series(
                    name=a.name,
                    x=[d.day for d in result.days],
                    y=[d.arms[a.name].change_vs_control.value for d in result.days],
                    lo=[d.arms[a.name].change_vs_control.lo for d in result.days],
                    hi=[d.arms[a.name].change_vs_control.hi for d in result.days],
                )
                for a in arms
                if a.name != result.control
            ],
        ),
        Figure(
            id="exposure_rate_by_day",
            title="Harmful exposure rate by day",
            x_label="day (UTC)",
            y_label="harmful exposure rate",
            y_percent=True,
            series=[
                Series(
                    name=a.name,
                    x=[d.day for d in result.days],
                    y=[d.arms[a.name].harmful_exposure_rate.value for d in result.days],
                )
                for a in arms
            ],
        ),
    ]
    for i, sweep in enumerate(result.sweeps):
        series = [
            Series(
                name=f"block threshold t ({sweep.source})",
                x=[p.benign_removed_share for p in sweep.points],
                y=[p.harmful_exposure_rate for p in sweep.points],
                lo=[p.harmful_exposure_rate_lo for p in sweep.points],
                hi=[p.harmful_exposure_rate_hi for p in sweep.points],
                labels=_sweep_labels(sweep.points),
            )
        ]
        for name, point in sweep.arm_points.items():
            series.append(
                Series(
                    name=f"arm {name}", x=[point.benign_removed_share], y=[point.harmful_exposure_rate], style="points"
                )
            )
        control = result.arm(result.control)
        series.append(
            Series(
                name=f"{result.control} (control)",
                x=[control.benign_removed_share.value],
                y=[control.harmful_exposure_rate.value],
                style="points",
            )
        )
        figures.append(
            Figure(
                id=f"threshold_sweep_{i + 1}",
                title=f"Threshold sweep: {sweep.source}",
                x_label="benign exposures removed (share of benign exposures; log scale above 0.1 %)",
                y_label="harmful exposure rate",
                x_percent=True,
                x_scale="symlog",
                y_percent=True,
                series=series,
                caption=f"{sweep.rule}. Points are labelled with t; band: {int(result.settings.confidence * 100)} % "
                "interval, Poisson bootstrap over notes.",
            )
        )
    return figures


def _search_changes(result: SearchResult) -> list[tuple[str, Estimate]]:
    """(label, change) for every ranking and estimator: the click model's, then the replay's (IPS)."""
    rankings = [(result.matcher, result.change, result.ips.change)]
    rankings += [(b.name, b.change, b.ips.change) for b in result.baselines]
    out = []
    for name, model, ips in rankings:
        out += [(f"{name} · click model", model), (f"{name} · replay (IPS)", ips)]
    return out


def _search_figures(result: SearchResult) -> list[Figure]:
    ranks = [r.rank for r in result.ranks]
    cpr = [
        ("observed, logged", result.observed_cpr_logged),
        ("model, logged", result.model_cpr_logged),
        ("model, matcher", result.model_cpr_new),
        *[(f"model, {b.name}", b.model_cpr_new) for b in result.baselines],
    ]
    changes = _search_changes(result)
    return [
        Figure(
            id="search_examination",
            title="Examination by rank (click model)",
            x_label="rank",
            y_label="examination θ (top rank = 1)",
            series=[Series(name="examination θ (fitted)", x=ranks, y=[r.examination for r in result.ranks])],
            caption="θ is scaled so that the most examined rank has θ = 1.",
        ),
        Figure(
            id="search_ctr",
            title="Click-through by rank: observed vs the click model",
            x_label="rank",
            y_label="click-through",
            y_percent=True,
            series=[
                Series(name="observed", x=ranks, y=[r.observed_ctr for r in result.ranks]),
                Series(name="predicted", x=ranks, y=[r.predicted_ctr for r in result.ranks]),
            ],
            caption="On its own scale (click-through is far below θ): the two curves should coincide.",
        ),
        Figure(
            id="search_attractiveness",
            title="Attractiveness by relevance bin (matcher score)",
            x_label="matcher score bin",
            y_label="mean attractiveness α",
            series=[
                Series(
                    name="α (fitted)",
                    x=[f"{b.score_lo:.3f}–{b.score_hi:.3f}" for b in result.bins],
                    y=[b.attractiveness for b in result.bins],
                    style="bar",
                )
            ],
        ),
        Figure(
            id="search_cpr",
            title="Click page rate",
            x_label="",
            y_label="page views with a click",
            y_percent=True,
            series=[
                Series(
                    name="click page rate",
                    x=[n for n, _ in cpr],
                    y=[e.value for _, e in cpr],
                    lo=[e.lo for _, e in cpr],
                    hi=[e.hi for _, e in cpr],
                    style="bar",
                )
            ],
            caption="Intervals: bootstrap over queries, click model refitted in each replicate.",
        ),
        Figure(
            id="search_change",
            title="Change in click page rate vs the logged ranking (paired)",
            x_label="",
            y_label="change",
            y_percent=True,
            reference_y=0.0,
            series=[
                Series(
                    name="change",
                    x=[n for n, _ in changes],
                    y=[e.value for _, e in changes],
                    lo=[e.lo for _, e in changes],
                    hi=[e.hi for _, e in changes],
                    style="bar",
                )
            ],
            caption="Paired over the same page views (bootstrap over queries); replay (IPS) over the queries it "
            "covers. A missing bar: not estimable (no covered reordered page view).",
        ),
    ]


EFFECTIVE_NOTES_WARNING = 30  # effective harmful notes below which the report warns (docs/replay.md, Statistics)


def _p(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.2g}" if x < 0.001 else f"{x:.3f}")


def _statistics_blocks(result: ExposureResult) -> list[Block]:
    """Per-segment breakdowns, tests of every change vs control (raw and corrected p-values) and the online
    test's MDE."""
    s = result.settings
    blocks: list[Block] = []
    treated = [a.name for a in result.arms if a.name != result.control]
    if result.label_weighting:
        blocks.append(("p", f"Labels weighted in the rates: {result.label_weighting}; counts are unweighted."))
    if result.effective_harmful_notes is not None:
        few = result.effective_harmful_notes < EFFECTIVE_NOTES_WARNING
        blocks.append(
            (
                "p",
                f"{'**Warning**: ' if few else ''}the exposures are worth {result.effective_notes or 0:,.0f} equally "
                f"shown labeled notes, {result.effective_harmful_notes:,.1f} of them harmful (Kish's effective number)"
                + (
                    f"; below {EFFECTIVE_NOTES_WARNING} harmful, a few notes decide the rates and the intervals "
                    "under-cover a fresh draw of notes (docs/replay.md, Statistics)."
                    if few
                    else "."
                ),
            )
        )
    if result.segments:
        blocks.append(("h", 3, "Segments"))
        blocks.append(
            (
                "p",
                "Same bootstrap as the overall figures. `lang`, `cohort`: the rate within the level; `category`: "
                "the level's exposures over all labeled exposures (the categories add up to the overall rate). "
                "Cohorts are user-hash buckets: random splits, so their changes should agree.",
            )
        )
        rows = []
        for seg in result.segments:
            control = seg.arms[result.control]
            for name in treated:
                arm = seg.arms[name]
                rows.append(
                    [
                        seg.dimension,
                        seg.level,
                        f"{seg.logged_exposures:,}",
                        name,
                        _est(control.harmful_exposure_rate),
                        _est(arm.harmful_exposure_rate),
                        _est(arm.change_vs_control, percent=True, signed=True),
                        _p(arm.change_vs_control.p_adjusted),
                    ]
                )
        blocks.append(
            (
                "table",
                ["dimension", "level", "exposures", "arm", result.control, "arm rate", "change", "p (corrected)"],
                rows,
            )
        )
    if result.comparisons:
        method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[s.correction]
        blocks.append(("h", 3, "Tests"))
        blocks.append(
            (
                "p",
                f"Two-sided t-test of 'no change vs {result.control}' for each arm, overall and per day, and per "
                f"segment level ({len(result.comparisons)} tests); p-values corrected ({method}) across arms and "
                f"days together, and across segment levels as a second family; significant: corrected p < "
                f"{1 - s.confidence:.2g}. Threshold sweep points are tested against {result.control} as a third "
                "family (in the sweep's table).",
            )
        )
        rows = [
            [
                c.arm,
                c.segment or c.day or "all days",
                _pct(c.change),
                _p(c.p_value),
                _p(c.p_adjusted),
                "yes" if c.significant else "",
            ]
            for c in result.comparisons
        ]
        blocks.append(("table", ["arm", "day or segment", "change", "p", f"p ({method})", "significant"], rows))
    power = result.power
    if power is not None:
        ps = power.settings
        blocks.append(("h", 3, "Power of a follow-up online test"))
        blocks.append(
            (
                "ul",
                [
                    f"{power.users:,} users, {ps.treatment_share:.0%} in treatment, two-sided α = {ps.alpha:g}, "
                    f"power {ps.power:.0%}; control harmful exposure rate {_rate(power.control_rate)}.",
                    f"Minimum detectable change, user variance only (both arms see the same notes): "
                    f"{_rate(power.mde_users)} absolute ({_pct(power.mde_users_relative)} relative).",
                    f"Minimum detectable change with the notes' variance too (a fresh draw of notes; standard "
                    f"error from notes {_rate(power.se_notes)}, which more users do not reduce): "
                    f"{_rate(power.mde_two_way)} absolute ({_pct(power.mde_two_way_relative)} relative).",
                ],
            )
        )
    return blocks


def _exposure_blocks(result: ExposureResult, figures: list[Figure]) -> list[Block]:
    s = result.settings
    conf = f"{int(s.confidence * 100)} %"
    blocks: list[Block] = [("h", 2, "Exposure-rate replay")]
    treated = [a for a in result.arms if a.name != result.control]
    summary = [
        f"Period {result.period_start} … {result.period_end} (UTC): {result.logged_exposures:,} exposures of "
        f"{result.distinct_notes:,} notes to {result.distinct_users:,} users; ground truth covers "
        f"{_pct(result.label_coverage, 1)} of exposures, {result.harmful_exposures:,} of them harmful.",
        f"Control arm: **{result.control}**. Review delay {s.review_delay}, review clock `{s.review_clock}`, "
        f"unlabeled reviewed notes: `{s.unlabeled_review}`; {s.bootstrap} {s.bootstrap_unit} bootstrap "
        f"replicates over {result.user_clusters:,} user clusters and {result.note_clusters:,} note clusters, "
        f"{conf} {s.interval} intervals.",
    ]
    for arm in treated:
        summary.append(
            f"**{arm.name}**: harmful exposure rate {_est(arm.harmful_exposure_rate)} vs "
            f"{_est(result.arm(result.control).harmful_exposure_rate)}, change "
            f"{_est(arm.change_vs_control, percent=True, signed=True)}; benign exposures removed "
            f"{arm.benign_exposures_removed:,} ({_est(arm.benign_removed_share, percent=True)})."
        )
    blocks.append(("ul", summary))
    blocks.append(("h", 3, "Arms"))
    blocks.append(
        (
            "table",
            [
                "arm",
                "setup",
                "harmful exposure rate",
                f"change vs {result.control}",
                "difference",
                "exposures kept",
                "benign exp. removed",
                "notes actioned (block / review)",
                "harmful notes missed",
            ],
            [
                [
                    a.name,
                    a.description,
                    _est(a.harmful_exposure_rate),
                    _est(a.change_vs_control, percent=True, signed=True),
                    _est(a.difference_vs_control, signed=True),
                    f"{a.exposures:,}",
                    f"{a.benign_exposures_removed:,} ({_pct(a.benign_removed_share.value)})",
                    f"{a.notes_actioned:,} ({a.notes_blocked:,} / {a.notes_reviewed:,})",
                    f"{a.harmful_notes_missed:,}",
                ]
                for a in result.arms
            ],
        )
    )
    blocks.append(
        (
            "table",
            [
                "arm",
                "removed by block",
                "removed by review",
                "harmful removed",
                "benign removed",
                "unlabeled removed",
                "reviews upheld",
                "benign notes blocked",
            ],
            [
                [
                    a.name,
                    f"{a.removed_by_block:,}",
                    f"{a.removed_by_review:,}",
                    f"{a.harmful_exposures_removed:,}",
                    f"{a.benign_exposures_removed:,}",
                    f"{a.unlabeled_exposures_removed:,}",
                    f"{a.notes_removed_after_review:,}",
                    f"{a.benign_notes_blocked:,}",
                ]
                for a in result.arms
            ],
        )
    )
    blocks.append(("h", 3, "By day"))
    blocks.append(
        (
            "table",
            ["day", "logged exposures"] + [f"{a.name}: rate / change" for a in treated],
            [
                [d.day, f"{d.logged_exposures:,}"]
                + [
                    f"{_rate(d.arms[a.name].harmful_exposure_rate.value)} / "
                    f"{_est(d.arms[a.name].change_vs_control, percent=True, signed=True, digits=1)}"
                    for a in treated
                ]
                for d in result.days
            ],
        )
    )
    blocks.append(("h", 3, "Threshold sweep"))
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[s.correction]
    tested = sum(p.p_value is not None for sweep in result.sweeps for p in sweep.points)
    if tested:
        blocks.append(
            (
                "p",
                f"Each point's change is rate(t) / rate({result.control}) − 1; p: two-sided normal test with the "
                f"SE of the bootstrap over notes (paired with {result.control}; users are not resampled, so read "
                f"it as optimistic), corrected ({method}) across the {tested} points of every sweep as one family.",
            )
        )
    for sweep in result.sweeps:
        blocks.append(("p", f"{sweep.source}: {sweep.rule}."))
        blocks.append(
            (
                "table",
                [
                    "block threshold t",
                    "harmful exposure rate",
                    "benign exposures removed",
                    "notes actioned",
                    f"change vs {result.control}",
                    f"p ({method})",
                ],
                [
                    [
                        "off (nothing actioned)" if p.threshold is None else f"{p.threshold:.4f}",
                        _rate(p.harmful_exposure_rate) + _range(p.harmful_exposure_rate_lo, p.harmful_exposure_rate_hi),
                        f"{p.benign_exposures_removed:,} ({_pct(p.benign_removed_share)}"
                        f"{_range(p.benign_removed_share_lo, p.benign_removed_share_hi, percent=True)})",
                        f"{p.notes_actioned:,}",
                        _pct(p.change_vs_control),
                        _p(p.p_adjusted) + (" *" if p.significant else ""),
                    ]
                    for p in sweep.points
                ],
            )
        )
    for figure in figures:
        blocks.append(("img", f"figures/{figure.id}.png", figure.title, figure.caption))
    if result.scoring:
        blocks.append(
            (
                "p",
                "Model runs: "
                + "; ".join(
                    f"{k}: {v['notes_scored_by_model']:,} notes scored, {v['notes_from_cache']:,} from cache"
                    for k, v in result.scoring.items()
                )
                + ".",
            )
        )
    blocks += _statistics_blocks(result)
    blocks += _issue_blocks(result.inputs)
    blocks.append(("h", 3, "Estimator and assumptions"))
    blocks.append(
        (
            "ul",
            [
                "Each distinct note of the log is scored once per bundle; each arm's policy decides its action from "
                "those scores.",
                "`block` removes every exposure of the note (moderation acts at publication). `review` removes the "
                f"note's exposures from {s.review_delay} after it entered review (its `created_at`, else its first "
                "exposure) and only if ground truth says harmful.",
                "Harmful exposure rate = harmful exposures kept / labeled exposures kept; exposures of unlabeled notes "
                "are in neither. "
                "Removed exposures are not replaced (equivalently, refilled with content as harmful as what is kept).",
                "The log is what the current system showed: notes it already removed never appear, and users' "
                "behaviour after a removal is not modelled.",
                f"Intervals: {s.bootstrap} paired Poisson-bootstrap replicates, unit `{s.bootstrap_unit}` (users "
                f"hashed into {s.user_buckets} clusters, notes into {s.note_buckets}; two-way: each (user, note) "
                "cell weighted by the product of its user's and its note's weights), so the interval holds for a "
                "fresh draw of users and notes; "
                + (
                    "t intervals (estimate ± t(df) · bootstrap SE, df from the clusters' influence, Satterthwaite)"
                    if s.interval == "t"
                    else "percentile intervals"
                )
                + " of the relative change rate(arm)/rate(control) − 1, overall and per UTC day.",
                "The threshold sweep re-decides actions at each threshold from the cached scores and per-note "
                "exposure counts.",
            ],
        )
    )
    return blocks


def _search_blocks(result: SearchResult, figures: list[Figure]) -> list[Block]:
    s = result.settings
    d = result.diagnostics
    conf = f"{int(s.confidence * 100)} %"
    blocks: list[Block] = [("h", 2, "Click-page-rate replay (search)")]
    if not d.identified:
        accepted = " (run with --accept-unidentified)" if d.accepted_unidentified else ""
        blocks.append(
            (
                "p",
                f"**WARNING — the change is NOT identified by this log{accepted}:** "
                + "; ".join(d.warnings)
                + ". Do not act on the numbers below.",
            )
        )
    ips = result.ips
    items = [
        f"{result.sessions:,} page views of {result.queries:,} queries, {result.pairs:,} distinct (query, note) pairs "
        f"({result.pairs_scored_by_model:,} scored by the matcher, the rest from cache); matcher {result.matcher}.",
        f"Click page rate, logged ranking: observed {_est(result.observed_cpr_logged, percent=True)}, "
        f"model {_est(result.model_cpr_logged, percent=True)}.",
        f"Click model (PBM): matcher's ranking {_est(result.model_cpr_new, percent=True)}; "
        f"change **{_est(result.change, percent=True, signed=True)}** ({conf} interval, bootstrap over queries, "
        f"click model refitted in each replicate; with the model held fixed "
        f"{_est(result.change_model_fixed, percent=True, signed=True)}).",
        f"Replay (IPS, top {ips.prefix} ranks matched, no click model): change "
        f"**{_est(ips.change, percent=True, signed=True)}** over the {_pct(ips.coverage, 1)} of page views whose "
        f"query has a logged page view ranked like the matcher's ({ips.accepted:,} such page views; "
        f"{_pct(ips.reordered_coverage, 1)} of the reordered ones covered).",
        "The two estimates' intervals "
        + {
            True: "overlap.",
            False: "do NOT overlap: the click model or the replay's assumptions fail here.",
            None: "cannot be compared (one has no interval).",
        }[result.estimators_agree],
        f"The matcher reorders {_pct(result.sessions_reordered, 1)} of page views. Click model: EM, "
        f"{result.em_iterations} iterations ({'converged' if result.em_converged else 'NOT converged'}), "
        f"attractiveness per pair shrunk toward {len(result.bins)} relevance bins (prior strength "
        f"{s.prior_strength}).",
    ]
    if result.ndcg_logged is not None:
        items.append(
            f"With judgments ({_pct(result.judged_share, 1)} of shown pairs judged): NDCG of the page "
            f"{result.ndcg_logged:.4f} logged vs {result.ndcg_new:.4f} reranked."
        )
    blocks.append(("ul", items))
    if result.baselines:
        rows = [
            [
                name,
                _pct(reordered, 1),
                _est(model, percent=True, signed=True),
                _est(ips_change, percent=True, signed=True),
                "" if ndcg is None else f"{ndcg:.4f}",
            ]
            for name, reordered, model, ips_change, ndcg in [
                (result.matcher, result.sessions_reordered, result.change, result.ips.change, result.ndcg_new),
                *[(b.name, b.sessions_reordered, b.change, b.ips.change, b.ndcg_new) for b in result.baselines],
            ]
        ]
        blocks.append(
            ("table", ["ranking", "page views reordered", "change, click model", "change, replay (IPS)", "NDCG"], rows)
        )
    blocks.append(("h", 3, "Is the change identified?"))
    blocks.append(
        (
            "table",
            ["measure", "value", "threshold"],
            [
                [
                    "impressions off their pair's usual rank (rank spread)",
                    _pct(d.rank_spread, 1),
                    f">= {_pct(d.min_rank_spread, 1)}",
                ],
                ["impressions of pairs shown at 2+ ranks", _pct(d.multi_rank_impressions, 1), ""],
                ["groups of ranks linked by shared pairs", str(d.rank_components), "1"],
                ["page views from queries that varied", _pct(d.queries_varied, 1), ""],
                [
                    "reordered page views from queries that varied",
                    _pct(d.reordered_varied, 1),
                    f">= {_pct(d.min_reordered_varied, 0)}",
                ],
                [
                    "per-query rank spread, quartiles (by page views)",
                    " / ".join(_pct(x, 1) for x in d.query_spread_quartiles),
                    "",
                ],
            ],
        )
    )
    blocks.append(
        (
            "table",
            ["rank", "impressions", "examination θ", "observed CTR", "predicted CTR"],
            [
                [
                    str(r.rank),
                    f"{r.impressions:,}",
                    f"{r.examination:.4f}",
                    f"{r.observed_ctr:.4f}",
                    f"{r.predicted_ctr:.4f}",
                ]
                for r in result.ranks
            ],
        )
    )
    for figure in figures:
        blocks.append(("img", f"figures/{figure.id}.png", figure.title, figure.caption))
    blocks += _issue_blocks(result.inputs)
    blocks.append(("h", 3, "Estimators and assumptions"))
    blocks.append(
        (
            "ul",
            [
                "Click model: a position-based model fitted by EM on the logged page views: "
                "P(click at rank k) = θ_k · α(query, note); click page rate of a ranking = mean over page views of "
                "1 − Π_k (1 − θ_k · α(note at k)); the change compares the model's rate for the new and the logged "
                "rankings.",
                "Replay (IPS): logged page views whose top ranks equal the new ranking's, per query, weighted by the "
                "query's page views; the logged rate over the same queries.",
                "Each page's notes are reranked by the matcher's expected relevance (ties keep the logged order).",
                *result.assumptions,
            ],
        )
    )
    return blocks


# ---------------------------------------------------------------------------------------- renderers


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {title}", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            out += [block[1], ""]
        elif kind == "ul":
            out += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join("---" for _ in headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{block[2]}]({block[1]})", ""]
            if block[3]:
                out += [f"*{block[3]}*", ""]
        elif kind == "pre":
            out += ["```", block[1], "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _inline_html(text: str) -> str:
    """Escape, then render `code` and **bold** (the only inline Markdown the report uses)."""
    escaped = html.escape(text, quote=False)
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    escaped = "".join(parts)
    pieces = escaped.split("**")
    for i in range(1, len(pieces), 2):
        pieces[i] = f"<strong>{pieces[i]}</strong>"
    return "".join(pieces)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _to_html(title: str, blocks: list[Block]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>" for row in block[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            caption = f"<figcaption>{_inline_html(block[3])}</figcaption>" if block[3] else ""
            out.append(f'<figure><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">{caption}</figure>')
        elif kind == "pre":
            out.append(f"<pre>{html.escape(block[1])}</pre>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- public


def load_results(out_dir: str | Path) -> tuple[ExposureResult | None, SearchResult | None]:
    """Read `exposure.json` and `search.json` from a report folder (each may be absent)."""
    out = Path(out_dir)
    exposure = _read_result(out / "exposure.json", ExposureResult)
    search = _read_result(out / "search.json", SearchResult)
    return exposure, search


def _read_result(path: Path, model: type[ResultT]) -> ResultT | None:
    """One results file (None if absent); a file this version cannot read (not JSON, or written by another
    version whose fields differ) is a one-line `ReplayInputError` naming the file and its first problem."""
    from pydantic import ValidationError

    if not path.is_file():
        return None
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ReplayInputError(f"{path} is not UTF-8 text: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        problem = "not valid JSON" if first["type"] == "json_invalid" else f"{where}: {first['msg']}"
        raise ReplayInputError(
            f"{path} is not a {model.__name__} this version of redone-sdk reads ({exc.error_count()} problem(s), "
            f"first: {problem}); it may come from another version: run the replay again to rewrite it"
        ) from None


def write_report(
    out_dir: str | Path,
    *,
    exposure: ExposureResult | None = None,
    search: SearchResult | None = None,
    title: str = "Replay report",
) -> Path:
    """Write the results, figures (PNG + JSON), `report.md` and `report.html`; return the HTML's path.

    Results not given are read from `exposure.json` / `search.json` in `out_dir` when present, so running
    the exposure and the search replays one after the other into one folder gives one report.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    saved_exposure, saved_search = load_results(out)
    exposure = exposure or saved_exposure
    search = search or saved_search
    if exposure is None and search is None:
        raise FileNotFoundError(f"nothing to report in {out}: no exposure.json or search.json")
    blocks: list[Block] = [
        ("p", f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `redone replay`.")
    ]
    figures: list[Figure] = []
    if exposure is not None:
        (out / "exposure.json").write_text(exposure.model_dump_json(indent=2) + "\n", encoding="utf-8")
        exp_figures = _exposure_figures(exposure)
        figures += exp_figures
        blocks += _exposure_blocks(exposure, exp_figures)
    if search is not None:
        (out / "search.json").write_text(search.model_dump_json(indent=2) + "\n", encoding="utf-8")
        search_figures = _search_figures(search)
        figures += search_figures
        blocks += _search_blocks(search, search_figures)
    for figure in figures:
        (out / "figures" / f"{figure.id}.json").write_text(
            json.dumps(figure.model_dump(mode="json"), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        render_figure(figure, out / "figures" / f"{figure.id}.png")
    (out / "report.md").write_text(_to_markdown(title, blocks), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(_to_html(title, blocks), encoding="utf-8")
    return html_path
