"""Stage 4 — preference optimization: DPO (trl) on pairs mined from the SFT model's own mistakes.

For a sample of training examples the SFT model answers (one forward pass for scoring tasks, greedy decoding
for generative ones); every wrong answer gives a pair: chosen = the gold answer, rejected = what the model said.
Configured extra pairs (`dpo.extra_pairs`, JSON lines of {prompt, chosen, rejected}) are added, and so are the
review console's pairs (`dpo.feedback`, a `redone train feedback` folder: chosen = the reviewers' label, rejected
= the model's), each `dpo.feedback_repeat` times, encoded as the bundle's moderation prompt.
A prefix-LM config (`model.pretrained`) runs `training/prefix_lm_dpo.py` instead (the same pairs, its own loss).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.config import DPOStageConfig, PipelineConfig
from redone_sdk.training.generation import generate_answers, predict_labels
from redone_sdk.training.model import inference_device, save_model
from redone_sdk.training.stages.common import (
    is_main_process,
    log,
    mark_done,
    read_jsonl,
    start_model,
    train_and_save,
    trainer_arguments,
    write_jsonl,
)
from redone_sdk.training.stages.data import distinct, training_mixture
from redone_sdk.training.tasks import END_TOKEN, answer_token
from redone_sdk.training.tokenizer import chat_prompt

__all__ = ["average_with", "feedback_pairs", "loss_arguments", "mine_pairs", "run"]


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def mine_pairs(model: Any, codec: ChatCodec, config: PipelineConfig) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Preference pairs from the model's wrong answers on training examples; also returns counts per task."""
    rng = random.Random(config.seed + 1)
    cfg = config.dpo
    scoring, generative, _ = training_mixture(config)
    scoring, generative = distinct(scoring), distinct(generative)
    n_generative = min(cfg.mine_generative, len(generative))
    n_scoring = min(len(scoring), max(0, cfg.mine_examples - n_generative))
    pairs: list[dict[str, str]] = []
    stats: dict[str, int] = {}
    for task in ("moderation", "matching"):
        rows = [r for r in rng.sample(scoring, n_scoring) if r["task"] == task]
        if not rows:
            continue
        predicted = predict_labels(model, codec, task, [r["fields"] for r in rows])
        prompts = codec.scoring_prompts(task, [r["fields"] for r in rows])
        wrong = 0
        for row, guess, prompt_ids in zip(rows, predicted, prompts, strict=True):
            if guess == row["label"]:
                continue
            wrong += 1
            pairs.append(
                {
                    "prompt": codec.tokenizer.decode(prompt_ids, skip_special_tokens=False),
                    "chosen": answer_token(row["label"]) + END_TOKEN,
                    "rejected": answer_token(guess) + END_TOKEN,
                }
            )
        stats[f"{task}/checked"], stats[f"{task}/wrong"] = len(rows), wrong
    if n_generative:
        rows = rng.sample(generative, n_generative)
        answers = generate_answers(model, codec, [r["prompt"] for r in rows], max_new_tokens=48)
        wrong = 0
        for row, said in zip(rows, answers, strict=True):
            if _normalize(said) == _normalize(row["answer"]):
                continue
            wrong += 1
            pairs.append(
                {
                    "prompt": chat_prompt(row["prompt"]),
                    "chosen": row["answer"] + END_TOKEN,
                    "rejected": said + END_TOKEN,
                }
            )
        stats["generative/checked"], stats["generative/wrong"] = len(rows), wrong
    if cfg.extra_pairs:
        for row in read_jsonl(Path(cfg.extra_pairs)):
            pairs.append(
                {
                    "prompt": chat_prompt(row["prompt"]),
                    "chosen": row["chosen"] + END_TOKEN,
                    "rejected": row["rejected"] + END_TOKEN,
                }
            )
        stats["extra"] = len(pairs) - sum(v for k, v in stats.items() if k.endswith("/wrong"))
    rng.shuffle(pairs)
    return pairs[: cfg.max_pairs], stats


