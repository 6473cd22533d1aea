"""Stage 3 — multi-task supervised fine-tuning, loss on the assistant's tokens only; full or LoRA (merged).

Examples are tokenized here (see `chat.py`) and handed to trl's `SFTTrainer` with their `labels` already
masked (-100 on the prompt), so scoring tasks train on exactly the prompt the SDK builds at inference.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.model import load_model, save_model
from redone_sdk.training.stages.common import (
    configure_torch,
    is_main_process,
    last_checkpoint,
    latest_model_dir,
    log,
    mark_done,
    stage_dir,
    trainer_arguments,
)
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
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    configure_torch(config)
    out = stage_dir(config, "sft")
    start = latest_model_dir(config, "sft")
    tokenizer = AutoTokenizer.from_pretrained(str(start), local_files_only=True)
    model = load_model(start)
    codec = ChatCodec(start, config)
    rows, counts = build_rows(codec, config)
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
        **trainer_arguments(
            config,
            out,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            batch_size=cfg.batch_size,
            accumulation=cfg.gradient_accumulation,
            learning_rate=cfg.learning_rate,
            warmup_ratio=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
        ),
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
    result = trainer.train(resume_from_checkpoint=last_checkpoint(out))
    trained = trainer.model
    if cfg.lora:
        trained = trained.merge_and_unload()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {
        "examples": len(rows),
        "tasks": counts,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(sum(losses[-5:]) / len(losses[-5:])) if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "lora": cfg.lora,
    }
    if is_main_process():
        save_model(trained, tokenizer, out / "model")
        (out / "log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    log.info("sft: %s", summary)
    mark_done(config, "sft", summary)
    return out / "model"
