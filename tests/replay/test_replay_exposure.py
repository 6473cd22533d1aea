import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, ReplayInputError, replay_exposure

CATS = ("offensive", "hate", "sexism")
POLICY = Policy(name="p", default=CategoryRule(review=0.5, block=0.9))
# n0 allowed, n1 blocked, n2 reviewed (benign: the reviewer keeps it), n3 reviewed (harmful: removed after the delay).
SCORES = NoteScores.from_mapping(
    {
        "n0": {"offensive": 0.1, "hate": 0.0, "sexism": 0.0},
        "n1": {"offensive": 0.95, "hate": 0.0, "sexism": 0.0},
        "n2": {"offensive": 0.6, "hate": 0.0, "sexism": 0.0},
        "n3": {"offensive": 0.0, "hate": 0.6, "sexism": 0.0},
    },
    CATS,
)


def settings(**kw) -> ExposureSettings:
    return ExposureSettings(**{"review_delay": timedelta(hours=2), "bootstrap": 200, **kw})


def test_hand_computed_metrics(hand_log: dict[str, Path]) -> None:
    arms = [Arm.control("logged"), Arm("t", policy=POLICY, scores=SCORES)]
    result = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings()
    )
    assert result.logged_exposures == 15
    assert result.harmful_exposures == 9  # n1 twice and n3 once, for 3 users
    assert result.distinct_notes == 4
    assert result.distinct_users == 3
    control, treated = result.arm("logged"), result.arm("t")
    assert control.harmful_exposure_rate.value == pytest.approx(9 / 15)
    # n1 blocked: 6 exposures; n3 reviewed at 00:00 + 2 h, seen at 10:00 and harmful: 3 removed.
    assert treated.removed_by_block == 6
    assert treated.removed_by_review == 3
    assert treated.harmful_exposures_removed == 9
    assert treated.benign_exposures_removed == 0
    assert treated.exposures == 6
    assert treated.harmful_exposure_rate.value == pytest.approx(0.0)
    assert treated.change_vs_control.value == pytest.approx(-1.0)
    assert treated.difference_vs_control.value == pytest.approx(-0.6)
    assert (treated.notes_actioned, treated.notes_blocked, treated.notes_reviewed) == (3, 1, 2)
    assert treated.notes_removed_after_review == 1
    assert treated.harmful_notes_missed == 0
    assert control.harmful_notes_missed == 2
    assert [d.day for d in result.days] == ["2025-01-06"]


def test_review_delay_keeps_exposures_seen_before_the_review_ends(hand_log: dict[str, Path]) -> None:
    arms = [Arm.control(), Arm("t", policy=POLICY, scores=SCORES)]
    # n3 is seen at 10:00; a 12-hour review ends at 12:00, so its exposures stay.
    result = replay_exposure(
        hand_log["impressions"],
        hand_log["notes"],
        arms,
        labels=hand_log["labels"],
        settings=settings(review_delay=timedelta(hours=12)),
    )
    treated = result.arm("t")
    assert treated.removed_by_review == 0
    assert treated.harmful_exposures == 3
    assert treated.harmful_exposure_rate.value == pytest.approx(3 / 9)
    # Per-arm delay overrides the default: the same arm with 1 hour removes them again.
    quick = Arm("quick", policy=POLICY, scores=SCORES, review_delay=timedelta(hours=1))
    result = replay_exposure(
        hand_log["impressions"],
        hand_log["notes"],
        [Arm.control(), quick],
        labels=hand_log["labels"],
        settings=settings(review_delay=timedelta(hours=12)),
    )
    assert result.arm("quick").removed_by_review == 3


def test_benign_block_is_over_removal(hand_log: dict[str, Path]) -> None:
    strict = Policy(name="strict", default=CategoryRule(review=0.05, block=0.55))  # blocks n1, n2, n3; reviews n0
    arms = [Arm.control(), Arm("strict", policy=strict, scores=SCORES)]
    result = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings()
    )
    arm = result.arm("strict")
    assert arm.benign_exposures_removed == 3  # n2, benign, blocked; n0 reviewed but benign: kept
    assert arm.benign_notes_blocked == 1
    assert arm.benign_removed_share.value == pytest.approx(3 / 6)
    assert arm.exposures == 3
    assert arm.harmful_exposure_rate.value == pytest.approx(0.0)


def test_unlabeled_reviews_keep_or_remove(hand_log: dict[str, Path]) -> None:
    arms = [Arm.control(), Arm("t", policy=POLICY, scores=SCORES)]
    labels = {"n0": "safe", "n1": "offensive", "n2": "safe"}  # n3 has no ground truth
    kept = replay_exposure(hand_log["impressions"], hand_log["notes"], arms, labels=labels, settings=settings())
    assert kept.label_coverage == pytest.approx(12 / 15)
    assert kept.arm("t").unlabeled_exposures_removed == 0
    assert kept.arm("control").harmful_exposure_rate.value == pytest.approx(6 / 12)
    removed = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=labels, settings=settings(unlabeled_review="remove")
    )
    assert removed.arm("t").unlabeled_exposures_removed == 3


