"""The SDK's exception family: every error a user can act on derives from `RedOneError`."""

from __future__ import annotations

__all__ = [
    "RedOneError",
    "InvalidInputError",
    "BundleError",
    "BundleNotFoundError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BackendUnavailableError",
    "PolicyError",
    "ModelOutputError",
]


class RedOneError(Exception):
    """Base class of every error raised on purpose by redone-sdk."""


class InvalidInputError(RedOneError, ValueError):
    """An input (note, query, JSON line) failed validation; the message says which field and why."""


class BundleError(RedOneError):
    """A model bundle cannot be used."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle directory or its manifest does not exist."""


class BundleFormatError(BundleError):
    """The manifest is malformed, of an unknown format version, or names files that are missing."""


class BundleIntegrityError(BundleError):
    """A bundle file's SHA-256 differs from the manifest's: the bundle is corrupted or was tampered with."""


class BackendUnavailableError(RedOneError, ImportError):
    """The requested inference backend cannot run here (a missing extra or a bundle without its graph)."""


class PolicyError(RedOneError, ValueError):
    """A moderation policy is invalid or does not fit the bundle's taxonomy."""


class ModelOutputError(RedOneError):
    """The model gave a non-finite score (NaN or infinity) for a note: no verdict can be trusted, so none is
    given (a policy with `"on_invalid_output": "review"` sends such notes to review instead).

    `index` (the note's position in the call), `note_id` and `task` say which, when known."""

    def __init__(
        self, message: str, *, index: int | None = None, note_id: str | None = None, task: str | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.note_id = note_id
        self.task = task
