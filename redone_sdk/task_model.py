"""What `Moderator` and `NoteQueryMatcher` share: a verified bundle, one of its tasks on a scoring engine, and
the options it runs with."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from redone_sdk.bundle import Bundle
from redone_sdk.bundle.manifest import TaskKind
from redone_sdk.errors import BundleFormatError, InvalidInputError
from redone_sdk.inference.backend import BackendInfo
from redone_sdk.inference.engine import TaskEngine, open_backend
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.schemas import ModelInfo, Note

__all__ = ["BundleTaskModel", "check_many", "chunked", "resolve_bundle"]

T = TypeVar("T")

# The streaming methods (`classify_iter`, `score_iter`) read this many forward passes' worth of inputs per worker
# at a time: enough to sort by length and keep the workers busy, few enough that memory stays bounded.
PASSES_PER_CHUNK = 4


def check_many(notes: T, what: str = "notes", one: str = "classify") -> T:
    """`notes` if it is an iterable of notes; `InvalidInputError` for one note (a str, bytes, a `Note`, a mapping),
    which would otherwise be read as a sequence of characters or keys, and for anything not iterable."""
    if isinstance(notes, (str, bytes, bytearray, Note, Mapping)):
        raise InvalidInputError(f"pass a list of {what}; for one note use {one} (got a {type(notes).__name__})")
    if not isinstance(notes, Iterable):
        raise InvalidInputError(f"pass a list of {what}, got {type(notes).__name__}")
    return notes


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most `size` consecutive items, read from `items` only as each list is asked for."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def resolve_bundle(
    bundle: Bundle | str | Path | None,
    template: Bundle | str | Path | None = None,
    *,
    digest: str | None = None,
    public_key: Any = None,
) -> Bundle:
    """A bundle directory, or a plain Hugging Face checkpoint directory wrapped with `template`'s tasks; refused
    unless its digest is `digest` and its signature verifies with `public_key` (each when given)."""
    if isinstance(bundle, Bundle):
        resolved = bundle
    elif (
        bundle is not None and not (Path(bundle) / "manifest.json").exists() and (Path(bundle) / "config.json").exists()
    ):
        resolved = Bundle.from_checkpoint(bundle, template)
    else:
        return Bundle.load(bundle, digest=digest, public_key=public_key)
    resolved.check(digest=digest, public_key=public_key)
    return resolved


class BundleTaskModel:
    """The bundle's task of kind `task_kind` on an engine built from `options`."""

    task_kind: ClassVar[TaskKind]

    def __init__(self, bundle: Bundle, *, options: InferenceOptions | None = None) -> None:
        found = bundle.manifest.task_of_kind(self.task_kind)
        if found is None:
            raise BundleFormatError(f"bundle {bundle.name} has no {self.task_kind} task")
        self._task_name, self._task = found
        self._bundle = bundle
        self._options = options or InferenceOptions()
        backend = open_backend(bundle, self._options)
        self._engine = TaskEngine(bundle, self._task_name, backend, self._options.batch_size)
        self._model = ModelInfo(name=bundle.name, version=bundle.version, digest=bundle.digest)

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    @property
    def chunk_size(self) -> int:
        """Inputs the streaming methods read and score at a time (`PASSES_PER_CHUNK` × batch size × workers)."""
        return PASSES_PER_CHUNK * self._options.batch_size * max(1, self._engine.workers)

    @property
    def workers(self) -> int:
        """Forward passes the backend runs at once (`options.workers` resolved: on CPU one per usable core)."""
        return max(1, self._engine.workers)

    @property
    def options(self) -> InferenceOptions:
        """The options this model was built with (as given: `backend="auto"` stays "auto")."""
        return self._options

    @property
    def backend_info(self) -> BackendInfo:
        """What scores: the backend, graph precision or dtype, and providers that `options` resolved to."""
        return self._engine.backend_info