def test_review_clock_first_exposure(hand_log: dict[str, Path]) -> None:
    arms = [Arm.control(), Arm("t", policy=POLICY, scores=SCORES)]
    # First exposure of n3 is 10:00; with a 2-hour delay its exposures (all at 10:00) are kept.
    result = replay_exposure(
        hand_log["impressions"],
        hand_log["notes"],
        arms,
        labels=hand_log["labels"],
        settings=settings(review_clock="first_exposure"),
    )
    assert result.arm("t").removed_by_review == 0


def test_control_equal_to_treatment_gives_zero_change(tmp_path: Path, write_rows) -> None:
    rng = np.random.default_rng(3)
    notes = [{"note_id": f"n{i}", "content": f"text {i}"} for i in range(40)]
    labels = [{"note_id": f"n{i}", "label": "offensive" if i % 5 == 0 else "safe"} for i in range(40)]
    rows = [
        {
            "timestamp": f"2025-01-{6 + int(rng.integers(0, 3)):02d}T{int(rng.integers(0, 24)):02d}:00:00Z",
            "user": f"u{int(rng.integers(0, 60))}",
            "note": f"n{int(rng.integers(0, 40))}",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        }
        for _ in range(2000)
    ]
    paths = [write_rows("i.parquet", rows), write_rows("n.jsonl", notes), write_rows("l.jsonl", labels)]
    scores = NoteScores.from_mapping({f"n{i}": {c: float(rng.random()) for c in CATS} for i in range(40)}, CATS)
    arms = [Arm("a", policy=POLICY, scores=scores), Arm("b", policy=POLICY, scores=scores)]
    result = replay_exposure(*paths[:2], arms, labels=paths[2], control="a", settings=settings(bootstrap=300))
    b = result.arm("b")
    assert b.change_vs_control.value == 0.0
    assert b.change_vs_control.contains(0.0)
    assert b.change_vs_control.lo == 0.0 and b.change_vs_control.hi == 0.0
    for day in result.days:
        assert day.arms["b"].change_vs_control.value == 0.0
        assert day.arms["b"].change_vs_control.contains(0.0)
    # A real effect: blocking everything flagged leaves fewer harmful exposures, and the interval says so.
    strict = Arm("strict", policy=Policy(default=CategoryRule(review=0.3, block=0.5)), scores=scores)
    result = replay_exposure(*paths[:2], [Arm.control(), strict], labels=paths[2], settings=settings(bootstrap=300))
    change = result.arm("strict").change_vs_control
    assert change.lo is not None and change.hi is not None and change.lo <= change.value <= change.hi


def test_streaming_batches_do_not_change_results(hand_log: dict[str, Path]) -> None:
    arms = [Arm.control(), Arm("t", policy=POLICY, scores=SCORES)]
    whole = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings()
    )
    tiny = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings(batch_rows=2)
    )
    assert tiny.arms == whole.arms
    assert tiny.days == whole.days
    assert tiny.sweeps == whole.sweeps


def test_bad_rows_are_counted_and_left_out(hand_log: dict[str, Path], tmp_path: Path) -> None:
    clean = replay_exposure(
        hand_log["impressions"], hand_log["notes"], [Arm.control()], labels=hand_log["labels"], settings=settings()
    )
    dirty = tmp_path / "dirty.jsonl"
    bad = [
        {
            "timestamp": "2025-01-06T01:00:00Z",
            "user": "u9",
            "note": "zz",
            "surface": "homefeed",
            "position": 1,
            "click": 0,
        },
        {
            "timestamp": "2025-01-06T01:00:00Z",
            "user": "u9",
            "note": "n0",
            "surface": "homefeed",
            "position": 0,
            "click": 0,
        },
        {"timestamp": "2025-01-06T01:00:00Z", "note": "n0", "surface": "homefeed", "position": 1, "click": 0},
    ]
    dirty.write_text(hand_log["impressions"].read_text() + "not json\n" + "".join(json.dumps(r) + "\n" for r in bad))
    result = replay_exposure(dirty, hand_log["notes"], [Arm.control()], labels=hand_log["labels"], settings=settings())
    issues = result.inputs["impressions"]
    assert issues.rows_read == 19
    assert issues.rows_used == 15
    assert issues.reasons == {
        "not JSON": 1,
        "note not in notes table": 1,
        "position not a positive integer": 1,
        "missing user": 1,
    }
    assert {e.row for e in issues.examples} == {16, 17, 18, 19}
    assert result.arms == clean.arms


