"""Tests of the threshold sweep's points against the control arm: the change of each point, its p-value from the
sweep's bootstrap over notes, and the correction of all points of all sweeps as one family."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, replay_exposure, write_report

CATS = ("offensive", "hate", "sexism")


@pytest.fixture()
def log(write_rows):
    """60 notes, about half harmful; a score that tracks harm (`good`) and one that does not (`noise`)."""
    rng = np.random.default_rng(5)
    n_notes = 60
    harmful = rng.random(n_notes) < 0.5
    labels = [{"note_id": f"n{i}", "label": "hate" if harmful[i] else "safe"} for i in range(n_notes)]
    notes = [{"note_id": f"n{i}", "content": f"text {i}"} for i in range(n_notes)]
    picks = rng.integers(0, n_notes, 4000)
    rows = [
        {
            "timestamp": f"2025-01-06T{int(rng.integers(0, 24)):02d}:00:00Z",
            "user": f"u{int(rng.integers(0, 400))}",
            "note": f"n{n}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for n in picks
    ]
    good = np.clip(np.where(harmful, 0.6, 0.2) + rng.normal(0, 0.15, n_notes), 0, 1)
    noise = rng.random(n_notes)

    def scores(values):
        return NoteScores.from_mapping({f"n{i}": dict.fromkeys(CATS, float(values[i])) for i in range(n_notes)}, CATS)

    paths = (write_rows("i.parquet", rows), write_rows("n.jsonl", notes), write_rows("l.jsonl", labels))
    return paths, scores(good), scores(noise)


def _run(log, control=None, **settings):
    paths, good, noise = log
    policy = Policy(default=CategoryRule(review=0.5, block=0.5))
    arms = [Arm.control(), Arm("good", policy=policy, scores=good), Arm("noise", policy=policy, scores=noise)]
    kw = {"review_delay": timedelta(hours=1), "bootstrap": 300, "sweep_points": 8, **settings}
    return replay_exposure(*paths[:2], arms, labels=paths[2], control=control, settings=ExposureSettings(**kw))


def _all_points(result):
    return [p for sweep in result.sweeps for p in sweep.points]


def test_each_sweep_point_is_tested_against_control_and_corrected_as_one_family(log):
    result = _run(log)
    assert len(result.sweeps) == 2
    control_rate = result.arm("control").harmful_exposure_rate.value
    points = _all_points(result)
    for p in points:
        if p.harmful_exposure_rate is None:  # every labeled exposure removed: no rate, no change, no test
            assert p.change_vs_control is None and p.p_value is None
            continue
        assert p.change_vs_control == pytest.approx(p.harmful_exposure_rate / control_rate - 1)
        if p.threshold is None:  # nothing actioned: the control itself, no test
            assert p.change_vs_control == pytest.approx(0) and p.p_value is None
        elif p.change_vs_control_se == 0:  # every replicate agrees (e.g. rate 0: all harmful removed): no test
            assert p.harmful_exposure_rate == 0 and p.p_value is None and not p.significant
        else:
            assert p.p_value == pytest.approx(2 * norm.sf(abs(p.change_vs_control) / p.change_vs_control_se))
    tested = [p for p in points if p.p_value is not None]
    assert len(tested) >= 10
    expected = multipletests([p.p_value for p in tested], method="holm")[1]
    assert [p.p_adjusted for p in tested] == pytest.approx(list(expected))
    assert all(p.significant == (p.p_adjusted < 0.05) for p in tested)
    # The score that tracks harm cuts the rate by more than half, significantly; blocking by the score that does
    # not track harm (a random fifth to four fifths of the log) leaves the rate about where it was.
    good, noise = result.sweeps
    assert "good" in good.arm_points and "noise" in noise.arm_points
    strong = [p for p in good.points if p.p_value is not None and p.change_vs_control < -0.5]
    assert strong and all(p.significant for p in strong)
    middle = [p for p in noise.points if p.p_value is not None and 0.2 < p.benign_removed_share < 0.8]
    assert len(middle) >= 3 and not any(p.significant for p in middle)


def test_benjamini_hochberg_and_the_se_are_paired_with_control(log):
    holm, bh = _run(log), _run(log, correction="bh")
    tested = [p for p in _all_points(bh) if p.p_value is not None]
    expected = multipletests([p.p_value for p in tested], method="fdr_bh")[1]
    assert [p.p_adjusted for p in tested] == pytest.approx(list(expected))
    for a, b in zip(_all_points(holm), _all_points(bh), strict=True):
        assert a.p_value == b.p_value  # same replicates; only the correction differs
        if a.p_adjusted is not None:
            assert b.p_adjusted <= a.p_adjusted + 1e-12
    # A moderated control: changes are relative to its rate, and its own decisions on the curve are not 0-change.
    other = _run(log, control="good")
    good_rate = other.arm("good").harmful_exposure_rate.value
    for p in _all_points(other):
        if p.harmful_exposure_rate is None:
            continue
        assert p.change_vs_control == pytest.approx(p.harmful_exposure_rate / good_rate - 1)
    off = [p for p in _all_points(other) if p.threshold is None]
    assert all(p.p_value is not None and p.change_vs_control > 0 for p in off)


def test_no_bootstrap_no_p_values_and_the_report_shows_them(log, tmp_path):
    plain = _run(log, bootstrap=0)
    assert all(p.p_value is None and p.p_adjusted is None for p in _all_points(plain))
    assert all((p.change_vs_control is None) == (p.harmful_exposure_rate is None) for p in _all_points(plain))
    result = _run(log)
    out = tmp_path / "r"
    write_report(out, exposure=result)
    saved = json.loads((out / "exposure.json").read_text())
    first = saved["sweeps"][0]["points"][0]
    assert {"change_vs_control", "change_vs_control_se", "p_value", "p_adjusted", "significant"} <= set(first)
    markdown = (out / "report.md").read_text()
    assert "| notes actioned | change vs control | p (Holm) |" in markdown
    assert "p (Holm) |" in markdown and "across the" in markdown
    significant_rows = sum(p.significant for p in _all_points(result))
    assert markdown.count(" * |") == significant_rows > 0
