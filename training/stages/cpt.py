"""Stage 2 — continued pretraining: causal LM over the packed corpus (trl's SFTTrainer on plain text, packed)."""

from __future__ import annotations

import json
from pathlib import Path

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

__all__ = ["run"]


def run(config: PipelineConfig) -> Path:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    configure_torch(config)
    out = stage_dir(config, "cpt")
    start = latest_model_dir(config, "cpt")
    tokenizer = AutoTokenizer.from_pretrained(str(start), local_files_only=True)
    model = load_model(start)
    corpus = Path(stage_dir(config, "data") / "cpt.jsonl")
    dataset = Dataset.from_json(str(corpus))
    cfg = config.cpt
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
        dataset_text_field="text",
        max_length=cfg.seq_length,
        packing=True,
        packing_strategy="wrapped",  # concatenate and cut: plain pretraining blocks, no padding
        completion_only_loss=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(out))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.global_step * cfg.batch_size * cfg.gradient_accumulation * cfg.seq_length),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(sum(losses[-5:]) / len(losses[-5:])) if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
    if is_main_process():
        save_model(trainer.model, tokenizer, out / "model")
        (out / "log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    log.info("cpt: %s", summary)
    mark_done(config, "cpt", summary)
    return out / "model"
