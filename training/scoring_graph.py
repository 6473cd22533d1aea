"""The scoring graph of a Llama-style decoder built from its weights with ONNX Runtime's fused CPU operators.

`torch.onnx.export` spells a Qwen2 layer as ~80 small nodes (norms as Pow/Mean/Sqrt, rotary as Slice/Concat,
attention masks as Where/Expand); at hidden size 256 those cost more than the matrix products. Here a layer is
`SkipSimplifiedLayerNormalization` (residual add + RMS norm), `RotaryEmbedding`, ONNX `Attention` (grouped-query,
causal; opset 23) and the projection `MatMul`s, which dynamic int8 quantization turns into ONNX Runtime's
int8 GEMMs; the last layer runs its query, attention row and MLP for the last real token only, as
`build_scoring_head` does. Same function: (input_ids, attention_mask) -> label logits,
inputs right-padded, dynamic batch and length. `supports` says whether a model has that shape; others go through
`torch.onnx.export`.

With `prefix_cache=True` the graph also takes every layer's keys and values of a prompt prefix
(`past_key.<i>`, `past_value.<i>`: (1, kv_heads, prefix, head_dim), the same for every row) and the ids are the
rest of the prompt: every task's template starts with the same instruction for every note, so its keys and
values are computed once (`prefix_cache_arrays`, at export) instead of for every note. A zero-length prefix
gives the plain graph's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["supports", "build_scoring_graph", "prefix_cache_arrays"]

_MS = "com.microsoft"
_MIN_OPSET = 23  # ONNX Attention (grouped-query, causal)
_PAST_KEY, _PAST_VALUE = "past_key.{}", "past_value.{}"


def supports(model: Any) -> str | None:
    """None when `build_scoring_graph` can build `model`'s graph, else why not (for the export log)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in ("qwen2", "llama", "mistral"):
        return f"model type {getattr(config, 'model_type', None)!r} is not qwen2, llama or mistral"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    if getattr(config, "rope_scaling", None):
        return "rope scaling is not supported"
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        return "sliding-window attention is not supported"
    if getattr(config, "num_hidden_layers", 0) < 2:
        return "fewer than two layers"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size or head_dim % 2:
        return "head size does not divide the hidden size evenly"
    if getattr(model.get_decoder().layers[0].mlp, "down_proj", None) is None:
        return "MLP without gate/up/down projections"
    return None


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._named: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def ints(self, *values: int, scalar: bool = False) -> str:
        """An int64 constant (a 1-D list, or a scalar), shared by every node that uses the same value."""
        name = f"i64.{'s' if scalar else 'v'}.{'_'.join(str(v) for v in values)}"
        if name not in self._named:
            self._named.add(name)
            self.const(name, np.array(values[0] if scalar else values, dtype=np.int64))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, *, domain: str = "", **attrs: Any) -> Any:
        from onnx import helper

        self._count += 1
        names = [f"{op_type.lower()}_{self._count}_{i}" for i in range(outputs)]
        node = helper.make_node(op_type, list(inputs), names, name=f"{op_type}_{self._count}", domain=domain, **attrs)
        self.nodes.append(node)
        return names[0] if outputs == 1 else names


def _linear(g: _Graph, x: str, name: str, linear: Any) -> str:
    """x @ W (+ bias) of a torch Linear, its weights stored as float32 initializers `<name>.weight/.bias`."""
    weight = linear.weight.detach().float().cpu().numpy().T  # (in, out): the right-hand side of x @ W
    out = g.op("MatMul", [x, g.const(f"{name}.weight", weight)])
    if linear.bias is None:
        return out
    return g.op("Add", [out, g.const(f"{name}.bias", linear.bias.detach().float().cpu().numpy())])


