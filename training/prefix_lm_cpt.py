"""Continued pretraining of the BERT prefix-LM on the platform corpus (`cpt` on `model.pretrained` presets).

The corpus (`data/cpt.jsonl`: every set's training-side text, SNS-Bench notes, both sides of SNS-TransBench and
general text) is tokenized, joined with `[SEP]` and cut into blocks of `cpt.seq_length` tokens, each opened by
`[CLS]`. Three objectives (`cpt.objective`), all on the same model and LM head the SFT stage then trains:
- `span_mlm` — whole-span masked LM: spans of geometric length (p 0.2, at most 10 tokens, SpanBERT's) until
  `cpt.mask_share` of the block is chosen; chosen tokens become `[MASK]` (80 %), a random token (10 %) or stay
  (10 %); bidirectional attention; loss on the chosen tokens. BERT's own objective, on whole spans;
- `prefix`   — prefix-LM: each block split at a uniform point, bidirectional before it, causal after; loss on
  the next token after the split (what the scoring position does: read a bidirectional prompt, answer);
- `causal`   — the same with the split at the first token: a plain causal LM.
The head is computed at the target positions only (21k-way logits over every position would cost as much as
the encoder).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from redone_sdk.training.config import CPTConfig
from redone_sdk.training.prefix_lm_sft import adamw_warmup_cosine, clipped_update
from redone_sdk.training.stages.common import log

__all__ = ["CPTObjective", "CPT_OBJECTIVES", "pack_blocks", "span_mask", "objective_batch", "warm_up_head", "train_cpt"]

CPTObjective = Literal["causal", "prefix", "span_mlm"]
CPT_OBJECTIVES: tuple[CPTObjective, ...] = ("causal", "prefix", "span_mlm")
_SPAN_P, _SPAN_MAX = 0.2, 10


def pack_blocks(tokenizer: Any, texts: Sequence[str], seq_length: int) -> list[list[int]]:
    """`[CLS]` + `seq_length - 1` tokens of the texts joined by `[SEP]` per block (the last, shorter block is
    dropped unless it is the only one)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        stream += [*encoding.ids, sep_id]
    width = seq_length - 1
    blocks = [[cls_id, *stream[i : i + width]] for i in range(0, len(stream), width)]
    if len(blocks) > 1 and len(blocks[-1]) < seq_length:
        blocks.pop()
    return blocks


def span_mask(length: int, share: float, rng: random.Random, *, protect_first: bool = True) -> list[int]:
    """Positions to predict: whole spans of geometric length (p 0.2, capped at 10) until `share` of the
    `length` positions are chosen (at least one); position 0 (`[CLS]`) is never chosen when `protect_first`."""
    first = 1 if protect_first else 0
    budget = max(1, round(share * (length - first)))
    chosen: set[int] = set()
    while len(chosen) < budget:
        span = 1
        while span < _SPAN_MAX and rng.random() > _SPAN_P:
            span += 1
        span = min(span, budget - len(chosen))
        start = rng.randrange(first, max(first + 1, length - span + 1))
        chosen.update(range(start, min(length, start + span)))
    return sorted(chosen)


