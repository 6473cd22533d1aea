"""What every stage shares: its folder and completion marker, the tokenizer, trainer arguments, process rank."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.registry import STAGES, model_stages, upstream_sections

__all__ = [
    "StageInputMissing",
    "configure_torch",
    "is_main_process",
    "is_done",
    "mark_done",
    "read_jsonl",
    "stage_dir",
    "trainer_arguments",
    "start_model",
    "train_and_save",
    "write_jsonl",
    "latest_model_dir",
]

log = logging.getLogger("redone_sdk.training")


class StageInputMissing(RuntimeError):
    """A stage was run before the one that makes its input."""


def stage_dir(config: PipelineConfig, name: str) -> Path:
    return Path(config.output_dir) / name


_DATA_STAGE_FIELDS = (
    "data_dir",
    "general_corpus",
    "general_ratio",
    "cpt_max_chars",
    "cold_topic_labels",
    "max_eval_examples",
    "max_input_chars",
)


_LATER_FIELDS = (
    ("model", "pretrained", ""),
    ("model", "pretrained_layers", 0),
    ("data", "cold_topic_labels", False),
    ("data", "fusion_holdout", 0.0),
    ("sft", "class_balance", 0.0),
    ("sft", "teacher", ""),
    ("sft", "distill_weight", 0.7),
    ("sft", "distill_texts", 0),
    ("dpo", "feedback", ""),
    ("dpo", "feedback_repeat", 4),
    ("dpo", "anchor_weight", 0.0),
    ("cpt", "objective", "causal"),
    ("cpt", "mask_share", 0.15),
    ("cpt", "head_warmup_steps", 0),
    ("cpt", "head_warmup_lr", 1e-3),
)


def _fingerprint(config: PipelineConfig, name: str) -> str:
    """Hash of the configuration a stage's output depends on (its own section and those upstream)."""
    full = config.to_dict()
    # fields added later are left out at their defaults, so older runs keep their fingerprint
    for section, later, default in _LATER_FIELDS:
        if full[section][later] == default:
            del full[section][later]
    if name in ("data", "init", "cpt"):  # the mixture fields only matter from sft on
        full["data"] = {k: full["data"][k] for k in _DATA_STAGE_FIELDS if k in full["data"]}
    relevant = {"seed": config.seed, **{section: full[section] for section in upstream_sections(name)}}
    for section, values in relevant.items():
        if isinstance(values, dict) and values.get("enabled") is False:  # a stage switched off
            relevant[section] = {"enabled": False}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def is_done(config: PipelineConfig, name: str) -> bool:
    """True when the stage finished before with the same configuration of itself and what it depends on."""
    marker = stage_dir(config, name) / "DONE.json"
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("fingerprint") == _fingerprint(config, name)


def mark_done(config: PipelineConfig, name: str, summary: dict[str, Any]) -> None:
    if not is_main_process():
        return
    marker = stage_dir(config, name) / "DONE.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps({"fingerprint": _fingerprint(config, name), **summary}, indent=2, sort_keys=True) + "\n"
    )


def latest_model_dir(config: PipelineConfig, upto: str) -> Path:
    """The checkpoint a stage starts from: the last enabled, finished stage before `upto` (at least `init`)."""
    order = list(model_stages())
    candidates = order[: order.index(upto)] if upto in order else order
    for name in reversed(candidates):
        if STAGES[name].enabled(config):
            model_dir = stage_dir(config, name) / "model"
            if not (model_dir / "config.json").is_file():
                raise StageInputMissing(f"stage {name!r} has not produced {model_dir}; run `redone train {name}` first")
            return model_dir
    raise StageInputMissing("no model to start from")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process of a distributed run (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def configure_torch(config: PipelineConfig) -> None:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    # Optimizer moments of a small model drift into denormal floats, which slows CPU training several-fold as
    # a run goes on; flushing them to zero costs nothing measurable (`run_stage` turns it off again).
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)


def trainer_arguments(config: PipelineConfig, out: Path, section: Any) -> dict[str, Any]:
    """Keyword arguments shared by trl's SFTConfig and DPOConfig (both are transformers TrainingArguments),
    from a stage section with epochs, max_steps, batch_size, gradient_accumulation, learning_rate,
    warmup_ratio and weight_decay."""
    import torch

    return {
        "output_dir": str(out / "trainer"),
        "num_train_epochs": section.epochs,
        "max_steps": section.max_steps if section.max_steps > 0 else -1,
        "per_device_train_batch_size": section.batch_size,
        "gradient_accumulation_steps": section.gradient_accumulation,
        "learning_rate": section.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": section.warmup_ratio,
        "weight_decay": section.weight_decay,
        "max_grad_norm": 1.0,
        "logging_steps": 10,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": 200,
        "save_total_limit": 1,
        "report_to": [],
        "seed": config.seed,
        "data_seed": config.seed,
        "dataloader_num_workers": 0,
        "bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "disable_tqdm": False,
    }


def start_model(config: PipelineConfig, stage: str) -> tuple[Path, Path, Any, Any]:
    """(stage folder, the checkpoint it starts from, its tokenizer, its model) for a training stage."""
    from transformers import AutoTokenizer

    from redone_sdk.training.model import load_model

    configure_torch(config)
    start = latest_model_dir(config, stage)
    tokenizer = AutoTokenizer.from_pretrained(str(start), local_files_only=True)
    return stage_dir(config, stage), start, tokenizer, load_model(start)


def train_and_save(
    config: PipelineConfig,
    stage: str,
    trainer: Any,
    tokenizer: Any,
    extra: dict[str, Any],
    finalize: Callable[[Any], Any] | None = None,
) -> Path:
    """Train (resuming from the stage's last checkpoint), save `<stage>/model` and `log.json`, mark done."""
    from redone_sdk.training.model import save_model

    out = stage_dir(config, stage)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(out, _fingerprint(config, stage)))
    model = finalize(trainer.model) if finalize else trainer.model
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    summary = {
        **extra,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(sum(losses[-5:]) / len(losses[-5:])) if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
    if is_main_process():
        save_model(model, tokenizer, out / "model")
        (out / "log.json").write_text(json.dumps(history, indent=1) + "\n")
    log.info("%s: %s", stage, summary)
    mark_done(config, stage, summary)
    return out / "model"


def last_checkpoint(out: Path, fingerprint: str) -> str | None:
    """A Trainer checkpoint to resume from, if an earlier run of this stage with the same configuration stopped
    part-way. Checkpoints of another configuration (say, an earlier learning rate) are removed, never resumed:
    resuming one would skip the training this configuration asks for."""
    import shutil

    from transformers.trainer_utils import get_last_checkpoint

    folder = out / "trainer"
    marker = folder / "CONFIG_FINGERPRINT"
    if folder.is_dir() and (not marker.is_file() or marker.read_text().strip() != fingerprint):
        if is_main_process() and get_last_checkpoint(str(folder)) is not None:
            log.info("%s: removing checkpoints of another configuration from %s", out.name, folder)
        if is_main_process():
            shutil.rmtree(folder)
    barrier()
    if is_main_process():
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint + "\n")
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise StageInputMissing(f"{path} is missing; run `redone train data` first")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
