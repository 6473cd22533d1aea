"""Stage 3 — multi-task supervised fine-tuning, loss on the assistant's tokens only; full or LoRA (merged).

Examples are tokenized here (see `chat.py`) and handed to trl's `SFTTrainer` with their `labels` already
masked (-100 on the prompt), so scoring tasks train on exactly the prompt the SDK builds at inference.
"""

from __future__ import annotations

import random
from pathlib import Path

from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.common import log, start_model, train_and_save, trainer_arguments
from redone_sdk.training.stages.data import training_mixture

__all__ = ["run", "build_rows"]


def build_rows(codec: ChatCodec, config: PipelineConfig) -> tuple[list[dict], dict[str, int]]:
    """Tokenized training rows of the run's task mixture, shuffled, and counts (per task, dropped as too long)."""
    scoring, generative, counts = training_mixture(config)
    rows, dropped = [], {"answer_too_long": 0}
    for row in scoring:
        task = "moderation" if row["task"] == "moderation" else "matching"
        rows.append(codec.as_training_row(codec.scoring_pair(task, row["fields"], row["label"])))
    for row in generative:
        pair = codec.chat_pair(row["prompt"], row["answer"])
        if pair is None:
            dropped["answer_too_long"] += 1
            continue
        rows.append(codec.as_training_row(pair))
    random.Random(config.seed).shuffle(rows)
    return rows, {**counts, **dropped}


def run(config: PipelineConfig) -> Path:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out, start, tokenizer, model = start_model(config, "sft")
    rows, counts = build_rows(ChatCodec(start, config), config)
    if not rows:
        raise ValueError("no SFT examples: check data.sft_tasks")
    longest = max(len(r["input_ids"]) for r in rows)
    log.info("sft: %d examples (longest %d tokens): %s", len(rows), longest, counts)
    cfg = config.sft
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
    args = SFTConfig(
        **trainer_arguments(config, out, cfg),
        max_length=longest,
        packing=False,
        group_by_length=True,  # batches of similar length: far less padding on CPU
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    merge = (lambda m: m.merge_and_unload()) if cfg.lora else None
    return train_and_save(
        config, "sft", trainer, tokenizer, {"examples": len(rows), "tasks": counts, "lora": cfg.lora}, merge
    )
