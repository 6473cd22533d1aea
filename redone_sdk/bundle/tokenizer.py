"""Read a bundle's (or a checkpoint's) `tokenizer.json`: part of loading a bundle's files, used by inference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from redone_sdk.errors import BundleFormatError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["load_tokenizer"]


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer at `path`, with padding and truncation off (the encoder pads and truncates by its rule)."""
    from tokenizers import Tokenizer  # on use: loading a bundle's manifest does not need it

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise BundleFormatError(f"cannot read tokenizer {path}: {exc}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
