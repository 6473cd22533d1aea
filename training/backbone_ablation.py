"""`redone train ablation --parts backbone`: the pretrained backbone three ways, on the same data and schedule.

Variants, each from the same converted checkpoint (`init`), trained by `prefix_lm_sft.train_scoring` on the same
scoring rows with the same seed, batches and optimizer, and scored on the same dev sets:
- `prefix_lm`  — the shipped recipe: bidirectional attention over the prompt, the answer read at the last prompt
  position through the LM head tied to the word embeddings (the pipeline's own SFT stage, reused when finished);
- `causal_lm`  — the same LM-head read-out under a causal (lower-triangular) mask: a decoder-only model;
- `classifier` — a plain classifier: bidirectional, the `[CLS]` state through a new dense + tanh + linear head
  (BertForSequenceClassification's), one output per label column.
Only the prefix-LM is exported as a bundle (the SDK's graph); the other two are measured and discarded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.common import log, stage_dir

__all__ = ["BACKBONE_VARIANTS", "BackboneVariant", "build_variant_scorer", "run_backbone_ablation"]

BackboneVariant = Literal["prefix_lm", "causal_lm", "classifier"]
BACKBONE_VARIANTS: tuple[BackboneVariant, ...] = ("prefix_lm", "causal_lm", "classifier")


def build_variant_scorer(model: Any, label_token_ids: list[int], variant: BackboneVariant, *, seed: int = 0) -> Any:
    """(input_ids, attention_mask) right-padded -> logits over every label column, for one ablation variant.
    Shares the model's parameters; the classifier's head is new (normal(0, 0.02) weights, zero biases)."""
    import torch

    from redone_sdk.inference.scoring_head import encoder_states
    from redone_sdk.training.prefix_lm import build_prefix_lm_scorer

    if variant == "prefix_lm":
        return build_prefix_lm_scorer(model, label_token_ids)
    if variant == "causal_lm":
        return build_prefix_lm_scorer(model, label_token_ids, attention="causal")
    if variant == "classifier":
        hidden = model.config.hidden_size
        generator = torch.Generator().manual_seed(seed)

        class ClassifierScorer(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = model.bert
                self.pooler = torch.nn.Linear(hidden, hidden)
                self.dropout = torch.nn.Dropout(model.config.hidden_dropout_prob)
                self.head = torch.nn.Linear(hidden, len(label_token_ids))
                with torch.no_grad():
                    for layer in (self.pooler, self.head):
                        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.02)
                        layer.bias.zero_()

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                batch, width = input_ids.shape
                full = attention_mask[:, None, :].expand(batch, width, width)
                states = encoder_states(self.bert, input_ids, full)
                pooled = torch.tanh(self.pooler(states[:, 0]))
                return self.head(self.dropout(pooled))

        return ClassifierScorer()
    raise ValueError(f"unknown backbone variant {variant!r}; choose from {BACKBONE_VARIANTS}")


def _variant_key(config: PipelineConfig) -> str:
    """What a variant's figures depend on: the data, init and SFT sections and the seed."""
    import hashlib

    data = config.to_dict()
    keep = {k: data[k] for k in ("data", "model", "sft", "seed")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def train_variant(config: PipelineConfig, variant: BackboneVariant) -> dict[str, Any]:
    """Train one non-exported variant from the run's `init` checkpoint on the SFT stage's rows; its dev
    metrics (`evaluate_model`'s layout) and the training summary."""
    from redone_sdk.training.prefix_lm_sft import (
        encode_rows,
        label_token_ids,
        load_prefix_lm,
        task_specs,
        train_scoring,
    )
    from redone_sdk.training.stages.common import configure_torch
    from redone_sdk.training.stages.data import training_mixture
    from redone_sdk.training.stages.evaluate import evaluate_scorer

    configure_torch(config)
    model, tokenizer = load_prefix_lm(stage_dir(config, "init") / "model")
    scoring, _, _ = training_mixture(config)
    specs = task_specs(tokenizer, config)
    items = encode_rows(tokenizer, specs, [dict(r) for r in scoring])
    scorer = build_variant_scorer(model, label_token_ids(specs), variant, seed=config.seed)
    log.info("backbone ablation: training %s on %d examples", variant, len(items))
    summary = train_scoring(model, items, specs, config.sft, seed=config.seed, scorer=scorer)
    metrics = evaluate_scorer(model, tokenizer, config, scorer=scorer)
    return {**metrics, "train": summary}


def run_backbone_ablation(config: PipelineConfig, root: Path) -> dict[str, Any]:
    """Every variant under `root` (`<output_dir>/ablation/backbone`): the prefix-LM through the pipeline's
    stages (reused from `redone train all` when finished with the same configuration), the other two by
    `train_variant`; each variant's metrics.json is kept and reused while the configuration is unchanged."""
    from redone_sdk.training.ablation import ensure_stage, flatten_metrics, reuse_finished, stage_summary
    from redone_sdk.training.stages.evaluate import evaluate_model

    if not config.model.pretrained:
        raise ValueError("the backbone ablation needs a pretrained backbone (model.pretrained)")
    run = config.replace(output_dir=str(root), cpt={"enabled": False}, dpo={"enabled": False})
    pipeline = config.replace(cpt={"enabled": False}, dpo={"enabled": False})
    reused = reuse_finished(pipeline, run, ("data", "init", "sft"))
    for name in ("data", "init"):
        ensure_stage(run, name)
    key = _variant_key(run)
    out: dict[str, Any] = {"reused_from_pipeline_run": reused, "key": key, "variants": {}, "train": {}, "seconds": {}}
    for variant in BACKBONE_VARIANTS:
        cached = root / variant / "metrics.json"
        if cached.is_file() and json.loads(cached.read_text(encoding="utf-8")).get("key") == key:
            result = json.loads(cached.read_text(encoding="utf-8"))
        else:
            begun = time.monotonic()
            if variant == "prefix_lm":
                ensure_stage(run, "sft")
                metrics = evaluate_model(stage_dir(run, "sft") / "model", run)
                metrics["train"] = stage_summary(run, "sft")
            else:
                metrics = train_variant(run, variant)
            result = {**metrics, "key": key, "seconds": round(time.monotonic() - begun, 1)}
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        out["variants"][variant] = flatten_metrics(result)
        out["train"][variant] = result.get("train", {})
        out["seconds"][variant] = result.get("seconds")
    return out


def render_backbone(backbone: dict[str, Any]) -> list[str]:
    """The backbone table's markdown lines (dev macro-F1 per set, harm macro-F1, training steps and loss)."""
    variants = backbone["variants"]
    sets = sorted({k for row in variants.values() for k in row if k.endswith("_dev")})
    header = ["variant", *sets, "harm_macro_f1", "steps", "final loss"]
    lines = [
        "Backbone ablation — one pretrained BERT, the same data, schedule and seed; attention and read-out vary:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant in BACKBONE_VARIANTS:
        if variant not in variants:
            continue
        row, train = variants[variant], backbone["train"].get(variant, {})
        cells = [f"{row[s]:.3f}" if s in row else "—" for s in [*sets, "harm_macro_f1"]]
        loss = f"{train['final_loss']:.3f}" if "final_loss" in train else "—"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {train.get('steps', '—')} | {loss} |")
    return [*lines, ""]