def test_surface_filter(hand_log: dict[str, Path], write_rows) -> None:
    rows = [
        {
            "timestamp": "2025-01-06T05:00:00Z",
            "user": "u0",
            "note": "n1",
            "surface": "search",
            "position": 1,
            "click": 1,
        }
    ]
    extra = write_rows("extra.jsonl", rows)
    combined = extra.with_name("combined.jsonl")
    combined.write_text(hand_log["impressions"].read_text() + extra.read_text())
    result = replay_exposure(
        combined,
        hand_log["notes"],
        [Arm.control()],
        labels=hand_log["labels"],
        settings=settings(surfaces=("homefeed",)),
    )
    assert result.inputs["impressions"].rows_filtered == 1
    assert result.logged_exposures == 15


def test_sweep_matches_arm_metrics(hand_log: dict[str, Path]) -> None:
    # A uniform block-only policy is a point of the sweep: its metrics must agree with the arm's.
    block_only = Policy(name="b", default=CategoryRule(review=0.6, block=0.6))
    arms = [Arm.control(), Arm("b", policy=block_only, scores=SCORES)]
    result = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], settings=settings()
    )
    (sweep,) = result.sweeps
    point = next(p for p in sweep.points if p.threshold == pytest.approx(0.6))
    arm = result.arm("b")
    assert point.harmful_exposure_rate == pytest.approx(arm.harmful_exposure_rate.value)
    assert point.benign_exposures_removed == arm.benign_exposures_removed
    assert point.notes_actioned == arm.notes_actioned
    assert sweep.arm_points["b"].benign_exposures_removed == arm.benign_exposures_removed
    # At t = 1 nothing is blocked: the arm's reviews alone (n1, n2, n3 pass review at 0.6); reviews never
    # remove benign exposures, and n1's exposures at 01:00 come before its review ends at 02:00.
    last = sweep.points[-2]
    assert last.threshold == 1.0 and last.notes_actioned == 3
    assert last.benign_exposures_removed == 0
    assert last.harmful_exposures_removed == 6
    assert last.harmful_exposure_rate == pytest.approx(3 / 9)
    # Then "off": nothing actioned, the control's rate (the curve reaches the log as it is).
    off = sweep.points[-1]
    assert off.threshold is None and off.notes_actioned == 0 and off.benign_exposures_removed == 0
    assert off.harmful_exposure_rate == pytest.approx(result.arm("control").harmful_exposure_rate.value)


def test_clear_errors(hand_log: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ReplayInputError, match="control"):
        replay_exposure(hand_log["impressions"], hand_log["notes"], [Arm("t", policy=POLICY, scores=SCORES)])
    with pytest.raises(ReplayInputError, match="unique"):
        replay_exposure(hand_log["impressions"], hand_log["notes"], [Arm.control("a"), Arm.control("a")])
    with pytest.raises(ReplayInputError, match="no precomputed scores"):
        partial = NoteScores.from_mapping({"n0": {c: 0.0 for c in CATS}}, CATS)
        replay_exposure(
            hand_log["impressions"], hand_log["notes"], [Arm.control(), Arm("t", policy=POLICY, scores=partial)]
        )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{}\n")
    with pytest.raises(ReplayInputError, match="no valid impression"):
        replay_exposure(empty, hand_log["notes"], [Arm.control()])
    with pytest.raises(ReplayInputError, match="does not exist"):
        replay_exposure(tmp_path / "nope.parquet", hand_log["notes"], [Arm.control()])


def test_real_bundle_scores_each_note_once(tiny_bundle: Path, hand_log: dict[str, Path], tmp_path: Path) -> None:
    from redone_sdk import Moderator
    from redone_sdk.replay import ScoreCache
    from redone_sdk.replay.notes import load_notes

    moderator = Moderator.load(tiny_bundle)
    strict = moderator.with_policy(Policy(name="strict", default=CategoryRule(review=0.0, block=0.0)))
    cache = ScoreCache(tmp_path / "cache")
    arms = [Arm.control(), Arm("default", moderator=moderator), Arm("strict", moderator=strict)]
    result = replay_exposure(
        hand_log["impressions"], hand_log["notes"], arms, labels=hand_log["labels"], cache=cache, settings=settings()
    )
    (scoring,) = result.scoring.values()
    assert scoring["notes_scored_by_model"] == 4  # two arms, one bundle: each distinct note once
    assert result.arm("strict").exposures == 0  # block at 0: everything removed
    again = replay_exposure(
        hand_log["impressions"],
        hand_log["notes"],
        arms,
        labels=hand_log["labels"],
        cache=ScoreCache(tmp_path / "cache"),
        settings=settings(),
    )
    (scoring,) = again.scoring.values()
    assert scoring == {**scoring, "notes_scored_by_model": 0, "notes_from_cache": 4}
    assert again.arms == result.arms
    # The cached scores are the model's.
    notes = load_notes(hand_log["notes"], ["n0", "n1", "n2", "n3"])
    direct = {r.note_id: r.action for r in moderator.classify_batch(list(notes.values()))}
    blocked_or_reviewed = {k for k, v in direct.items() if v != "allow"}
    assert result.arm("default").notes_actioned == len(blocked_or_reviewed)
