"""A fast, small scoring graph for the BERT prefix-LM (training/prefix_lm.py): ONNX Runtime's fused BERT operators
in fp32, and a dynamic int8 of it whose word embedding is int8 too.

`export_bert_scoring_graph` exports the function of `prefix_lm.build_prefix_lm_scorer` — (input_ids,
attention_mask) right-padded -> the label tokens' logits at the last real token — as a module ONNX Runtime's
transformer optimizer recognises: a plain bidirectional `BertModel` (`is_decoder=False`, eager attention) sharing
the prefix-LM's weights and called with the 2-D padding mask (on a prompt-only input the prefix-LM mask is exactly
that), the last real token's state picked by one Gather, the LM head's transform, and a product with the label
tokens' rows only (not the 21,128-row vocabulary). By default the last layer runs on the picked token alone (its
keys and values still over the whole prompt). The legacy TorchScript exporter (`dynamo=False`) gives the pattern
the optimizer fuses (the dynamo exporter's graph gets neither Attention nor EmbedLayerNormalization); then
`onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` makes EmbedLayerNormalization, Attention,
BiasGelu and SkipLayerNormalization. The fused nodes are renamed after their layer
(`/bert/encoder/layer.<i>/attention/Attention`, `EMBEDDING_NODE`), and each SkipLayerNormalization is written back
as Sum + LayerNormalization, which ONNX Runtime's CPU provider runs about 3.5 times faster (`_split_skip_layer_norm`).

`quantize_bert_int8` quantizes the encoder's Attention and MatMul weights (int8, per channel) and the word
embedding (int8 rows with one scale per row), which leaves the file at about a quarter of the fp32 one;
activations are quantized on the fly with a scale per row (token), so a note's scores do not depend on its batch
mates (training/row_scales.py). The
attention mask is read as each row's length (ONNX Runtime's `MaskIndexEnd`, the optimizer's choice for BERT), so
the graph expects right padding. The SDK pads that way, and the last-token pick assumes it anyway.
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BertGraphError",
    "EMBEDDING_NODE",
    "WORD_EMBEDDING_NODE",
    "bert_fusion_statistics",
    "bert_int8_fallbacks",
    "bert_layer_nodes",
    "build_bert_scoring_module",
    "export_bert_scoring_graph",
    "quantize_bert_int8",
]

_log = logging.getLogger(__name__)

EMBEDDING_NODE = "/bert/embeddings/EmbedLayerNormalization"
# A one-layer graph scored at the last token has no fused Attention, so the optimizer leaves its embedding unfused:
# the word embedding is then this plain Gather (the int8 rows and the fallback ladder's embedding rung use it).
WORD_EMBEDDING_NODE = "/bert/embeddings/word_embeddings/Gather"
_LAYER = re.compile(r"^/bert/encoder/layer\.(\d+)/")
# Fused operators every layer over all tokens must have (besides its Attention).
_PER_LAYER = {"BiasGelu": 1, "SkipLayerNormalization": 2}


class BertGraphError(RuntimeError):
    """The BERT scoring graph could not be built as expected (a fusion missing, a node not found)."""


def build_bert_scoring_module(model: Any, label_token_ids: Sequence[int], *, last_token_only: bool = True) -> Any:
    """The function of `prefix_lm.build_prefix_lm_scorer(model, label_token_ids)` as a module ONNX Runtime's BERT
    optimizer fuses: a `BertModel` with `is_decoder=False` and eager attention on the same weights (shared, not
    copied), the 2-D mask, a Gather of the last real token, the LM head's transform, the label rows and bias.

    `last_token_only`: the last encoder layer runs on the picked token alone (its query, attention output and
    feed-forward for one row per prompt; keys and values over the whole prompt), the rest being unread: the same
    function, a quarter of a 4-layer model's work less."""
    import math

    import torch
    from transformers import BertModel
    from transformers.models.bert.modeling_bert import BertSelfAttention

    ids = [int(i) for i in label_token_ids]
    config = copy.deepcopy(model.config)
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise BertGraphError(f"position embeddings {config.position_embedding_type!r}: only 'absolute' is exported")
    config.is_decoder = False
    config.add_cross_attention = False
    config.use_cache = False
    config._attn_implementation = "eager"
    with torch.device("meta"):
        bert = BertModel(config, add_pooling_layer=False)
    bert.load_state_dict(model.bert.state_dict(), strict=True, assign=True)
    for name, buffer in model.bert.named_buffers():  # position ids, token type ids: not in the state dict
        owner, _, attr = name.rpartition(".")
        bert.get_submodule(owner).register_buffer(attr, buffer, persistent=False)
    if any(t.is_meta for t in (*bert.parameters(), *bert.buffers())):
        raise BertGraphError("the encoder view has tensors left unset")
    if any(type(layer.attention.self) is not BertSelfAttention for layer in bert.encoder.layer):
        raise BertGraphError("the encoder view does not use eager attention")
    predictions = model.cls.predictions
    rows = predictions.decoder.weight.detach()[ids]  # (labels, hidden): the tied word-embedding rows
    bias = predictions.bias.detach()[ids]

    def pick(states: Any, attention_mask: Any) -> Any:
        """Each row's last real token's state (right padding): one Gather on the flattened states."""
        batch, width, hidden = states.shape
        last = attention_mask.sum(dim=1) - 1
        flat = torch.arange(batch, device=states.device) * width + last
        return states.reshape(-1, hidden).index_select(0, flat)

    # The last-token encoder mirrors BertModel's module names (bert.embeddings, bert.encoder.layer.<i>.attention.
    # self.query, ...) so that the exported nodes are named after their layer as in the full one.
    class LastTokenSelfAttention(torch.nn.Module):
        def __init__(self, attention: Any) -> None:
            super().__init__()
            self.query, self.key, self.value = attention.query, attention.key, attention.value
            self.heads, self.size = attention.num_attention_heads, attention.attention_head_size

        def forward(self, states: Any, picked: Any, mask: Any) -> Any:
            batch, width = states.shape[:2]
            query = self.query(picked).view(batch, 1, self.heads, self.size).transpose(1, 2)
            key = self.key(states).view(batch, width, self.heads, self.size).transpose(1, 2)
            value = self.value(states).view(batch, width, self.heads, self.size).transpose(1, 2)
            scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.size) + mask
            context = torch.matmul(scores.softmax(dim=-1), value)
            return context.transpose(1, 2).reshape(batch, 1, self.heads * self.size)

    class LastTokenAttention(torch.nn.Module):
        def __init__(self, attention: Any) -> None:
            super().__init__()
            self.self = LastTokenSelfAttention(attention.self)
            self.output = attention.output

        def forward(self, states: Any, picked: Any, mask: Any) -> Any:
            return self.output(self.self(states, picked, mask), picked)

    class LastTokenLayer(torch.nn.Module):
        def __init__(self, layer: Any) -> None:
            super().__init__()
            self.attention = LastTokenAttention(layer.attention)
            self.intermediate, self.output = layer.intermediate, layer.output

        def forward(self, states: Any, picked: Any, mask: Any) -> Any:
            attended = self.attention(states, picked, mask)
            return self.output(self.intermediate(attended), attended)

    class LastTokenEncoder(torch.nn.Module):
        def __init__(self, layers: Any) -> None:
            super().__init__()
            *lower, top = layers
            self.layer = torch.nn.ModuleList([*lower, LastTokenLayer(top)])

        def forward(self, states: Any, mask: Any, attention_mask: Any) -> Any:
            *lower, top = self.layer
            for layer in lower:
                states = layer(states, attention_mask=mask)[0]
            return top(states, pick(states, attention_mask).unsqueeze(1), mask).squeeze(1)

    class LastTokenBert(torch.nn.Module):
        """(input_ids, attention_mask) -> the last real token's final state (batch, hidden)."""

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = bert.embeddings
            self.encoder = LastTokenEncoder(bert.encoder.layer)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            states = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            mask = bert.get_extended_attention_mask(attention_mask, input_ids.shape)  # (batch, 1, 1, T) additive
            return self.encoder(states, mask, attention_mask)

    class BertScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = LastTokenBert() if last_token_only else bert
            self.transform = predictions.transform
            self.register_buffer("label_rows", rows.T.contiguous().clone(), persistent=False)  # (hidden, labels)
            self.register_buffer("label_bias", bias.clone(), persistent=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            if last_token_only:
                picked = self.bert(input_ids, attention_mask)
            else:
                states = self.bert(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
                ).last_hidden_state
                picked = pick(states, attention_mask)
            return self.transform(picked) @ self.label_rows + self.label_bias

    return BertScorer().eval()


def _export_torchscript(module: Any, out_file: Path, *, opset: int, example_token_id: int) -> None:
    """Legacy (TorchScript) `torch.onnx.export`, dynamic batch and length; example: 2 rows, the second padded."""
    import torch

    example = (torch.full((2, 8), example_token_id, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    example[1][1, 6:] = 0
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            module,
            example,
            str(out_file),
            input_names=["input_ids", "attention_mask"],
            output_names=["label_logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "label_logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _consumers(graph: Any) -> dict[str, list[Any]]:
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _layer_of(node: Any, consumers: dict[str, list[Any]]) -> int | None:
    """The encoder layer of a fused node, from the MatMul that reads its output (named after its layer)."""
    for output in node.output:
        for consumer in consumers.get(output, []):
            match = _LAYER.match(consumer.name)
            if match:
                return int(match.group(1))
    return None


def _rename_fused(graph: Any) -> None:
    """Give the fused Attention and EmbedLayerNormalization nodes names after their layer (the optimizer names
    them `Attention_<k>` in fusion order)."""
    consumers = _consumers(graph)
    for node in graph.node:
        if node.op_type == "EmbedLayerNormalization":
            node.name = EMBEDDING_NODE
        elif node.op_type == "Attention":
            layer = _layer_of(node, consumers)
            if layer is None:
                raise BertGraphError(f"cannot tell the layer of {node.name}")
            node.name = f"/bert/encoder/layer.{layer}/attention/Attention"


def _split_skip_layer_norm(graph: Any) -> int:
    """Write every SkipLayerNormalization (residual + bias + LayerNorm) as Sum + LayerNormalization, in place;
    returns how many. ONNX Runtime's CPU SkipLayerNormalization kernel is a scalar loop, about 3.5x slower than
    Sum + the MLAS LayerNormalization (1.32, [32, 80, 512] float32), and its session optimizer fuses Add +
    LayerNormalization back (SkipLayerNormFusion) but not Sum. The nodes are named after the LayerNorm they
    compute (from the output's name: `/bert/encoder/layer.<i>/attention/output/LayerNorm/...`)."""
    from onnx import helper

    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    done = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "SkipLayerNormalization":
            continue
        extra = [o for o in node.output[1:] if o and (consumers.get(o) or o in graph_outputs)]
        if extra:
            continue  # mean, inverse std or the sum is read: leave the node fused
        inputs = list(node.input) + [""] * (5 - len(node.input))
        x, skip, gamma, beta, bias = inputs[:5]
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        output = node.output[0]
        stem = output.rsplit("/", 1)[0] if output.startswith("/") else f"/{node.name}"
        summed = f"{stem}/residual_sum"
        new = [
            helper.make_node("Sum", [t for t in (x, skip, bias) if t], [summed], f"{stem}/Sum"),
            helper.make_node(
                "LayerNormalization",
                [summed, gamma, *([beta] if beta else [])],
                [output],
                f"{stem}/LayerNormalization",
                axis=-1,
                epsilon=float(epsilon),
            ),
        ]
        del graph.node[index]
        for offset, added in enumerate(new):
            graph.node.insert(index + offset, added)
        done += 1
    return done


def bert_fusion_statistics(graph_file: Path) -> dict[str, int]:
    """Counts of the fused and quantized operators in a graph file (zero counts left out)."""
    from collections import Counter

    import onnx

    model = onnx.load(str(graph_file), load_external_data=False)
    kinds = {
        "EmbedLayerNormalization",
        "Attention",
        "MultiHeadAttention",
        "BiasGelu",
        "FastGelu",
        "Gelu",
        "SkipLayerNormalization",
        "LayerNormalization",
        "QAttention",
        "QEmbedLayerNormalization",
        "MatMulInteger",
        "DynamicQuantizeLinear",
    }
    return dict(sorted(Counter(n.op_type for n in model.graph.node if n.op_type in kinds).items()))


def export_bert_scoring_graph(
    model: Any,
    label_token_ids: Sequence[int],
    out_file: Path,
    *,
    opset: int = 17,
    last_token_only: bool = True,
    split_skip_layer_norm: bool = True,
    example_token_id: int = 672,
) -> Path:
    """Export `build_bert_scoring_module(model, label_token_ids)` (inputs input_ids, attention_mask: int64,
    dynamic batch and length, right-padded; output label_logits: float32 [batch, labels]) and save it to
    `out_file` fused by ONNX Runtime's BERT optimizer (Python fusions only, `opt_level=0`: the graph stays
    provider-neutral; the session applies its own optimizations at load). `split_skip_layer_norm` then writes
    the fused SkipLayerNormalizations as Sum + LayerNormalization (`_split_skip_layer_norm`: faster on CPU).

    Raises `BertGraphError` when a fully computed layer lacks its Attention, BiasGelu or SkipLayerNormalization
    fusions or the embedding is not fused (a changed exporter or optimizer would silently give a slow graph)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.config
    layers = int(config.num_hidden_layers)
    full = layers - 1 if last_token_only else layers  # layers over every token (the Attention fusion's pattern)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    module = build_bert_scoring_module(model, label_token_ids, last_token_only=last_token_only)
    for noisy in ("onnxruntime.transformers", "onnx_model", "fusion_base", "onnx_model_bert", "fusion_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bert-graph.") as work:
        raw = Path(work) / "raw.onnx"
        _export_torchscript(module, raw, opset=opset, example_token_id=example_token_id)
        optimizer = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=0,
        )
    counts = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if v}
    _log.info("BERT scoring graph: %d layers (%d over every token), fusions %s", layers, full, counts)
    missing = [
        f"{op} ({counts.get(op, 0)} for {n * full})" for op, n in _PER_LAYER.items() if counts.get(op, 0) < n * full
    ]
    if full and counts.get("EmbedLayerNormalization", 0) != 1:
        missing.append("EmbedLayerNormalization")
    if counts.get("Attention", 0) != full:
        missing.append(f"Attention ({counts.get('Attention', 0)} for {full})")
    if missing:
        raise BertGraphError(f"the optimizer did not fuse: {', '.join(sorted(set(missing)))}")
    model_proto = optimizer.model
    if not full and WORD_EMBEDDING_NODE not in {n.name for n in model_proto.graph.node}:
        raise BertGraphError(f"the one-layer graph has no word-embedding Gather {WORD_EMBEDDING_NODE!r}")
    _rename_fused(model_proto.graph)
    if split_skip_layer_norm:
        split = _split_skip_layer_norm(model_proto.graph)
        _log.info("BERT scoring graph: %d SkipLayerNormalization written as Sum + LayerNormalization", split)
    domains = {o.domain for o in model_proto.opset_import}
    for domain in sorted({n.domain for n in model_proto.graph.node if n.domain} - domains):
        model_proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))  # com.microsoft: fused operators
    onnx.checker.check_model(model_proto)
    onnx.save_model(model_proto, str(out_file))
    return out_file


def bert_layer_nodes(graph: Path | Any) -> dict[str, tuple[str, ...]]:
    """The quantizable nodes of the fused graph (a file or a loaded `ModelProto`) by part: `embeddings` (the
    EmbedLayerNormalization, or a one-layer graph's word-embedding Gather) and `layer<i>` (its Attention and
    weight MatMuls), in graph order."""
    import onnx

    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    parts: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "EmbedLayerNormalization" or (node.op_type == "Gather" and node.name == WORD_EMBEDDING_NODE):
            parts.setdefault("embeddings", []).append(node.name)
        elif node.op_type == "Attention" or (node.op_type == "MatMul" and node.input[1] in weights):
            match = _LAYER.match(node.name)
            if match:
                parts.setdefault(f"layer{int(match.group(1))}", []).append(node.name)
    return {part: tuple(names) for part, names in parts.items()}


def bert_int8_fallbacks(fp32_file: Path) -> list[tuple[str, ...]]:
    """Node names kept in float32, tried in order until int8 is within tolerance (as `training.export.
    int8_fallbacks` for the Qwen2 graph): none, then the embedding, then the embedding and the first layer, then
    the embedding and the first and last layers."""
    parts = bert_layer_nodes(Path(fp32_file))
    embedding = parts.get("embeddings", ())
    layers = sorted(int(p[5:]) for p in parts if p.startswith("layer"))
    ladder: list[tuple[str, ...]] = [()]
    if embedding:
        ladder.append(embedding)
    if layers:
        first, last = parts[f"layer{layers[0]}"], parts[f"layer{layers[-1]}"]
        ladder.append((*embedding, *first))
        if layers[-1] != layers[0]:
            ladder.append((*embedding, *first, *last))
    return ladder


def _int8_word_rows(model: Any, node: Any, word: str, ids: str, prefix: str, out: str) -> list[Any]:
    """Swap the float word-embedding table `word` (read by `node` alone) for int8 rows with one scale per row
    (symmetric) and return the nodes that compute `out` = its rows for `ids`: Gather of the int8 rows, Cast, Mul by
    the gathered scales."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    if word not in initializers:
        raise BertGraphError(f"{node.name}: the word embedding {word!r} is not a constant")
    if any(word in n.input for n in graph.node if n is not node):
        raise BertGraphError(f"{node.name}: the word embedding {word!r} is read by other nodes too")
    table = numpy_helper.to_array(initializers[word]).astype(np.float32)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    graph.initializer.remove(initializers[word])
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, f"{prefix}/word_int8"),
            numpy_helper.from_array(scale.astype(np.float32), f"{prefix}/word_scale"),
        ]
    )
    return [
        helper.make_node("Gather", [f"{prefix}/word_int8", ids], [f"{prefix}/rows_int8"], f"{prefix}/GatherWordInt8"),
        helper.make_node(
            "Cast", [f"{prefix}/rows_int8"], [f"{prefix}/rows_float"], f"{prefix}/CastWord", to=TensorProto.FLOAT
        ),
        helper.make_node(
            "Gather", [f"{prefix}/word_scale", ids], [f"{prefix}/row_scales"], f"{prefix}/GatherWordScale"
        ),
        helper.make_node("Mul", [f"{prefix}/rows_float", f"{prefix}/row_scales"], [out], f"{prefix}/DequantizeWord"),
    ]


def _replace_node(model: Any, node: Any, nodes: list[Any]) -> None:
    """Put `nodes` where `node` was in `model`'s graph (in place) and check the model."""
    import onnx

    graph = model.graph
    position_in_graph = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(position_in_graph + offset, new)
    onnx.checker.check_model(model)  # no shape inference needed: the new nodes are standard ONNX


def _int8_word_gather(model: Any, node: Any) -> None:
    """Replace a one-layer graph's word-embedding Gather `node` (`WORD_EMBEDDING_NODE`) by the same lookup on int8
    rows with a scale per row; the rest of the unfused embedding (positions, segments, LayerNorm) stays float32."""
    word, ids = node.input[0], node.input[1]
    _replace_node(model, node, _int8_word_rows(model, node, word, ids, node.name, node.output[0]))


def _int8_embedding(model: Any, node: Any) -> None:
    """Replace the fused EmbedLayerNormalization `node` of `model` (in place) by the same function with the word
    embedding in int8, one scale per row (`_int8_word_rows`), plus the position rows (the first T) and segment
    rows, LayerNormalization, and the mask index (each row's count of ones, int32) as EmbedLayerNormalization
    computes it. Position and segment tables and the LayerNorm stay float32 (together 0.3 % of the parameters)."""
    import numpy as np
    from onnx import helper, numpy_helper

    inputs = list(node.input) + [""] * (8 - len(node.input))
    ids, segments, word, position, segment, gamma, beta, mask = inputs[:8]
    epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
    prefix = node.name or EMBEDDING_NODE

    def name(suffix: str) -> str:
        return f"{prefix}/{suffix}"

    nodes = _int8_word_rows(model, node, word, ids, prefix, name("words"))
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], dtype=np.int64), name("zero")),
            numpy_helper.from_array(np.array([1], dtype=np.int64), name("axis1")),
        ]
    )
    nodes += [
        helper.make_node("Shape", [ids], [name("length")], name("Length"), start=1, end=2),
        helper.make_node(
            "Slice", [position, name("zero"), name("length"), name("zero")], [name("positions")], name("Positions")
        ),
        helper.make_node("Gather", [segment, segments], [name("segments")], name("GatherSegment")),
        helper.make_node("Add", [name("words"), name("positions")], [name("word_position")], name("AddPosition")),
        helper.make_node("Add", [name("word_position"), name("segments")], [name("sum")], name("AddSegment")),
        helper.make_node(
            "LayerNormalization",
            [name("sum"), gamma, beta],
            [node.output[0]],
            name("LayerNorm"),
            axis=-1,
            epsilon=float(epsilon),
        ),
    ]
    if len(node.output) > 1 and node.output[1]:
        if not mask:
            raise BertGraphError(f"{node.name}: a mask index is read but the node takes no mask")
        nodes.append(
            helper.make_node("ReduceSum", [mask, name("axis1")], [node.output[1]], name("MaskIndex"), keepdims=0)
        )
    if len(node.output) > 2 and node.output[2]:
        nodes.append(helper.make_node("Identity", [name("sum")], [node.output[2]], name("EmbeddingSum")))
    _replace_node(model, node, nodes)


