"""The replay's vectorized policy fails closed like `Policy.decide` on non-finite scores (issue #20, point 7):
a NaN compares false with every threshold, so it used to count as ALLOW."""

from __future__ import annotations

import numpy as np
import pytest

from redone_sdk import ModelOutputError, Policy
from redone_sdk.replay.arms import ACTION_NAMES, REVIEW, decide_actions

CATEGORIES = ("offensive", "hate")
SCORES = np.array([[0.1, 0.2], [np.nan, 0.2], [0.95, 0.1], [0.1, np.inf]])


def test_non_finite_rows_are_an_error_by_default() -> None:
    policy = Policy.from_dict({"default": {"review": 0.5, "block": 0.9}})
    with pytest.raises(ModelOutputError, match=r"2 score rows are not finite .*row 1") as caught:
        decide_actions(policy, CATEGORIES, SCORES)
    assert caught.value.index == 1


def test_a_reviewing_policy_reviews_them_as_policy_decide_does() -> None:
    policy = Policy.from_dict({"default": {"review": 0.5, "block": 0.9}, "on_invalid_output": "review"})
    actions = decide_actions(policy, CATEGORIES, SCORES)
    assert actions[1] == actions[3] == REVIEW
    for row, action in zip(SCORES, actions, strict=True):
        assert ACTION_NAMES[action] == policy.decide(dict(zip(CATEGORIES, row.tolist(), strict=True)))[1]
