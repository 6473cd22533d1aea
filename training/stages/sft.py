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

__all__ = ["run", "run_prefix_lm", "build_rows"]


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
    if config.model.pretrained:
        return run_prefix_lm(config)
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


def run_prefix_lm(config: PipelineConfig) -> Path:
    """SFT of a pretrained BERT prefix-LM on the scoring tasks (`prefix_lm_sft.train_scoring`), distilling from
    `sft.teacher` when one is set (over the gold rows and `sft.distill_texts` unlabeled notes)."""
    from redone_sdk.training.prefix_lm_sft import (
        encode_rows,
        load_prefix_lm,
        save_prefix_lm,
        task_specs,
        teacher_probabilities,
        train_scoring,
    )
    from redone_sdk.training.stages.common import (
        configure_torch,
        is_main_process,
        latest_model_dir,
        mark_done,
        read_jsonl,
        stage_dir,
    )

    configure_torch(config)
    out, start = stage_dir(config, "sft"), latest_model_dir(config, "sft")
    model, tokenizer = load_prefix_lm(start)
    scoring, generative, counts = training_mixture(config)
    if generative:
        log.warning(
            "sft: the prefix-LM trains the scoring tasks only; %d generative examples left out", len(generative)
        )
    rows = [dict(r) for r in scoring]
    cfg = config.sft
    soft = None
    if cfg.teacher:
        from redone_sdk.task_model import resolve_bundle

        rng = random.Random(config.seed + 5)
        notes = [r["text"] for r in read_jsonl(stage_dir(config, "data") / "cpt.jsonl")]
        notes = rng.sample(notes, min(cfg.distill_texts, len(notes)))
        rows += [{"task": "moderation", "fields": {"text": text}, "label": None} for text in notes]
        soft = [None] * len(rows)
        resolved = resolve_bundle(cfg.teacher)  # once: the bundle recorded is the one that labelled
        for task in ("moderation", "querycorr"):
            indices = [i for i, r in enumerate(rows) if (r["task"] == "moderation") == (task == "moderation")]
            if indices:
                name = "moderation" if task == "moderation" else "matching"
                probs = teacher_probabilities(resolved, name, [rows[i]["fields"] for i in indices])
                for i, p in zip(indices, probs, strict=True):
                    soft[i] = p.tolist()
        counts["teacher_labeled_notes"] = len(notes)
        teacher = {"name": resolved.name, "version": resolved.version, "digest": resolved.digest}
        log.info(
            "sft: teacher %s (%s %s) labelled %d rows (%d unlabeled notes)",
            cfg.teacher,
            resolved.name,
            resolved.version,
            len(rows),
            len(notes),
        )
    specs = task_specs(tokenizer, config)
    items = encode_rows(tokenizer, specs, rows, soft)
    log.info("sft: %d prefix-LM scoring examples: %s", len(items), counts)
    summary = train_scoring(model, items, specs, cfg, seed=config.seed)
    summary = {**summary, "examples": len(items), "tasks": counts, "teacher": cfg.teacher}
    if soft is not None:
        summary["teacher_bundle"] = teacher
    if is_main_process():
        save_prefix_lm(model, tokenizer, out / "model", lineage_from=start)
    log.info("sft: %s", summary)
    mark_done(config, "sft", summary)
    return out / "model"
