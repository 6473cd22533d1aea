"""Useful FLOPs of one scoring forward pass, counted from the model's shape and the real (unpadded) token counts.

Counted (multiply-add = 2 FLOPs), per decoder layer and real token: the q/k/v/o projections
(2·h·(h + 2·kv + h), kv = kv_heads·head_dim), the gated MLP (3 · 2·h·i), and causal attention (QKᵀ and
attention·V over the positions a token may see: 2 · 2·heads·head_dim per visible position, so for a prompt of
n tokens 2·heads·head_dim·n(n+1) per layer). The last layer counts only what the label head reads: keys and
values for every token, the query, attention row, output projection and MLP for the last real token (the
SDK's scoring graphs compute just that since bundle 0.2.1; `full_forward_flops` counts every position). Plus
the label head at the last token only (2·h·labels). When the bundle ships a prompt-prefix cache (bundle 0.3.0),
the prefix every prompt of the task starts with is computed once, not per note: its tokens' projections and
MLPs are not counted, while the other tokens' attention still spans the prefix's positions.
A BERT prefix-LM (checkpoint `model_type` "bert": redone-base) has a two-matrix MLP (2 · 2·h·i), attends both
ways (2·heads·head_dim·2n² per layer for n tokens) and its LM head's transform adds 2·h² at the scoring token.
Not counted: embeddings (a gather), norms, rotary, softmax, SiLU (elementwise, < 2 %), padded positions and
the masked half of the attention matrix the kernels compute anyway — so this is the work a perfect kernel
would do, and the rate is the *useful* rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redone_sdk.bundle import Bundle

__all__ = ["ModelShape", "model_shape", "forward_flops", "full_forward_flops", "last_layer_avoidable", "FLOPS_RULE"]

FLOPS_RULE = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    labels: int
    source: str
    mlp_matrices: int = 3  # gated (Qwen2/Llama: gate, up, down); BERT: 2
    bidirectional: bool = False  # BERT prefix-LM scoring: every prompt token sees every other
    head_transform: bool = False  # BERT's LM head: dense h x h before the label rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def per_token_linear(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        mlp = self.mlp_matrices * 2 * h * self.intermediate
        return self.layers * (2 * h * (h + 2 * kv + self.heads * self.head_dim) + mlp)

    def visible_pairs(self, n: int) -> int:
        """Twice the (query, key) pairs attention computes over n tokens: n(n+1) causal, 2n² both ways."""
        return 2 * n * n if self.bidirectional else n * (n + 1)

    def head(self) -> int:
        return 2 * self.hidden * self.labels + (2 * self.hidden * self.hidden if self.head_transform else 0)


def model_shape(bundle: Bundle) -> ModelShape:
    """From `checkpoint/config.json` when the bundle has it, else from the manifest's training config."""
    manifest = bundle.manifest
    labels = len(next(iter(manifest.graphs.values())).label_token_ids) if manifest.graphs else 9
    if manifest.checkpoint and (bundle.path / manifest.checkpoint / "config.json").is_file():
        cfg = json.loads((bundle.path / manifest.checkpoint / "config.json").read_text(encoding="utf-8"))
        heads = cfg["num_attention_heads"]
        bert = cfg.get("model_type") == "bert"
        return ModelShape(
            hidden=cfg["hidden_size"],
            layers=cfg["num_hidden_layers"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate=cfg["intermediate_size"],
            labels=labels,
            source=f"{manifest.checkpoint}/config.json",
            mlp_matrices=2 if bert else 3,
            bidirectional=bert,
            head_transform=bert,
        )
    cfg = manifest.lineage.training_config
    heads = int(cfg["num_heads"])
    return ModelShape(
        hidden=int(cfg["hidden_size"]),
        layers=int(cfg["num_layers"]),
        heads=heads,
        kv_heads=int(cfg.get("num_kv_heads", heads)),
        head_dim=int(cfg["hidden_size"]) // heads,
        intermediate=int(cfg["intermediate_size"]),
        labels=labels,
        source="manifest lineage.training_config",
    )


def full_forward_flops(shape: ModelShape, token_counts: Sequence[int]) -> float:
    """FLOPs of the whole model on every real token (every layer, every position) plus the label head."""
    linear = shape.per_token_linear()
    attention = 2 * shape.heads * shape.head_dim * shape.layers
    return float(sum(linear * n + attention * shape.visible_pairs(n) + shape.head() for n in token_counts))


def _last_layer_avoidable_flops(shape: ModelShape, n: int) -> int:
    h, kv, q = shape.hidden, shape.kv_heads * shape.head_dim, shape.heads * shape.head_dim
    per_layer_linear = shape.per_token_linear() // shape.layers
    kv_linear = 2 * h * 2 * kv
    layer = per_layer_linear * n + 2 * shape.heads * shape.head_dim * shape.visible_pairs(n)
    needed = kv_linear * n + (per_layer_linear - kv_linear) + 4 * q * n
    return layer - needed


def forward_flops(shape: ModelShape, token_counts: Sequence[int], cached_prefix: int = 0) -> float:
    """Useful FLOPs to score prompts of these real lengths whose first `cached_prefix` tokens are cached (see
    the module docstring for what counts)."""
    h, kv, q = shape.hidden, shape.kv_heads * shape.head_dim, shape.heads * shape.head_dim
    per_layer_linear = shape.per_token_linear() // shape.layers
    kv_linear = 2 * h * 2 * kv
    total = 0
    for n in token_counts:
        p = min(cached_prefix, n - 1)
        m = n - p  # tokens the graph computes
        attention = shape.visible_pairs(n) - shape.visible_pairs(p)
        layer = per_layer_linear * m + 2 * shape.heads * shape.head_dim * attention
        last = kv_linear * m + (per_layer_linear - kv_linear) + 4 * q * n
        total += (shape.layers - 1) * layer + last + shape.head()
    return float(total)


def last_layer_avoidable(shape: ModelShape, token_counts: Sequence[int]) -> float:
    """Share of `full_forward_flops` a scoring graph that runs the whole last layer spends on outputs it throws
    away: only the last real token's output is read (the other positions' keys and values are needed)."""
    total = full_forward_flops(shape, token_counts)
    avoidable = sum(_last_layer_avoidable_flops(shape, n) for n in token_counts)
    return avoidable / total if total else 0.0
