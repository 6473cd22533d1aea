"""Stage 2 — continued pretraining: causal LM over the packed corpus (trl's SFTTrainer on plain text, packed)."""

from __future__ import annotations

from pathlib import Path

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.common import stage_dir, start_model, train_and_save, trainer_arguments

__all__ = ["run"]


def run(config: PipelineConfig) -> Path:
    from redone_sdk.training.stages.init import check_supported

    check_supported(config)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out, _, tokenizer, model = start_model(config, "cpt")
    dataset = Dataset.from_json(str(stage_dir(config, "data") / "cpt.jsonl"))
    cfg = config.cpt
    args = SFTConfig(
        **trainer_arguments(config, out, cfg),
        dataset_text_field="text",
        max_length=cfg.seq_length,
        packing=True,
        packing_strategy="wrapped",  # concatenate and cut: plain pretraining blocks, no padding
        completion_only_loss=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    tokens_per_step = cfg.batch_size * cfg.gradient_accumulation * cfg.seq_length
    return train_and_save(config, "cpt", trainer, tokenizer, {"tokens_per_step": tokens_per_step})
