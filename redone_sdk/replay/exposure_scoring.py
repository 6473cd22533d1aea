"""Scores and actions of the exposure replay: each distinct note of the log is scored once per score source
(a bundle, or an arm's precomputed scores), and every arm's policy decides each note's action from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from redone_sdk.replay.arms import Arm, ScoreCache, decide_actions, moderator_fingerprint
from redone_sdk.replay.notes import NotesIndex, iter_notes
from redone_sdk.replay.schemas import ReplayInputError

__all__ = ["ScoredSource", "ArmActions", "decide_arm_actions"]


@dataclass(frozen=True)
class ScoredSource:
    """The scores of one source for the notes of the log (rows of `LoggedExposures.seen`)."""

    label: str
    categories: tuple[str, ...]
    matrix: np.ndarray  # [notes seen, categories]


@dataclass(frozen=True)
class ArmActions:
    """Per moderating arm, the action on every note row (`BLOCK`, `REVIEW` or allow); the score sources and
    which arm uses which; per bundle, how many notes the model scored and how many came from the cache."""

    actions: dict[str, np.ndarray]
    sources: dict[str, ScoredSource]
    source_of: dict[str, str]
    scoring: dict[str, dict[str, int | str]]


def decide_arm_actions(arms: Sequence[Arm], notes: NotesIndex, seen: np.ndarray, cache: ScoreCache) -> ArmActions:
    """Score the notes shown (`seen`: their rows), once per source; each arm's policy decides from the scores."""
    actions: dict[str, np.ndarray] = {}
    sources: dict[str, ScoredSource] = {}
    source_of: dict[str, str] = {}
    scoring: dict[str, dict[str, int | str]] = {}
    seen_ids = notes.ids.take(pa.array(seen))
    for arm in arms:
        if arm.is_control:
            continue
        if arm.moderator is not None:
            source = moderator_fingerprint(arm.moderator)
            if source not in sources:
                before = cache.model_calls.get(source, 0)
                matrix = cache.moderation_scores(arm.moderator, seen_ids, iter_notes(notes.path, seen_ids.to_pylist()))
                bundle = arm.moderator.bundle
                label = f"{bundle.name} {bundle.version}"
                sources[source] = ScoredSource(label, tuple(arm.moderator.categories), matrix)
                model_calls = cache.model_calls[source] - before
                scoring[label] = {
                    "fingerprint": source[:16],
                    "notes_scored_by_model": model_calls,
                    "notes_from_cache": len(seen) - model_calls,
                }
        else:
            assert arm.scores is not None
            source = f"scores:{id(arm.scores)}"
            if source not in sources:
                matrix, missing = arm.scores.lookup(seen_ids)
                if missing.any():
                    example = seen_ids.filter(pa.array(missing))[:3].to_pylist()
                    raise ReplayInputError(
                        f"arm {arm.name!r}: {int(missing.sum())} notes of the log have no precomputed scores, "
                        f"e.g. {example}"
                    )
                sources[source] = ScoredSource(f"scores of arm {arm.name}", arm.scores.categories, matrix)
        source_of[arm.name] = source
        full = np.zeros(len(notes), dtype=np.int8)
        full[seen] = decide_actions(arm.policy, sources[source].categories, sources[source].matrix)
        actions[arm.name] = full
    return ArmActions(actions, sources, source_of, scoring)
