"""The scoring function shared by the PyTorch backend and the training export: one definition, so a bundle's ONNX
graph and its PyTorch checkpoint compute the same thing.

(input_ids, attention_mask) -> the last layer's hidden state at the last real token times the label rows of
the LM head. A BERT prefix-LM (`BertLMHeadModel`, the pretrained bundles) reads the whole prompt both ways and
its head's transform, tied rows and bias (`build_prefix_lm_scoring_head`). For Llama-style decoders (Qwen2,
Llama, Mistral) the last layer runs its query, attention output and MLP for that one position only (its keys
and values still see every position): the head reads nothing else.
torch is imported on use, so the core imports this module without it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

__all__ = ["build_scoring_head", "build_prefix_lm_scoring_head", "encoder_states"]


def _last_position_layer(backbone: Any) -> Any | None:
    """The backbone's last decoder layer if it has the Llama-style parts `_LastPositionScoringHead` computes by
    hand (q/k/v/o projections, rotary embeddings, two RMS norms, an MLP; no per-head q/k norms), else None."""
    layers = getattr(backbone, "layers", None)
    if layers is None or len(layers) < 2 or not hasattr(backbone, "rotary_emb") or not hasattr(backbone, "norm"):
        return None
    layer = layers[-1]
    attn = getattr(layer, "self_attn", None)
    parts = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "num_key_value_groups", "scaling")
    if attn is None or not all(hasattr(attn, p) for p in parts) or hasattr(attn, "q_norm"):
        return None
    config = getattr(backbone, "config", None)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", False):
        return None
    if not all(hasattr(layer, p) for p in ("input_layernorm", "post_attention_layernorm", "mlp")):
        return None
    return layer


def encoder_states(bert: Any, input_ids: Any, mask: Any) -> Any:
    """A BERT encoder's last hidden states under a (batch, T, T) attention mask, segment ids zero, no cache."""
    import torch

    return bert(
        input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids), use_cache=False
    ).last_hidden_state


def build_prefix_lm_scoring_head(model: Any, label_token_ids: Sequence[int], *, causal: bool = False) -> Any:
    """A BERT prefix-LM as (input_ids, attention_mask) -> label logits at the last real token. The whole input is
    prompt, so each row attends to all its real tokens (a (B, T, T) mask, which `BertLMHeadModel` takes as is);
    the head is the LM head's transform, then the tied rows of the label tokens plus their bias. `causal` puts a
    lower-triangular mask on top instead (the backbone ablation's variant). Shares the model's parameters."""
    import torch

    ids = list(label_token_ids)

    class PrefixLMScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model.bert
            self.transform = model.cls.predictions.transform
            self.decoder = model.cls.predictions.decoder
            self.bias = model.cls.predictions.bias
            self.register_buffer("label_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            batch, width = input_ids.shape
            full = attention_mask[:, None, :].expand(batch, width, width)
            if causal:
                full = full * torch.tril(torch.ones(width, width, dtype=full.dtype, device=full.device))
            states = encoder_states(self.bert, input_ids, full)
            last = attention_mask.sum(dim=1) - 1
            picked = self.transform(states[torch.arange(batch, device=states.device), last])
            rows = self.decoder.weight[self.label_ids]
            return picked @ rows.T + self.bias[self.label_ids]

    return PrefixLMScorer()


def _is_prefix_lm(model: Any) -> bool:
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    return hasattr(model, "bert") and predictions is not None and hasattr(predictions, "transform")


def build_scoring_head(model: Any, label_token_ids: Sequence[int], *, last_position_only: bool = True) -> Any:
    """Wrap a causal LM (or a BERT prefix-LM) as (input_ids, attention_mask) -> logits of the label tokens at the
    last real token.

    Inputs are right-padded. `last_position_only=False` (or a decoder of another shape) runs the whole backbone.
    """
    import torch

    if _is_prefix_lm(model):
        return build_prefix_lm_scoring_head(model, label_token_ids)

    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    rows = model.get_output_embeddings().weight.detach()[list(label_token_ids)].clone()

    class LabelScoringHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.label_rows = torch.nn.Parameter(rows, requires_grad=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            states = hidden.last_hidden_state
            last = attention_mask.sum(dim=1) - 1
            picked = states[torch.arange(states.shape[0], device=states.device), last]
            return picked @ self.label_rows.T

    class LastPositionScoringHead(LabelScoringHead):
        """The same function; the last layer computes only what the last real token's output needs."""

        def __init__(self, layer: Any) -> None:
            super().__init__()
            # The backbone without its last layer and final norm; shares every parameter (not a submodule, so
            # nothing is saved or exported twice).
            trunk = copy.copy(backbone)
            trunk._modules = dict(backbone._modules)
            trunk.layers = torch.nn.ModuleList(list(backbone.layers)[:-1])
            trunk.norm = torch.nn.Identity()
            object.__setattr__(self, "_trunk", trunk)
            object.__setattr__(self, "_last", layer)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            layer, attn = self._last, self._last.self_attn
            states = self._trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            batch, width = input_ids.shape
            rows_idx = torch.arange(batch, device=states.device)
            last = attention_mask.sum(dim=1) - 1
            normed = layer.input_layernorm(states)
            positions = torch.arange(width, device=states.device).unsqueeze(0)
            cos, sin = self.backbone.rotary_emb(normed, positions)  # (1, width, head_dim)
            keys = attn.k_proj(normed).view(batch, width, -1, attn.head_dim).transpose(1, 2)
            values = attn.v_proj(normed).view(batch, width, -1, attn.head_dim).transpose(1, 2)
            keys = keys * cos.unsqueeze(1) + _rotate_half(keys) * sin.unsqueeze(1)
            query = attn.q_proj(normed[rows_idx, last]).view(batch, -1, 1, attn.head_dim)  # (b, heads, 1, dim)
            cos_q, sin_q = cos[0, last].unsqueeze(1).unsqueeze(1), sin[0, last].unsqueeze(1).unsqueeze(1)
            query = query * cos_q + _rotate_half(query) * sin_q
            if attn.num_key_value_groups > 1:
                keys = keys.repeat_interleave(attn.num_key_value_groups, dim=1)
                values = values.repeat_interleave(attn.num_key_value_groups, dim=1)
            scores = (query @ keys.transpose(2, 3)) * attn.scaling  # (b, heads, 1, width)
            padding = (attention_mask == 0).view(batch, 1, 1, width)
            scores = scores.masked_fill(padding, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
            context = (weights @ values).reshape(batch, -1)  # (b, heads * dim)
            hidden = states[rows_idx, last] + attn.o_proj(context)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            return self.backbone.norm(hidden) @ self.label_rows.T

    layer = _last_position_layer(backbone) if last_position_only else None
    return LastPositionScoringHead(layer) if layer is not None else LabelScoringHead()


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
