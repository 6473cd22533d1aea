"""`Moderator`: classify notes into the bundle's harm taxonomy and decide an action by policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from typing_extensions import Unpack

from redone_sdk.bundle import Bundle
from redone_sdk.errors import BundleFormatError
from redone_sdk.inference.options import InferenceOptions, InferenceOverrides
from redone_sdk.policy import Policy
from redone_sdk.schemas import ModerationResult, Note, NoteLike, coerce_note
from redone_sdk.task_model import BundleTaskModel, resolve_bundle

__all__ = ["Moderator"]


class Moderator(BundleTaskModel):
    """Scores notes with a bundle's moderation task; build it with `Moderator.load`."""

    task_kind = "moderation"

    def __init__(
        self, bundle: Bundle, *, policy: Policy | None = None, options: InferenceOptions | None = None
    ) -> None:
        super().__init__(bundle, options=options)
        task = self._task
        self._labels = task.label_names
        self._safe_index = self._labels.index(task.safe_label or "")
        self.categories: tuple[str, ...] = tuple(n for n in self._labels if n != task.safe_label)
        if policy is None:
            if bundle.policy_path is None:
                raise BundleFormatError(f"bundle {bundle.name} ships no default policy; pass policy=")
            policy = Policy.load(bundle.policy_path)
        policy.check_categories(self.categories)
        self._policy = policy

    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path | None = None,
        *,
        policy: Policy | str | Path | None = None,
        options: InferenceOptions | None = None,
        template: Bundle | str | Path | None = None,
        **overrides: Unpack[InferenceOverrides],
    ) -> Moderator:
        """Load a bundle (`None`: the default one shipped with the SDK) and optionally a policy file.

        `bundle` may also be a plain Hugging Face checkpoint directory (run with PyTorch); its tasks and
        policy then come from `template` (default: the shipped bundle). How it runs: `options`, with each
        keyword given (not None) put in place of that `InferenceOptions` field.
        """
        options = InferenceOptions.build(options, **overrides)
        if policy is not None and not isinstance(policy, Policy):
            policy = Policy.load(policy)
        return cls(resolve_bundle(bundle, template), policy=policy, options=options)

    @property
    def policy(self) -> Policy:
        return self._policy

    def with_policy(self, policy: Policy) -> Moderator:
        """A moderator that shares this one's model but decides with another policy."""
        policy.check_categories(self.categories)
        clone = object.__new__(Moderator)
        clone.__dict__.update(self.__dict__)
        clone._policy = policy
        return clone

    def classify(self, note: NoteLike) -> ModerationResult:
        """Classify one note (a `Note`, a mapping of its fields, or plain text)."""
        return self._classify([coerce_note(note)])[0]

    def classify_batch(self, notes: Iterable[NoteLike]) -> list[ModerationResult]:
        """Classify many notes at once (batched by length); results come back in input order."""
        return self._classify([coerce_note(n, index=i) for i, n in enumerate(notes)])

    def _classify(self, notes: list[Note]) -> list[ModerationResult]:
        probs, truncated = self._engine.score([{"text": note.text} for note in notes])
        return self.results(notes, probs, truncated)

    def results(
        self, notes: Sequence[Note], probabilities: np.ndarray, truncated: Sequence[bool]
    ) -> list[ModerationResult]:
        """The policy's results for notes whose label probabilities [notes, labels] (the task's label order, as
        the engine scores them) are known: `classify_batch` is scoring then this (benchmarks time the two apart)."""
        results = []
        for note, row, cut in zip(notes, probabilities, truncated, strict=True):
            scores = {name: float(p) for name, p in zip(self._labels, row, strict=True) if name in self.categories}
            label, action = self._policy.decide(scores)
            results.append(
                ModerationResult(
                    note_id=note.note_id,
                    flagged=action != "allow",
                    label=label,
                    scores=scores,
                    action=action,
                    model=self._model,
                    truncated=cut,
                )
            )
        return results

    def __repr__(self) -> str:
        return f"Moderator(bundle={self._bundle.name!r} {self._bundle.version}, policy={self._policy.name!r})"
