"""Train a byte-level BPE tokenizer on platform text, and wrap it for transformers with a chat template."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from redone_sdk.training.tasks import CONTROL_TOKENS, END_TOKEN, PAD_TOKEN, answer_tokens

__all__ = ["CHAT_TEMPLATE", "special_tokens", "train_tokenizer", "to_hf_tokenizer", "chat_prompt"]

# ChatML, with {% generation %} around assistant turns so trl can mask everything else out of the loss.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def special_tokens() -> list[str]:
    return [*CONTROL_TOKENS, *answer_tokens()]


def chat_prompt(user_text: str) -> str:
    """The text the model reads before answering a single user turn (what the chat template renders)."""
    return f"<|im_start|>user\n{user_text}<|im_end|>\n<|im_start|>assistant\n"


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


def to_hf_tokenizer(tokenizer_file: Path) -> Any:
    """A `PreTrainedTokenizerFast` over `tokenizer.json`: ChatML template, `<|im_end|>` ends a turn."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        model_input_names=["input_ids", "attention_mask"],
        pad_token=PAD_TOKEN,
        eos_token=END_TOKEN,
        additional_special_tokens=[t for t in special_tokens() if t not in (PAD_TOKEN, END_TOKEN)],
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf
