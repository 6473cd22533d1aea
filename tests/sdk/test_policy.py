import json
from pathlib import Path

import pytest

from redone_sdk import CategoryRule, Policy, PolicyError


def policy() -> Policy:
    return Policy(rules={"hate": CategoryRule(review=0.3, block=0.8)}, default=CategoryRule(review=0.5, block=0.9))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"hate": 0.1, "offensive": 0.2}, ("safe", "allow")),
        ({"hate": 0.35, "offensive": 0.2}, ("hate", "review")),
        ({"hate": 0.85, "offensive": 0.1}, ("hate", "block")),
        ({"hate": 0.45, "offensive": 0.55}, ("offensive", "review")),
        ({"hate": 0.81, "offensive": 0.6}, ("hate", "block")),
        ({"hate": 0.0, "offensive": 0.95}, ("offensive", "block")),
    ],
)
def test_decide(scores: dict, expected: tuple) -> None:
    assert policy().decide(scores) == expected


def test_rule_thresholds_must_be_ordered() -> None:
    with pytest.raises(PolicyError, match="below review threshold"):
        Policy.from_dict({"rules": {"hate": {"review": 0.9, "block": 0.5}}})


def test_round_trip_through_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    policy().save(path)
    assert Policy.load(path) == policy()
    assert list(json.loads(path.read_text())) == sorted(json.loads(path.read_text()))


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.load(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"rules": {"hate": {"review": 2}}}')
    with pytest.raises(PolicyError, match=r"rules\.hate\.review"):
        Policy.load(tmp_path / "wrong.json")


def test_check_categories() -> None:
    with pytest.raises(PolicyError, match="does not have"):
        policy().check_categories(["offensive"])
    with pytest.raises(PolicyError, match="no rule for category 'sexism'"):
        Policy(rules={"hate": CategoryRule(review=0.5)}).check_categories(["hate", "sexism"])


def test_with_rule_returns_a_new_policy() -> None:
    base = policy()
    changed = base.with_rule("offensive", CategoryRule(review=0.1))
    assert changed.decide({"hate": 0.0, "offensive": 0.2}) == ("offensive", "review")
    assert base.decide({"hate": 0.0, "offensive": 0.2}) == ("safe", "allow")
