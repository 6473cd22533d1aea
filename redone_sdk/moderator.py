"""`Moderator`: classify notes into the bundle's harm taxonomy and decide an action by policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from redone_sdk.bundle import Bundle
from redone_sdk.errors import BundleFormatError
from redone_sdk.inference.backend import BackendName
from redone_sdk.inference.engine import InferenceOptions, TaskEngine, open_backend
from redone_sdk.policy import Policy
from redone_sdk.schemas import ModelInfo, ModerationResult, NoteLike, coerce_note

__all__ = ["Moderator", "resolve_bundle"]


def resolve_bundle(bundle: Bundle | str | Path | None, template: Bundle | str | Path | None = None) -> Bundle:
    """A bundle directory, or a plain Hugging Face checkpoint directory wrapped with `template`'s tasks."""
    if isinstance(bundle, Bundle):
        return bundle
    if bundle is not None and not (Path(bundle) / "manifest.json").exists() and (Path(bundle) / "config.json").exists():
        return Bundle.from_checkpoint(bundle, template)
    return Bundle.load(bundle)


class Moderator:
    """Scores notes with a bundle's moderation task; build it with `Moderator.load`."""

    def __init__(
        self, bundle: Bundle, *, policy: Policy | None = None, options: InferenceOptions | None = None
    ) -> None:
        found = bundle.manifest.task_of_kind("moderation")
        if found is None:
            raise BundleFormatError(f"bundle {bundle.name} has no moderation task")
        self._task_name, task = found
        self._bundle = bundle
        self._options = options or InferenceOptions()
        self._engine = TaskEngine(
            bundle, self._task_name, open_backend(bundle, self._options), self._options.batch_size
        )
        self._labels = task.label_names
        self._safe_index = self._labels.index(task.safe_label or "")
        self.categories: tuple[str, ...] = tuple(n for n in self._labels if n != task.safe_label)
        if policy is None:
            if bundle.policy_path is None:
                raise BundleFormatError(f"bundle {bundle.name} ships no default policy; pass policy=")
            policy = Policy.load(bundle.policy_path)
        policy.check_categories(self.categories)
        self._policy = policy
        self._model = ModelInfo(name=bundle.name, version=bundle.version)

    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path | None = None,
        *,
        policy: Policy | str | Path | None = None,
        backend: BackendName = "auto",
        precision: Literal["fp32", "int8"] | None = None,
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool | None = None,
        providers: Sequence[str] | None = None,
        torch_dtype: Literal["float32", "bfloat16"] = "float32",
        template: Bundle | str | Path | None = None,
        workers: int | None = None,
    ) -> Moderator:
        """Load a bundle (`None`: the default one shipped with the SDK) and optionally a policy file.

        `bundle` may also be a plain Hugging Face checkpoint directory (run with PyTorch); its tasks and
        policy then come from `template` (default: the shipped bundle).
        """
        options = InferenceOptions(
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            allow_spinning=allow_spinning,
            providers=tuple(providers) if providers else None,
            torch_dtype=torch_dtype,
            workers=workers,
        )
        if policy is not None and not isinstance(policy, Policy):
            policy = Policy.load(policy)
        return cls(resolve_bundle(bundle, template), policy=policy, options=options)

    @property
    def bundle(self) -> Bundle:
        return self._bundle

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

    def _classify(self, notes: list) -> list[ModerationResult]:
        probs, truncated = self._engine.score([{"text": note.text} for note in notes])
        results = []
        for note, row, cut in zip(notes, probs, truncated, strict=True):
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
