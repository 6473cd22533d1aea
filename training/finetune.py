"""Supervised fine-tuning on the tasks' prompts with the loss on the answer token only.

Each example is one prompt (encoded by the SDK's own `PromptEncoder`, so training and serving see the same
tokens) followed by a single answer token; the loss is the LM's cross-entropy over the whole vocabulary at
the last prompt position — SFT with an assistant-only loss, for a one-token answer.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redone_sdk.inference.encoding import PromptEncoder, pad_batch
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.datasets import Example
from redone_sdk.training.tasks import answer_token

__all__ = ["EncodedExample", "encode_examples", "finetune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedExample:
    ids: tuple[int, ...]
    answer_id: int


def encode_examples(
    examples: Sequence[Example], encoders: dict[str, PromptEncoder], token_ids: dict[str, int]
) -> list[EncodedExample]:
    out: list[EncodedExample] = []
    for task, encoder in encoders.items():
        subset = [e for e in examples if e.task == task]
        for example, prompt in zip(subset, encoder.encode_batch([e.record for e in subset]), strict=True):
            out.append(EncodedExample(ids=prompt.ids, answer_id=token_ids[answer_token(example.label)]))
    return out


def _batches(data: list[EncodedExample], batch_size: int, rng: random.Random) -> list[list[EncodedExample]]:
    """Shuffled batches of similar length: sort within shuffled pools of 50 batches, then shuffle batches."""
    order = data[:]
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda e: len(e.ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def finetune(model: Any, data: list[EncodedExample], config: PipelineConfig, pad_id: int) -> list[float]:
    """Train in place; returns the loss of every step (for logs and tests)."""
    import torch
    from tqdm.auto import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = max(1, int(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    losses: list[float] = []
    batches: list[list[EncodedExample]] = []
    bar = tqdm(total=total, desc="fine-tune", unit="step", mininterval=5)
    for step in range(total):
        if not batches:
            batches = _batches(data, config.batch_size, rng)
        batch = batches.pop()
        ids, mask = pad_batch([e.ids for e in batch], pad_id)
        input_ids, attention_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        states = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        logits = head(states[torch.arange(len(batch)), last])
        target = torch.tensor([e.answer_id for e in batch])
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    bar.close()
    model.eval()
    return losses