def quantize_bert_int8(fp32_file: Path, out_file: Path, *, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 of the fused graph: the encoder's Attention and MatMul weights (int8, per output channel;
    activations quantized on the fly, each row with its own scale: `row_scales`) and the word embedding (int8
    rows, a scale per row: `_int8_embedding`, `_int8_word_gather`); the nodes named in `keep_fp32` (see
    `bert_int8_fallbacks`) stay float32, `EMBEDDING_NODE` (or a one-layer graph's `WORD_EMBEDDING_NODE`) among
    them keeping the float embedding. The LM head (transform, label rows) stays float32. Raises `BertGraphError`
    for a name the graph lacks."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from redone_sdk.training.row_scales import use_row_scales_in_file

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # quantizer logs on root
    model = onnx.load(str(fp32_file))
    names = {n.name for n in model.graph.node}
    unknown = sorted(set(keep_fp32) - names)
    if unknown:
        raise BertGraphError(f"{Path(fp32_file).name} has no nodes {unknown}")
    for node in list(model.graph.node):
        if node.name in keep_fp32:
            continue
        if node.op_type == "EmbedLayerNormalization":
            _int8_embedding(model, node)
        elif node.op_type == "Gather" and node.name == WORD_EMBEDDING_NODE:
            _int8_word_gather(model, node)
    parts = bert_layer_nodes(model)
    encoder = [name for part, nodes in parts.items() if part != "embeddings" for name in nodes]
    targets = sorted(set(encoder) - set(keep_fp32))
    with tempfile.TemporaryDirectory(prefix="bert-int8.") as work:
        staged = Path(work) / "staged.onnx"
        onnx.save_model(model, str(staged))
        if not targets:  # quantize_dynamic reads an empty list as "every node"
            onnx.save_model(model, str(out_file))
            return Path(out_file)
        quantize_dynamic(
            str(staged),
            str(out_file),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_quantize=targets,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
        )
    use_row_scales_in_file(Path(out_file))
    return Path(out_file)
