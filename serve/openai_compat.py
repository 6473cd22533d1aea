"""OpenAI's moderation categories from the bundle's own: which of ours stands for which of theirs.

An OpenAI category's score is the highest score of the bundle categories mapped to it, and it is flagged when
the policy's action for one of them is not `allow`. OpenAI categories the bundle does not model are present
(clients read every field) with `false`, `0.0` and no applied input type. Bundle categories with no OpenAI
counterpart keep their own names as extra keys, so nothing the model says is hidden.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from redone_sdk.policy import Policy
from redone_sdk.schemas import ModerationResult

from .schemas import OpenAIModeration, RedOneVerdict

__all__ = ["DEFAULT_MAPPING", "OPENAI_CATEGORIES", "CategoryMap"]

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# our category -> OpenAI's (the default bundle's taxonomy; a bundle category named like an OpenAI one maps to it)
DEFAULT_MAPPING: Mapping[str, str] = {
    "offensive": "harassment",  # insults and abuse of a person or group: OpenAI's harassment
    "hate": "hate",  # hatred of a protected group (race, region, religion, ...)
    "sexism": "hate",  # hatred based on gender is hate in OpenAI's definition
}


class CategoryMap:
    """The mapping for one bundle's categories."""

    def __init__(self, categories: Sequence[str], mapping: Mapping[str, str] = DEFAULT_MAPPING) -> None:
        self.to_openai: dict[str, str] = {}
        for category in categories:
            if category in mapping:
                self.to_openai[category] = mapping[category]
            elif category in OPENAI_CATEGORIES:
                self.to_openai[category] = category
        self.own = tuple(c for c in categories if c not in self.to_openai)
        self.names = (*OPENAI_CATEGORIES, *self.own)
        self.modelled = frozenset(self.to_openai.values()) | frozenset(self.own)

    def convert(self, result: ModerationResult, policy: Policy) -> OpenAIModeration:
        scores = dict.fromkeys(self.names, 0.0)
        flags = dict.fromkeys(self.names, False)
        for category, score in result.scores.items():
            name = self.to_openai.get(category, category)
            if not math.isfinite(score):  # an invalid output sent to review: flagged, its score left unknown (0.0)
                flags[name] = True
                continue
            scores[name] = max(scores[name], score)
            flags[name] = flags[name] or policy.rule_for(category).action(score) != "allow"
        return OpenAIModeration(
            flagged=result.flagged,
            categories=flags,
            category_scores=scores,
            category_applied_input_types={name: ["text"] if name in self.modelled else [] for name in self.names},
            redone=RedOneVerdict(
                label=result.label,
                action=result.action,
                scores=result.scores,
                truncated=result.truncated,
                invalid_output=result.invalid_output,
            ),
        )
