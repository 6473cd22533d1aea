"""`redone train all`: data → tokenizer → model from config → fine-tune → export → evaluate → bundle."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

from redone_sdk.bundle.manifest import DataSource
from redone_sdk.inference.encoding import PromptEncoder
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.datasets import (
    DATA_SOURCES,
    Example,
    default_data_dir,
    harm_examples,
    platform_texts,
    querycorr_examples,
)
from redone_sdk.training.evaluate import evaluate_bundle
from redone_sdk.training.export import export_scoring_graph, quantize_int8, write_bundle
from redone_sdk.training.finetune import encode_examples, finetune
from redone_sdk.training.model import build_model
from redone_sdk.training.tasks import PAD_TOKEN, answer_tokens, build_task_specs
from redone_sdk.training.tokenizer import special_tokens, train_tokenizer

__all__ = ["load_data", "run_all"]

log = logging.getLogger(__name__)


def load_data(config: PipelineConfig) -> tuple[list[Example], dict[str, list[Example]]]:
    """Mixed, shuffled training examples and the dev sets by name (`cold_dev`, …)."""
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    rng = random.Random(config.seed)
    train: list[Example] = []
    dev: dict[str, list[Example]] = {}
    for source in config.harm_sources:
        train += harm_examples(data_dir, source, "train")
        dev[f"{source}_dev"] = harm_examples(data_dir, source, "dev")
    if config.matching:
        train += querycorr_examples(data_dir, "train") * config.matching_upsample
        dev["querycorr_dev"] = querycorr_examples(data_dir, "dev")
    rng.shuffle(train)
    if config.max_train_examples:
        train = train[: config.max_train_examples]
    if config.max_eval_examples:
        dev = {k: rng.sample(v, min(len(v), config.max_eval_examples)) for k, v in dev.items()}
    counts: dict[str, int] = {}
    for example in train:
        counts[f"{example.source}/{example.label}"] = counts.get(f"{example.source}/{example.label}", 0) + 1
    log.info("training examples by source/label: %s", json.dumps(dict(sorted(counts.items()))))
    return train, dev


def run_all(config: PipelineConfig) -> Path:
    """Build a bundle from the shared data; returns the bundle directory (`<output_dir>/bundle`)."""
    import torch

    started = time.monotonic()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")
    train, dev = load_data(config)

    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    corpus = platform_texts(data_dir)
    if config.max_train_examples:
        corpus = corpus[: config.max_train_examples * 5]
    tokenizer = train_tokenizer(corpus, config.vocab_size, out / "tokenizer.json")
    token_ids = {t: tokenizer.token_to_id(t) for t in special_tokens()}
    pad_id = token_ids[PAD_TOKEN]
    tasks = build_task_specs(
        token_ids, moderation_max_length=config.moderation_max_length, matching_max_length=config.matching_max_length
    )
    encoders = {name: PromptEncoder(tokenizer, spec, special_tokens()) for name, spec in tasks.items()}
    encoded = encode_examples(train, encoders, token_ids)
    log.info("%d training prompts, mean %.1f tokens", len(encoded), sum(len(e.ids) for e in encoded) / len(encoded))

    model = build_model(config, tokenizer.get_vocab_size(), pad_id)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("model: Qwen2, %d parameters", parameters)
    losses = finetune(model, encoded, config, pad_id)
    (out / "train_log.json").write_text(json.dumps({"loss": losses}) + "\n", encoding="utf-8")
    checkpoint = out / "checkpoint"
    model.save_pretrained(checkpoint, safe_serialization=True)
    shutil.copyfile(out / "tokenizer.json", checkpoint / "tokenizer.json")

    label_ids = [token_ids[t] for t in answer_tokens()]
    max_len = max(config.moderation_max_length, config.matching_max_length)
    fp32 = export_scoring_graph(
        model, label_ids, out / "graphs" / "scoring.fp32.onnx", max_length=max_len, opset=config.opset
    )
    int8 = quantize_int8(fp32, out / "graphs" / "scoring.int8.onnx")
    del model
    torch.set_num_threads(torch.get_num_threads())

    used = [*config.harm_sources, *(["sns-bench"] if config.matching else [])]
    sources = [DataSource(name=DATA_SOURCES[s][0], license=DATA_SOURCES[s][1]) for s in used]
    non_commercial = "sns-bench" in used
    license = (
        "CC BY-NC-SA 4.0 (trained on SNS-Bench: non-commercial use only, derivatives under the same license)"
        if non_commercial
        else "Apache-2.0"
    )
    common = {
        "version": config.bundle_version,
        "description": "Small Qwen2-architecture model trained from scratch by redone-sdk's pipeline: "
        "harm taxonomy (safe/offensive/hate/sexism) and SNS-Bench query-note relevance.",
        "license": license,
        "tokenizer_file": out / "tokenizer.json",
        "pad_token_id": pad_id,
        "special_tokens": special_tokens(),
        "tasks": tasks,
        "label_token_ids": label_ids,
        "data_sources": sources,
        "training_config": json.loads(config.to_json()),
        "architecture": "Qwen2ForCausalLM",
        "parameters": parameters,
    }
    full = write_bundle(
        out / "bundle-full",
        name=config.bundle_name,
        graphs={"fp32": (fp32, config.opset), "int8": (int8, config.opset)},
        metrics={},
        checkpoint_dir=checkpoint,
        **common,
    )
    metrics: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "int8"):
        for set_name, values in evaluate_bundle(full.path, dev, precision=precision).items():
            metrics[f"{precision}/{set_name}"] = values
    metrics["training"] = {
        "examples": float(len(encoded)),
        "steps": float(len(losses)),
        "final_loss": float(sum(losses[-50:]) / len(losses[-50:])),
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "eval.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shipped = {"int8": ["int8"], "fp32": ["fp32"], "both": ["fp32", "int8"]}[config.ship_precision]
    bundle = write_bundle(
        out / "bundle",
        name=config.bundle_name,
        graphs={p: {"fp32": (fp32, config.opset), "int8": (int8, config.opset)}[p] for p in shipped},
        metrics=metrics,
        checkpoint_dir=checkpoint if config.keep_checkpoint else None,
        **common,
    )
    log.info("bundle written to %s in %.0f s", bundle.path, time.monotonic() - started)
    return bundle.path
