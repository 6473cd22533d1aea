"""`Moderator`: classify notes into the bundle's harm taxonomy and decide an action by policy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import Unpack

from redone_sdk.bundle import Bundle
from redone_sdk.errors import BundleFormatError, ModelOutputError
from redone_sdk.inference.options import InferenceOptions, InferenceOverrides
from redone_sdk.policy import Policy
from redone_sdk.schemas import ModerationResult, Note, NoteLike, coerce_note
from redone_sdk.task_model import BundleTaskModel, check_many, chunked, resolve_bundle

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
            policy_bytes = bundle.policy_bytes()  # the verified bytes, never the file reopened
            if policy_bytes is None:
                raise BundleFormatError(f"bundle {bundle.name} ships no default policy; pass policy=")
            policy = Policy.from_json(policy_bytes, where=f"policy {bundle.policy_path}")
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
        digest: str | None = None,
        public_key: Any = None,
        **overrides: Unpack[InferenceOverrides],
    ) -> Moderator:
        """Load a bundle (`None`: the default one shipped with the SDK) and optionally a policy file.

        `bundle` may also be a plain Hugging Face checkpoint directory (run with PyTorch); its tasks and
        policy then come from `template` (default: the shipped bundle). How it runs: `options`, with each
        keyword given (not None) put in place of that `InferenceOptions` field. `digest` pins the bundle digest
        and `public_key` (Ed25519 PEM) requires a valid `bundle.sig` (docs/bundles.md): else BundleIntegrityError.
        """
        options = InferenceOptions.build(options, **overrides)
        if policy is not None and not isinstance(policy, Policy):
            policy = Policy.load(policy)
        resolved = resolve_bundle(bundle, template, digest=digest, public_key=public_key)
        return cls(resolved, policy=policy, options=options)

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
        """Classify many notes at once (batched by length); results come back in input order.

        `notes` is a list or any iterable of notes, held whole: for a long or endless input use `classify_iter`.
        `InvalidInputError` for a bad note (its index) or for one note passed alone (a str, `Note` or mapping);
        `ModelOutputError` when the model's scores for a note are not finite, unless the policy says review."""
        notes = check_many(notes)
        return self._classify([coerce_note(n, index=i) for i, n in enumerate(notes)])

    def classify_iter(self, notes: Iterable[NoteLike]) -> Iterator[ModerationResult]:
        """Classify an iterable of notes as a stream: results in input order, each chunk's as soon as it is scored.

        Reads `notes` a chunk at a time (`chunk_size`: a few forward passes' worth),
        so memory stays bounded however long the input is; a bad note raises when its chunk is reached, after the
        results before that chunk. Results equal `classify_batch`'s (an int8 graph's scores may move by ~1e-2
        with a note's batch neighbours, which differ for inputs longer than one chunk)."""
        check_many(notes)
        return self._stream(notes)

    def _stream(self, notes: Iterable[NoteLike]) -> Iterator[ModerationResult]:
        start = 0
        for chunk in chunked(notes, self.chunk_size):
            yield from self._classify([coerce_note(n, index=start + i) for i, n in enumerate(chunk)], start=start)
            start += len(chunk)

    def _classify(self, notes: list[Note], *, start: int = 0) -> list[ModerationResult]:
        probs, truncated = self._engine.score([{"text": note.text} for note in notes])
        return self.results(notes, probs, truncated, start=start)

    def results(
        self, notes: Sequence[Note], probabilities: np.ndarray, truncated: Sequence[bool], *, start: int = 0
    ) -> list[ModerationResult]:
        """The policy's results for notes whose label probabilities [notes, labels] (the task's label order, as
        the engine scores them) are known: `classify_batch` is scoring then this (benchmarks time the two apart).

        Fails closed on non-finite probabilities (NaN, infinity): `ModelOutputError` naming the note (index from
        `start`, id) and the task, or with the policy's `on_invalid_output="review"` a `review` result marked
        `invalid_output`; never `allow`."""
        finite = np.isfinite(probabilities).all(axis=1)
        results = []
        for index, (note, row, cut, ok) in enumerate(zip(notes, probabilities, truncated, finite, strict=True)):
            scores = {name: float(p) for name, p in zip(self._labels, row, strict=True) if name in self.categories}
            if not ok and self._policy.on_invalid_output == "error":
                raise ModelOutputError(
                    f"the model's output for note at index {start + index} (note_id {note.note_id!r}) of task "
                    f"{self._task_name!r} is not finite ({dict(zip(self._labels, row.tolist(), strict=True))}); "
                    "refusing to moderate it (set the policy's on_invalid_output to 'review' to review such notes)",
                    index=start + index,
                    note_id=note.note_id,
                    task=self._task_name,
                )
            label, action = self._policy.decide(scores) if ok else (self._first_invalid(row), "review")
            results.append(
                ModerationResult(
                    note_id=note.note_id,
                    flagged=action != "allow",
                    label=label,
                    scores=scores,
                    action=action,
                    model=self._model,
                    truncated=cut,
                    invalid_output=not ok,
                )
            )
        return results

    def _first_invalid(self, row: np.ndarray) -> str:
        """The label of a non-finite output: its first harmful category with a non-finite score."""
        for name, p in zip(self._labels, row, strict=True):
            if name in self.categories and not np.isfinite(p):
                return name
        return self.categories[0]  # only the safe label's probability was not finite

    def __repr__(self) -> str:
        return f"Moderator(bundle={self._bundle.name!r} {self._bundle.version}, policy={self._policy.name!r})"
