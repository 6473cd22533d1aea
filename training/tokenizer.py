"""Train a byte-level BPE tokenizer on platform text, with control and answer tokens kept atomic."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from redone_sdk.training.tasks import CONTROL_TOKENS, answer_tokens

__all__ = ["train_tokenizer", "special_tokens"]


def special_tokens() -> list[str]:
    return [*CONTROL_TOKENS, *answer_tokens()]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_file: Path) -> Tokenizer:
    """Byte-level BPE (no unknown tokens: any byte sequence encodes), saved as `tokenizer.json`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_file))
    return tokenizer
