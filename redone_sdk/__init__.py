"""redone-sdk: moderate notes and match notes to search queries with a RedOne-style social-network LLM.

>>> from redone_sdk import Moderator
>>> Moderator.load().classify("一条笔记").action  # doctest: +SKIP
'allow'
"""

from redone_sdk.bundle import Bundle
from redone_sdk.errors import (
    BackendUnavailableError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleNotFoundError,
    InvalidInputError,
    ModelOutputError,
    PolicyError,
    RedOneError,
)
from redone_sdk.inference.backend import BackendInfo
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.matcher import NoteQueryMatcher
from redone_sdk.moderator import Moderator
from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.schemas import MatchResult, ModelInfo, ModerationResult, Note

__version__ = "0.1.0"

__all__ = [
    "BackendInfo",
    "Bundle",
    "CategoryRule",
    "InferenceOptions",
    "MatchResult",
    "ModelInfo",
    "ModerationResult",
    "Moderator",
    "Note",
    "NoteQueryMatcher",
    "Policy",
    "RedOneError",
    "InvalidInputError",
    "BundleError",
    "BundleNotFoundError",
    "BundleFormatError",
    "BundleIntegrityError",
    "BackendUnavailableError",
    "PolicyError",
    "ModelOutputError",
    "__version__",
]