def objective_batch(
    blocks: Sequence[Sequence[int]],
    objective: CPTObjective,
    rng: random.Random,
    *,
    mask_share: float,
    mask_id: int,
    vocab_size: int,
) -> dict[str, Any]:
    """Inputs of one step: right-padded ids, the (batch, T, T) attention mask, and the (row, position) pairs
    whose hidden states predict `targets` (the masked token itself for span_mlm, the next token otherwise)."""
    import torch

    from redone_sdk.training.prefix_lm import prefix_lm_mask

    lengths = [len(b) for b in blocks]
    width = max(lengths)
    ids = torch.zeros((len(blocks), width), dtype=torch.long)
    rows: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    prefixes: list[int] = []
    for r, block in enumerate(blocks):
        tokens = list(block)
        n = len(tokens)
        if objective == "span_mlm":
            for p in span_mask(n, mask_share, rng):
                rows.append(r)
                positions.append(p)
                targets.append(tokens[p])
                draw = rng.random()
                if draw < 0.8:
                    tokens[p] = mask_id
                elif draw < 0.9:
                    tokens[p] = rng.randrange(vocab_size)
            prefixes.append(n)
        else:
            split = 1 if objective == "causal" else rng.randint(1, n - 1)
            prefixes.append(split)
            for p in range(split - 1, n - 1):  # the state at p predicts token p + 1
                rows.append(r)
                positions.append(p)
                targets.append(tokens[p + 1])
        ids[r, :n] = torch.tensor(tokens, dtype=torch.long)
    return {
        "input_ids": ids,
        "attention_mask": prefix_lm_mask(prefixes, lengths, width),
        "rows": torch.tensor(rows, dtype=torch.long),
        "positions": torch.tensor(positions, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
    }


def _objective_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy of the LM head at the batch's target positions (`objective_batch`)."""
    import torch.nn.functional as F

    from redone_sdk.inference.scoring_head import encoder_states

    states = encoder_states(model.bert, batch["input_ids"], batch["attention_mask"])
    return F.cross_entropy(model.cls(states[batch["rows"], batch["positions"]]), batch["targets"])


def warm_up_head(model: Any, batches: Iterator[dict[str, Any]], steps: int, lr: float) -> dict[str, Any]:
    """Train only the LM head's transform and bias (the decoder rows are the word embeddings, kept) for `steps`
    objective batches over the frozen encoder, whose states need no gradient. Returns the warm-up's figures."""
    import torch
    import torch.nn.functional as F

    from redone_sdk.inference.scoring_head import encoder_states

    if steps <= 0:
        return {}
    head = [*model.cls.predictions.transform.parameters(), model.cls.predictions.bias]
    optimizer = torch.optim.AdamW(head, lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        batch = next(batches)
        with torch.no_grad():
            states = encoder_states(model.bert, batch["input_ids"], batch["attention_mask"])
        logits = model.cls(states[batch["rows"], batch["positions"]])
        loss = F.cross_entropy(logits, batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.bert.zero_grad(set_to_none=True)  # the tied decoder rows are word embeddings: not the head's to move
        optimizer.step()
        losses.append(float(loss.detach()))
    log.info("cpt: head warm-up %d steps, loss %.3f -> %.3f", steps, losses[0], float(np.mean(losses[-10:])))
    return {"head_warmup_steps": steps, "head_warmup_first_loss": losses[0], "head_warmup_final_loss": losses[-1]}


def train_cpt(model: Any, tokenizer: Any, texts: Sequence[str], cfg: CPTConfig, *, seed: int) -> dict[str, Any]:
    """Continue pretraining `model` (BertLMHeadModel, tied head) on `texts` with `cfg.objective`: AdamW, linear
    warm-up, cosine decay, clipping at 1.0. Returns a summary (steps, losses, tokens, seconds); eval mode after."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    blocks = pack_blocks(tokenizer, texts, cfg.seq_length)
    if not blocks:
        raise ValueError("no text to pretrain on")
    per_epoch = math.ceil(len(blocks) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))
    mask_id = tokenizer.token_to_id("[MASK]")
    vocab = model.config.vocab_size

    def batches() -> Iterator[tuple[list[list[int]], dict[str, Any]]]:
        while True:  # epochs of shuffled blocks
            order = list(range(len(blocks)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                chosen = [blocks[i] for i in order[start : start + cfg.batch_size]]
                yield (
                    chosen,
                    objective_batch(
                        chosen, cfg.objective, rng, mask_share=cfg.mask_share, mask_id=mask_id, vocab_size=vocab
                    ),
                )

    stream = batches()
    warmup = warm_up_head(model, (b for _, b in stream), cfg.head_warmup_steps, cfg.head_warmup_lr)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = adamw_warmup_cosine(params, cfg, total)
    model.train()
    losses: list[float] = []
    tokens_seen = 0
    started = time.monotonic()
    for step in range(1, total + 1):
        chosen, batch = next(stream)
        losses.append(clipped_update(_objective_loss(model, batch), params, optimizer, schedule))
        tokens_seen += sum(len(b) for b in chosen)
        if step % 50 == 0 or step == 1:
            rate = tokens_seen / (time.monotonic() - started)
            log.info("cpt: step %d/%d loss %.4f (%.0f tokens/s)", step, total, np.mean(losses[-50:]), rate)
    step = total
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "objective": cfg.objective,
        **warmup,
        "steps": step,
        "blocks": len(blocks),
        "tokens": tokens_seen,
        "first_loss": losses[0],
        "final_loss": float(np.mean(tail)),
        "train_runtime_s": round(time.monotonic() - started, 1),
    }