def feedback_pairs(
    codec: ChatCodec, config: PipelineConfig, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The reviewers' pairs (`rows` of a feedback folder's dpo.jsonl) as moderation prompts (the tokens the bundle
    scores), each repeated `dpo.feedback_repeat` times; pairs naming a label the model has no answer token for are
    skipped (counted)."""
    cfg = config.dpo
    known = set(codec.tasks["moderation"].label_names)
    usable = [r for r in rows if r["task"] == "moderation" and {r["chosen"], r["rejected"]} <= known]
    prompts = codec.scoring_prompts("moderation", [{"text": r["text"]} for r in usable])
    pairs = [
        {
            "prompt": codec.tokenizer.decode(prompt_ids, skip_special_tokens=False),
            "chosen": answer_token(row["chosen"]) + END_TOKEN,
            "rejected": answer_token(row["rejected"]) + END_TOKEN,
        }
        for row, prompt_ids in zip(usable, prompts, strict=True)
    ]
    stats = {"feedback/pairs": len(pairs), "feedback/skipped": len(rows) - len(usable)}
    return [pair for pair in pairs for _ in range(cfg.feedback_repeat)], stats


def loss_arguments(cfg: DPOStageConfig) -> dict[str, Any]:
    """trl `DPOConfig` loss options: the sigmoid DPO loss, plus an NLL term on the chosen answers when
    `sft_weight` is set (RPO)."""
    if cfg.sft_weight > 0:
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]}
    return {"loss_type": ["sigmoid"]}


def average_with(model: Any, start: Path, share: float) -> Any:
    """Move `model`'s weights toward the checkpoint at `start` in place: (1 - share) * model + share * start."""
    import torch

    from redone_sdk.training.model import load_model

    if share <= 0:
        return model
    reference = dict(load_model(start).named_parameters())
    with torch.no_grad():
        for name, weight in model.named_parameters():  # tied weights appear once
            weight.lerp_(reference[name].to(weight.device, weight.dtype), share)
    log.info("dpo: weights averaged with %s (share %.2f)", start, share)
    return model


def run(config: PipelineConfig) -> Path:
    from redone_sdk.training.stages.init import check_supported

    check_supported(config)
    if config.model.pretrained:  # a BERT prefix-LM: one-token scoring answers, its own thin trainer
        from redone_sdk.training.prefix_lm_dpo import run as run_prefix_lm

        return run_prefix_lm(config)
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    reviewed_rows = None
    if config.dpo.feedback:  # a bad folder fails now, not after mining
        from redone_sdk.training.feedback import read_feedback

        reviewed_rows = read_feedback(config.dpo.feedback, "dpo.jsonl")
    out, start, tokenizer, model = start_model(config, "dpo")
    model.to(inference_device())  # mining is inference: on the GPU when there is one; the trainer keeps it there
    codec = ChatCodec(start, config)
    pairs, stats = mine_pairs(model, codec, config)
    log.info("dpo: %d pairs mined: %s", len(pairs), stats)
    if reviewed_rows is not None:
        reviewed, feedback_stats = feedback_pairs(codec, config, reviewed_rows)
        stats.update(feedback_stats)
        pairs = pairs + reviewed
        random.Random(config.seed + 2).shuffle(pairs)
        log.info("dpo: reviewer pairs %s (each x%d)", feedback_stats, config.dpo.feedback_repeat)
    if is_main_process():
        write_jsonl(out / "pairs.jsonl", pairs)
    if not pairs:
        log.warning("dpo: the SFT model made no mistakes on the mined sample; keeping the SFT model unchanged")
        if is_main_process():
            save_model(model, tokenizer, out / "model")
        mark_done(config, "dpo", {"pairs": 0, "mined": stats})
        return out / "model"
    cfg = config.dpo
    args = DPOConfig(
        **trainer_arguments(config, out, cfg),
        beta=cfg.beta,
        **loss_arguments(cfg),
        max_length=cfg.max_length,
        truncation_mode="keep_end",  # keep the answers whole; a long prompt loses its head
    )
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
    )
    path = train_and_save(
        config,
        "dpo",
        trainer,
        tokenizer,
        {"pairs": len(pairs), "mined": stats, "sft_average": cfg.sft_average},
        finalize=lambda trained: average_with(trained, start, cfg.sft_average),
    )
    accuracies = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    log.info("dpo: reward accuracy %s -> %s", accuracies[:1], accuracies[-1:])
    return path
