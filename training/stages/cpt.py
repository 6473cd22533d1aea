"""Stage 2 — continued pretraining over the packed corpus: causal LM with trl's SFTTrainer on plain text (Qwen2),
or the prefix-LM's own loop (`training/prefix_lm_cpt.py`: causal, prefix-LM or whole-span masked LM)."""

from __future__ import annotations

from pathlib import Path

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.common import stage_dir, start_model, train_and_save, trainer_arguments

__all__ = ["run"]


def run(config: PipelineConfig) -> Path:
    from redone_sdk.training.stages.init import check_supported

    check_supported(config)
    if config.model.pretrained:
        return run_prefix_lm(config)
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


def run_prefix_lm(config: PipelineConfig) -> Path:
    """`cpt.objective` on the BERT prefix-LM from `init`, over `data/cpt.jsonl`; the checkpoint keeps the
    tokenizer and the backbone's lineage."""
    from redone_sdk.training.prefix_lm_cpt import train_cpt
    from redone_sdk.training.prefix_lm_sft import load_prefix_lm, save_prefix_lm
    from redone_sdk.training.stages.common import (
        configure_torch,
        is_main_process,
        latest_model_dir,
        log,
        mark_done,
        read_jsonl,
    )

    configure_torch(config)
    out, start = stage_dir(config, "cpt"), latest_model_dir(config, "cpt")
    model, tokenizer = load_prefix_lm(start)
    texts = [row["text"] for row in read_jsonl(stage_dir(config, "data") / "cpt.jsonl")]
    summary = train_cpt(model, tokenizer, texts, config.cpt, seed=config.seed)
    summary["tokens_per_step"] = config.cpt.batch_size * config.cpt.seq_length
    if is_main_process():
        save_prefix_lm(model, tokenizer, out / "model", lineage_from=start)
    log.info("cpt: %s", summary)
    mark_done(config, "cpt", summary)
    return out / "model"