def prefix_cache_arrays(model: Any, prefixes: dict[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Keys (after rotary) and values of every layer for each named prefix of token ids, as the prefix-cache
    graph takes them: `<name>.ids`, `<name>.key.<i>`, `<name>.value.<i>` ((1, kv_heads, len, head_dim))."""
    import torch

    arrays: dict[str, np.ndarray] = {}
    for name, ids in sorted(prefixes.items()):
        arrays[f"{name}.ids"] = np.array(ids, dtype=np.int64)
        with torch.no_grad():
            cache = model(torch.tensor([list(ids)], dtype=torch.long), use_cache=True).past_key_values
        for index in range(model.config.num_hidden_layers):
            key, value = (
                (cache.layers[index].keys, cache.layers[index].values) if hasattr(cache, "layers") else cache[index]
            )
            arrays[f"{name}.key.{index}"] = key.detach().float().cpu().numpy()
            arrays[f"{name}.value.{index}"] = value.detach().float().cpu().numpy()
    return arrays


def build_scoring_graph(
    model: Any, label_token_ids: Sequence[int], out_file: Path, *, opset: int, prefix_cache: bool = False
) -> Path:
    """Write the fused scoring graph of `model` (see the module docstring) to `out_file`."""
    import onnx
    from onnx import TensorProto, helper

    reason = supports(model)
    if reason is not None:
        raise ValueError(f"cannot build a fused scoring graph: {reason}")
    config = model.config
    backbone = model.get_decoder()
    layers = list(backbone.layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    eps = float(config.rms_norm_eps)
    g = _Graph()

    # Rotary tables as RotaryEmbedding takes them: (positions, head_dim / 2), non-interleaved halves.
    inv_freq = 1.0 / (float(config.rope_theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(config.max_position_embeddings, dtype=np.float64), inv_freq)
    cos_cache = g.const("rotary.cos", np.cos(angles).astype(np.float32))
    sin_cache = g.const("rotary.sin", np.sin(angles).astype(np.float32))

    def rotary(x: str, positions: str, num_heads: int) -> str:
        inputs = [x, positions, cos_cache, sin_cache]
        return g.op("RotaryEmbedding", inputs, domain=_MS, interleaved=0, num_heads=num_heads)

    def norm_weight(module: Any) -> str:
        return g.const(f"norm.{len(g.initializers)}", module.weight.detach().float().cpu().numpy())

    def skip_norm(x: str, residual: str, module: Any) -> tuple[str, str]:
        """(RMSNorm(x + residual), x + residual) in one node."""
        inputs = [x, residual, norm_weight(module)]
        normed, _, _, total = g.op("SkipSimplifiedLayerNormalization", inputs, 4, domain=_MS, epsilon=eps)
        return normed, total

    def mlp(x: str, index: int) -> str:
        m = layers[index].mlp
        gate = _linear(g, x, f"layers.{index}.mlp.gate", m.gate_proj)
        up = _linear(g, x, f"layers.{index}.mlp.up", m.up_proj)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # silu(gate) * up
        return _linear(g, act, f"layers.{index}.mlp.down", m.down_proj)

    ids, mask = "input_ids", "attention_mask"
    shape = g.op("Shape", [ids])
    batch = g.op("Gather", [shape, g.ints(0, scalar=True)], axis=0)
    width = g.op("Gather", [shape, g.ints(1, scalar=True)], axis=0)
    last = g.op("Sub", [g.op("ReduceSum", [mask, g.ints(1)], keepdims=0), g.ints(1)])  # (B,) last real position
    past_names = [(_PAST_KEY.format(i), _PAST_VALUE.format(i)) for i in range(len(layers))] if prefix_cache else []
    if prefix_cache:  # the ids continue the cached prefix: positions start at its length
        start = g.op("Gather", [g.op("Shape", [past_names[0][0]]), g.ints(2)], axis=0)  # (1,)
        batch_kv = g.op(
            "Concat", [g.op("Unsqueeze", [batch, g.ints(0)]), g.ints(kv_heads), start, g.ints(head_dim)], axis=0
        )
        past = [tuple(g.op("Expand", [name, batch_kv]) for name in pair) for pair in past_names]  # (B, kvH, P, D)
    else:
        start = g.ints(0)
    positions = start  # RotaryEmbedding takes the first position: start, start + 1, ... along the sequence

    embed = backbone.embed_tokens.weight.detach().float().cpu().numpy()
    residual = g.op("Gather", [g.const("embed_tokens.weight", embed), ids], axis=0)  # (B, S, H)
    normed = g.op(
        "SimplifiedLayerNormalization", [residual, norm_weight(layers[0].input_layernorm)], axis=-1, epsilon=eps
    )
    for index, layer in enumerate(layers[:-1]):
        attn = layer.self_attn
        q = rotary(_linear(g, normed, f"layers.{index}.attn.q", attn.q_proj), positions, heads)
        k = rotary(_linear(g, normed, f"layers.{index}.attn.k", attn.k_proj), positions, kv_heads)
        v = _linear(g, normed, f"layers.{index}.attn.v", attn.v_proj)
        # Causal attention alone is exact here: inputs are right-padded and only real positions are read. With a
        # cached prefix (past keys and values) the causal mask is aligned to the end, so every row sees the whole
        # prefix; ONNX Runtime's kernel then wants the present keys and values as outputs too.
        inputs, outputs = ([q, k, v, "", *past[index]], 3) if prefix_cache else ([q, k, v], 1)
        context = g.op(
            "Attention",
            inputs,
            outputs,
            is_causal=1,
            q_num_heads=heads,
            kv_num_heads=kv_heads,
            scale=float(attn.scaling),
        )
        if prefix_cache:
            context = context[0]
        out = _linear(g, context, f"layers.{index}.attn.o", attn.o_proj)
        normed, residual = skip_norm(out, residual, layer.post_attention_layernorm)
        normed, residual = skip_norm(mlp(normed, index), residual, layers[index + 1].input_layernorm)

    # Last layer: keys and values for every position, everything else for each row's last real token.
    index, layer = len(layers) - 1, layers[-1]
    attn = layer.self_attn
    batch_1d = g.op("Unsqueeze", [batch, g.ints(0)])

    def with_batch(*dims: int) -> str:
        return g.op("Concat", [batch_1d, g.ints(*dims)], axis=0)

    k = rotary(_linear(g, normed, f"layers.{index}.attn.k", attn.k_proj), positions, kv_heads)
    v = _linear(g, normed, f"layers.{index}.attn.v", attn.v_proj)
    k = g.op("Transpose", [g.op("Reshape", [k, with_batch(-1, kv_heads, head_dim)])], perm=[0, 2, 3, 1])  # B,kvH,D,S
    v = g.op("Transpose", [g.op("Reshape", [v, with_batch(-1, kv_heads, head_dim)])], perm=[0, 2, 1, 3])  # B,kvH,S,D
    key_mask = mask
    if prefix_cache:  # the cached prefix's keys and values come first; the prefix is never padding
        past_k, past_v = past[index]
        k = g.op("Concat", [g.op("Transpose", [past_k], perm=[0, 1, 3, 2]), k], axis=3)
        v = g.op("Concat", [past_v, v], axis=2)
        prefix_ones = g.op("Expand", [g.ints(1), g.op("Concat", [batch_1d, start], axis=0)])
        key_mask = g.op("Concat", [prefix_ones, mask], axis=1)
    # Row b's last token sits at b * S + last[b] of the flattened (B * S, H) states.
    rows_start = g.op("Mul", [g.op("Range", [g.ints(0, scalar=True), batch, g.ints(1, scalar=True)]), width])
    flat_index = g.op("Add", [rows_start, last])
    flat_shape = g.ints(-1, config.hidden_size)
    normed_last = g.op("Gather", [g.op("Reshape", [normed, flat_shape]), flat_index], axis=0)  # (B, H)
    residual_last = g.op("Gather", [g.op("Reshape", [residual, flat_shape]), flat_index], axis=0)
    q = g.op("Unsqueeze", [_linear(g, normed_last, f"layers.{index}.attn.q", attn.q_proj), g.ints(1)])
    q = rotary(
        q, g.op("Unsqueeze", [g.op("Add", [last, start]), g.ints(1)]), heads
    )  # (B, 1, heads * D) at its position
    # (B, kvH, G, D): query head h reads key/value head h // G, as repeat_interleave does in transformers.
    q = g.op("Reshape", [q, with_batch(kv_heads, heads // kv_heads, head_dim)])
    scale = g.const("attn.scale", np.array(attn.scaling, np.float32))
    scores = g.op("Mul", [g.op("MatMul", [q, k]), scale])  # (B, kvH, G, S)
    padding = g.op("Reshape", [g.op("Equal", [key_mask, g.ints(0, scalar=True)]), with_batch(1, 1, -1)])
    lowest = g.const("attn.masked", np.array(np.finfo(np.float32).min, np.float32))
    scores = g.op("Where", [padding, lowest, scores])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # (B, kvH, G, D)
    context = g.op("Reshape", [context, with_batch(heads * head_dim)])
    out = _linear(g, context, f"layers.{index}.attn.o", attn.o_proj)
    normed, residual = skip_norm(out, residual_last, layer.post_attention_layernorm)
    final, _ = skip_norm(mlp(normed, index), residual, backbone.norm)
    rows = model.get_output_embeddings().weight.detach().float().cpu().numpy()[list(label_token_ids)]
    logits = g.op("MatMul", [final, g.const("label_rows", rows.T.copy())])
    g.nodes.append(helper.make_node("Identity", [logits], ["label_logits"], name="output"))

    graph = helper.make_graph(
        g.nodes,
        "redone_scoring",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "sequence"]),
            *(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, kv_heads, "prefix", head_dim])
                for pair in past_names
                for name in pair
            ),
        ],
        [helper.make_tensor_value_info("label_logits", TensorProto.FLOAT, ["batch", len(label_token_ids)])],
        g.initializers,
    )
    opsets = [helper.make_opsetid("", max(opset, _MIN_OPSET)), helper.make_opsetid(_MS, 1)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="redone_sdk.training.scoring_graph")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out_file))
    return out_file
