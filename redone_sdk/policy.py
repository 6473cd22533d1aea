"""Moderation policy: per-category thresholds that turn scores into an action, editable without retraining."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from redone_sdk.bundle.trust import MAX_POLICY_BYTES, load_json, read_regular_file
from redone_sdk.errors import ModelOutputError, PolicyError, RedOneError
from redone_sdk.schemas import Action, format_validation_error

__all__ = ["CategoryRule", "InvalidOutputAction", "Policy"]

# What a non-finite model score (NaN, infinity) leads to: an error (`ModelOutputError`) or review; never allow.
InvalidOutputAction = Literal["error", "review"]

_SEVERITY: dict[str, int] = {"allow": 0, "review": 1, "block": 2}


class CategoryRule(BaseModel):
    """Thresholds of one category: at `review` or above a note goes to review, at `block` or above it is blocked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: a bool or a numeric string is refused (JSON `true` once became a threshold of 1.0: never review)
    review: float = Field(strict=True, ge=0.0, le=1.0, description="Score from which a note is sent to review.")
    block: float | None = Field(
        default=None, strict=True, ge=0.0, le=1.0, description="Score from which a note is blocked; None never blocks."
    )

    @model_validator(mode="after")
    def _ordered(self) -> CategoryRule:
        if self.block is not None and self.block < self.review:
            raise ValueError(f"block threshold {self.block} is below review threshold {self.review}")
        return self

    def action(self, score: float) -> Action:
        if self.block is not None and score >= self.block:
            return "block"
        if score >= self.review:
            return "review"
        return "allow"


class Policy(BaseModel):
    """Per-category rules; categories without a rule fall back to `default`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    rules: dict[str, CategoryRule] = Field(default_factory=dict)
    default: CategoryRule | None = Field(default=None, description="Rule for categories not listed in `rules`.")
    on_invalid_output: InvalidOutputAction = Field(
        default="error",
        description="A note whose scores are not finite (NaN, infinity): `error` raises `ModelOutputError`, "
        "`review` sends it to review (flagged, `invalid_output` set); it is never allowed.",
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(format_validation_error(exc, "policy")) from None

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy from a JSON file (at most `MAX_POLICY_BYTES`, nested at most `MAX_JSON_DEPTH` deep)."""
        path = Path(path)
        try:
            data = read_regular_file(path, limit=MAX_POLICY_BYTES, what="policy file", error=PolicyError)
        except FileNotFoundError:
            raise PolicyError(f"policy file {path} does not exist") from None
        except RedOneError as exc:  # a link where a regular file belongs
            raise PolicyError(str(exc)) from None
        return cls.from_json(data, where=f"policy file {path}")

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str = "policy") -> Policy:
        """A policy from JSON text, bounded in size and depth, its numbers strict: `true` or `"0.5"` is refused
        where a threshold belongs, never read as 1.0 or 0.5."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(f"{where} has {len(raw):,} bytes; at most {MAX_POLICY_BYTES:,}")
        parsed = load_json(raw, what=where, error=PolicyError)
        if not isinstance(parsed, dict):
            raise PolicyError(f"{where} must hold a JSON object")
        return cls.from_dict(parsed)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False)

    def with_rule(self, category: str, rule: CategoryRule) -> Policy:
        """A copy with one category's rule replaced."""
        return self.model_copy(update={"rules": {**self.rules, category: rule}})

    def rule_for(self, category: str) -> CategoryRule:
        rule = self.rules.get(category, self.default)
        if rule is None:
            raise PolicyError(f"policy {self.name!r} has no rule for category {category!r} and no default rule")
        return rule

    def check_categories(self, categories: Iterable[str]) -> None:
        """Refuse a policy that names unknown categories or leaves a category without a rule."""
        known = set(categories)
        unknown = sorted(set(self.rules) - known)
        if unknown:
            raise PolicyError(
                f"policy {self.name!r} names categories the bundle does not have: {unknown}; "
                f"the bundle's categories are {sorted(known)}"
            )
        for category in sorted(known):
            self.rule_for(category)

    def decide(self, scores: Mapping[str, float]) -> tuple[str, Action]:
        """Return (label, action): the highest-scoring category past its review threshold, or `safe`.

        Fails closed on a non-finite score: `ModelOutputError`, or with `on_invalid_output="review"` the first
        such category and `review` (a NaN compares false with every threshold, which would mean allow)."""
        invalid = [category for category, score in scores.items() if not math.isfinite(score)]
        if invalid:
            if self.on_invalid_output == "review":
                return invalid[0], "review"
            raise ModelOutputError(
                f"non-finite scores for {invalid} (policy {self.name!r} has on_invalid_output='error')"
            )
        action: Action = "allow"
        label = "safe"
        best = -1.0
        for category, score in scores.items():
            cat_action = self.rule_for(category).action(score)
            if cat_action == "allow":
                continue
            if _SEVERITY[cat_action] > _SEVERITY[action]:
                action = cat_action
            if score > best:
                best, label = score, category
        return label, action
