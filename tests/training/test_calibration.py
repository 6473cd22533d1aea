"""Temperature scaling and the dev-set policy (`training/calibration.py`) on synthetic arrays: no model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from redone_sdk import Bundle, CategoryRule, Policy
from redone_sdk.training import calibration
from redone_sdk.training.calibration import (
    calibrate_task,
    calibrated_tasks,
    expected_calibration_error,
    fit_temperature,
    logits_from_probabilities,
    policy_from_dev,
    softmax,
)
from redone_sdk.training.export import DEFAULT_POLICY

LABELS = ("safe", "offensive", "hate", "sexism")


def _sample(rng: np.random.Generator, logits: np.ndarray, temperature: float) -> np.ndarray:
    """One gold label per row drawn from softmax(logits / temperature)."""
    probs = softmax(logits, temperature)
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(20_000, 4))
    gold = _sample(rng, logits, 2.5)
    assert fit_temperature(logits, gold) == pytest.approx(2.5, rel=0.1)
    # softmax ignores a per-row shift: the log of T = 1 probabilities fit the same temperature
    assert fit_temperature(logits_from_probabilities(softmax(logits)), gold) == pytest.approx(
        fit_temperature(logits, gold), rel=1e-4
    )


def test_golden_section_fallback_agrees_with_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, size=(4_000, 5))
    gold = _sample(rng, logits, 0.6)
    with_scipy = fit_temperature(logits, gold)
    monkeypatch.setitem(__import__("sys").modules, "scipy.optimize", None)  # `from scipy.optimize import` fails
    assert fit_temperature(logits, gold) == pytest.approx(with_scipy, rel=1e-3)
    assert calibration._golden_section(lambda x: (x - 0.3) ** 2, -1.0, 2.0) == pytest.approx(0.3, abs=1e-5)
    assert calibration._golden_section(lambda x: x, -1.0, 2.0) == -1.0  # a minimum on the bound


def test_calibration_lowers_the_ece_of_overconfident_logits() -> None:
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0.0, 1.5, size=(10_000, 4))
    gold = _sample(rng, true_logits, 1.0)
    overconfident = 3.0 * true_logits
    found = calibrate_task(overconfident, gold)
    assert found.temperature == pytest.approx(3.0, rel=0.1)
    assert found.ece_before > 0.1 and found.ece_after < 0.03 and found.ece_after < found.ece_before / 4
    assert found.ece_after == pytest.approx(expected_calibration_error(softmax(overconfident, found.temperature), gold))
    assert found.metrics() == {"temperature": found[0], "ece_before": found[1], "ece_after": found[2]}


def test_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    gold = np.array([0, 1, 1, 0])
    # 15 bins: 0.9 in (0.8667, 0.9333], 0.8 in (0.7333, 0.8], 0.7 in (0.6667, 0.7333], 0.55 in (0.5333, 0.6]
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(0 - 0.55)) / 4
    assert expected_calibration_error(probs, gold) == pytest.approx(expected)
    # one bin: |accuracy − mean confidence|
    assert expected_calibration_error(probs, gold, bins=1) == pytest.approx(abs(0.5 - (0.9 + 0.8 + 0.7 + 0.55) / 4))
    with pytest.raises(ValueError, match="gold label indices"):
        expected_calibration_error(probs, np.array([0, 1, 2, 0]))


def _dev_set(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """offensive fairly separated (15 % of the other notes score 0.3–0.85), hate barely, no sexism at all."""
    gold = np.array([0] * 600 + [1] * 250 + [2] * 40)
    n = len(gold)
    negative = np.where(rng.random(n) < 0.15, rng.uniform(0.3, 0.85, n), rng.uniform(0.0, 0.45, n))
    p_off = np.where(gold == 1, rng.uniform(0.3, 1.0, n), negative)
    p_hate = (1 - p_off) * np.where(gold == 2, rng.uniform(0.0, 0.6, len(gold)), rng.uniform(0.0, 0.5, len(gold)))
    p_sexism = (1 - p_off - p_hate) * rng.uniform(0.0, 0.1, len(gold))
    probs = np.stack([1 - p_off - p_hate - p_sexism, p_off, p_hate, p_sexism], axis=1)
    assert (probs >= 0).all()
    return probs, gold


def _precision_f1(scores: np.ndarray, positive: np.ndarray, t: float) -> tuple[float, float, int]:
    flagged = scores >= t
    tp = int((flagged & positive).sum())
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / positive.sum()
    return precision, (2 * precision * recall / (precision + recall) if tp else 0.0), int(flagged.sum())


def test_policy_from_dev_thresholds() -> None:
    probs, gold = _dev_set(np.random.default_rng(3))
    policy, figures = policy_from_dev(probs, gold, LABELS, "safe")
    policy.check_categories(LABELS[1:])
    assert Policy.from_dict(json.loads(policy.to_json())) == policy  # what policy.json will hold
    assert figures["n"] == len(gold) and figures["support/sexism"] == 0.0 and figures["support/offensive"] == 250

    scores, positive = probs[:, 1], gold == 1
    rule = policy.rules["offensive"]
    assert 0.2 <= rule.review <= 0.8 and rule.review == round(rule.review, 2)
    best_f1 = max(_precision_f1(scores, positive, t)[1] for t in np.round(np.arange(0.2, 0.8001, 0.01), 2))
    assert _precision_f1(scores, positive, rule.review)[1] == pytest.approx(best_f1)
    assert figures["review/offensive"] == rule.review and figures["review_f1/offensive"] == pytest.approx(best_f1)
    # block: the lowest threshold from review up whose dev precision reaches 0.9
    assert rule.block is not None and rule.block > rule.review and figures["block/offensive"] == rule.block
    precision, _, flagged = _precision_f1(scores, positive, rule.block)
    assert precision >= 0.9 and flagged >= 5 and figures["block_precision/offensive"] == pytest.approx(precision)
    for lower in np.round(np.arange(rule.review, rule.block - 0.005, 0.01), 2):
        assert _precision_f1(scores, positive, lower)[0] < 0.9

    # hate: supported, but never precise enough to block (over at least 5 flagged notes: min_flagged)
    hate = policy.rules["hate"]
    assert 0.2 <= hate.review <= 0.8 and hate.block is None and "block/hate" not in figures
    at = [_precision_f1(probs[:, 2], gold == 2, t) for t in np.arange(hate.review, 1.0, 0.01)]
    assert max(precision for precision, _, flagged in at if flagged >= 5) < 0.9
    assert max(precision for precision, _, _ in at) == 1.0  # on a note or two at the top: not enough to block
    # sexism: no dev support, keeps the default rule
    assert "sexism" not in policy.rules and policy.rule_for("sexism") == DEFAULT_POLICY.default
    assert not any(key.endswith("/sexism") and not key.startswith("support/") for key in figures)


def test_policy_from_dev_keeps_base_rules_without_evidence() -> None:
    base = Policy(
        name="base",
        rules={"hate": CategoryRule(review=0.4, block=0.85), "gone": CategoryRule(review=0.1)},
        default=CategoryRule(review=0.5, block=0.9),
    )
    gold = np.array([0, 0, 1, 1, 0, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.03, 0.02],
            [0.8, 0.1, 0.05, 0.05],
            [0.3, 0.6, 0.05, 0.05],
            [0.2, 0.7, 0.05, 0.05],
            [0.7, 0.25, 0.03, 0.02],
            [0.85, 0.05, 0.1, 0.0],  # a hate note scored below every review candidate: no F1 anywhere
        ]
    )
    policy, figures = policy_from_dev(probs, gold, LABELS, "safe", base=base, name="tuned", min_flagged=1)
    assert policy.name == "tuned" and policy.default == base.default
    assert policy.rules["hate"] == base.rules["hate"] and "gone" not in policy.rules  # base rule kept / unknown dropped
    assert policy.rules["offensive"].review == pytest.approx(0.43)  # middle of the F1 = 1 run (0.26 … 0.60)
    assert policy.rules["offensive"].block == pytest.approx(0.43)  # already precise at review
    assert figures["review_precision/offensive"] == 1.0 and figures["review_recall/offensive"] == 1.0
    policy.check_categories(LABELS[1:])
    # a higher support floor: every category keeps the base rule
    strict, _ = policy_from_dev(probs, gold, LABELS, "safe", base=base, min_support=3)
    assert strict.rules == {"hate": base.rules["hate"]}


def test_policy_from_dev_refuses_bad_inputs() -> None:
    probs, gold = _dev_set(np.random.default_rng(4))
    with pytest.raises(ValueError, match="safe_label"):
        policy_from_dev(probs, gold, LABELS, "benign")
    with pytest.raises(ValueError, match="4 columns for 3 labels"):
        policy_from_dev(probs, gold, LABELS[:3], "safe")
    with pytest.raises(ValueError, match="review_bounds"):
        policy_from_dev(probs, gold, LABELS, "safe", review_bounds=(0.8, 0.2))


def test_calibrated_tasks_sets_temperatures(default_bundle) -> None:
    tasks = Bundle.load(default_bundle).manifest.tasks
    out = calibrated_tasks(tasks, {"moderation": 1.7})
    assert out["moderation"].temperature == 1.7 and out["matching"] is tasks["matching"]
    assert out["moderation"].model_copy(update={"temperature": tasks["moderation"].temperature}) == tasks["moderation"]
    with pytest.raises(ValidationError, match="greater than 0"):
        calibrated_tasks(tasks, {"moderation": 0.0})
    with pytest.raises(ValueError, match="does not have"):
        calibrated_tasks(tasks, {"nope": 2.0})
