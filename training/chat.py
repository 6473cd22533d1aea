"""Token-level encoding of every training and evaluation example, shared by SFT, DPO mining and evaluation.

Scoring tasks (moderation, matching) go through the SDK's own `PromptEncoder` with the bundle's task specs,
so the fine-tuned model sees exactly the tokens it will see in production. Generative tasks use the same
encoder over a one-slot ChatML template; a too-long prompt keeps its head (the SDK's truncation rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from redone_sdk.bundle.manifest import LabelSpec, TaskSpec
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.inference.encoding import PromptEncoder
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.tasks import END_TOKEN, PAD_TOKEN, answer_token, build_task_specs
from redone_sdk.training.tokenizer import special_tokens

__all__ = ["ChatCodec", "EncodedPair"]

CHAT_TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    answer: list[int]
    truncated: bool


class ChatCodec:
    """Encodes prompts and answers of one model's tokenizer; built from a checkpoint folder's tokenizer.json."""

    def __init__(self, model_dir: Path, config: PipelineConfig, generative_max_length: int | None = None) -> None:
        self.tokenizer: Tokenizer = load_tokenizer(model_dir / "tokenizer.json")
        self.token_ids = {t: self.tokenizer.token_to_id(t) for t in special_tokens()}
        missing = [t for t, i in self.token_ids.items() if i is None]
        if missing:
            raise ValueError(f"{model_dir}/tokenizer.json lacks the tokens {missing}")
        self.pad_id = self.token_ids[PAD_TOKEN]
        self.end_id = self.token_ids[END_TOKEN]
        self.tasks = build_task_specs(
            self.token_ids,
            moderation_max_length=config.model.moderation_max_length,
            matching_max_length=config.model.matching_max_length,
        )
        specials = special_tokens()
        self._scoring = {name: PromptEncoder(self.tokenizer, spec, specials) for name, spec in self.tasks.items()}
        length = generative_max_length or config.sft.max_length
        # PromptEncoder reads only the template, slots and lengths of a TaskSpec; these labels are placeholders.
        chat = TaskSpec(
            kind="matching",
            template=CHAT_TEMPLATE,
            fields=("prompt",),
            truncate_field="prompt",
            max_length=length,
            labels=(
                LabelSpec(name="a", token=END_TOKEN, token_id=self.end_id, column=0, value=0.0),
                LabelSpec(name="b", token=PAD_TOKEN, token_id=self.pad_id, column=1, value=0.0),
            ),
        )
        self._chat = PromptEncoder(self.tokenizer, chat, specials)
        self._chat_length = length

    def scoring_prompts(self, task: str, records: list[dict[str, str]]) -> list[list[int]]:
        return [list(e.ids) for e in self._scoring[task].encode_batch(records)]

    def scoring_pair(self, task: str, fields: dict[str, str], label: str) -> EncodedPair:
        (encoded,) = self._scoring[task].encode_batch([fields])
        return EncodedPair(list(encoded.ids), [self.token_ids[answer_token(label)], self.end_id], encoded.truncated)

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer.encode(self._chat.clean(answer) + END_TOKEN, add_special_tokens=False).ids

    def chat_prompts(self, prompts: list[str], reserve: int = 0) -> list[list[int]]:
        """Prompt ids with room left for `reserve` answer tokens within the generative max length."""
        encoder = self._chat
        if reserve:
            spec = encoder.task.model_copy(update={"max_length": max(self._chat_length - reserve, 16)})
            encoder = PromptEncoder(self.tokenizer, spec, special_tokens())
        return [list(e.ids) for e in encoder.encode_batch([{"prompt": p} for p in prompts])]

    def chat_pair(self, prompt: str, answer: str) -> EncodedPair | None:
        """A generative example cut to the max length: the prompt's head is kept; None if the answer alone won't fit."""
        answer_ids = self.answer_ids(answer)
        if len(answer_ids) > self._chat_length // 2:
            return None
        (prompt_ids,) = self.chat_prompts([prompt], reserve=len(answer_ids))
        return EncodedPair(prompt_ids, answer_ids, len(prompt_ids) + len(answer_ids) > self._chat_length)

    def decode(self, ids: list[int]) -> str:
        if self.end_id in ids:
            ids = ids[: ids.index(self.end_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(PAD_TOKEN, "").strip()

    def as_training_row(self, pair: EncodedPair) -> dict[str, Any]:
        return {"input_ids": pair.prompt + pair.answer, "labels": [-100] * len(pair.prompt) + pair.answer}
