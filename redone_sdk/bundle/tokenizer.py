"""Read a bundle's (or a checkpoint's) `tokenizer.json`: part of loading a bundle's files, used by inference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from redone_sdk.bundle.trust import MAX_TOKENIZER_BYTES, read_regular_file
from redone_sdk.errors import BundleFormatError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["load_tokenizer"]


def load_tokenizer(source: Path | bytes, *, where: str | None = None) -> Tokenizer:
    """The tokenizer from a `tokenizer.json` file or its (verified) bytes, with padding and truncation off (the
    encoder pads and truncates by its rule). Past `MAX_TOKENIZER_BYTES` it is refused before parsing."""
    from tokenizers import Tokenizer  # on use: loading a bundle's manifest does not need it

    if isinstance(source, bytes):
        data, name = source, where or "tokenizer.json"
        if len(data) > MAX_TOKENIZER_BYTES:
            raise BundleFormatError(f"tokenizer {name} has {len(data):,} bytes; at most {MAX_TOKENIZER_BYTES:,}")
    else:
        name = where or str(source)
        try:
            data = read_regular_file(Path(source), limit=MAX_TOKENIZER_BYTES, what="tokenizer", error=BundleFormatError)
        except FileNotFoundError:
            raise BundleFormatError(f"tokenizer {name} does not exist") from None
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files; UnicodeDecodeError too
        raise BundleFormatError(f"cannot read tokenizer {name}: {exc}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
