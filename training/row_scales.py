"""Per-row activation scales for a dynamic int8 graph, so that a note's scores do not depend on its batch mates.

ONNX Runtime's dynamic quantization (`DynamicQuantizeLinear`) gives a MatMul's whole input tensor — every note of
the batch, padding included — one scale and zero point, so a note's int8 scores moved with what else was in the
batch (by up to 0.10 on redone-base 0.4.0; issue #20). `use_row_scales` rewrites a graph made by `quantize_dynamic`
in place so that each row (token) is quantized alone:

- each `DynamicQuantizeLinear` becomes: scale = the smallest that fits the row's maximum above a fixed zero point
  and its minimum below it (128, or 16 for a GELU's output, which is never below -0.17), then `QuantizeLinear`
  with that scale applied first (`x / scale` rounded half to even, shifted, saturated to uint8);
- each `MatMulInteger -> Cast -> Mul(a_scale * b_scale)` becomes `MatMulIntegerToFloat` (ONNX Runtime's fused
  kernel) with an input scale of 1, times the row scales. Written out on purpose: ONNX Runtime's own fusion of
  that pattern reads a per-row scale wrongly (mean logit error 0.28 against 0.056 unfused);
- each `QAttention` (whose input scale must be one scalar) becomes the same int8 projection, a split into query,
  key and value, and `MultiHeadAttention`.

The weights stay int8 per output channel as `quantize_dynamic` made them. Per-row scales are finer than one per
batch, so the int8 graph also moves closer to float: relative MatMul error 0.008-0.040 against 0.011-0.066.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RowScaleError", "use_row_scales", "use_row_scales_in_file"]

_ZERO_POINT = 128
_GELU_ZERO_POINT = 16
_GELU = {"Gelu", "BiasGelu", "FastGelu"}
_EPSILON = 1e-12
_ONE = "row_scales/one"


class RowScaleError(RuntimeError):
    """The graph has a quantized node this rewrite does not know how to give per-row scales."""


class _Rewrite:
    def __init__(self, model: Any) -> None:
        import numpy as np
        from onnx import numpy_helper

        self.graph = model.graph
        self.producers = {name: node for node in self.graph.node for name in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.axes_as_input = opset >= 18  # ReduceMax/ReduceMin took `axes` as an attribute before opset 18
        self.replaced: dict[int, list[Any]] = {}  # id(node) -> the nodes that take its place ([] = removed)
        self.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([-1], dtype=np.int64), "row_scales/last_axis"),
                numpy_helper.from_array(np.array(1.0, dtype=np.float32), _ONE),
                numpy_helper.from_array(np.array(_EPSILON, dtype=np.float32), "row_scales/epsilon"),
            ]
        )

    def constant(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def only_consumer(self, name: str, op_type: str) -> Any:
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type:
            raise RowScaleError(f"{name} is not read by exactly one {op_type}")
        return users[0]

    def quantize_rows(self, node: Any) -> tuple[str, str, str]:
        """Replace a DynamicQuantizeLinear; returns (quantized uint8, row scales, zero point) tensor names."""
        import numpy as np
        from onnx import helper

        x = node.input[0]
        producer = self.producers.get(x)
        point_value = _GELU_ZERO_POINT if producer is not None and producer.op_type in _GELU else _ZERO_POINT
        name = node.name
        point = self.constant(f"{name}/zero_point", np.array(point_value, dtype=np.uint8))
        below = self.constant(f"{name}/levels_below", np.array(point_value, dtype=np.float32))
        above = self.constant(f"{name}/levels_above", np.array(255 - point_value, dtype=np.float32))
        quantized, scale = f"{name}/quantized", f"{name}/row_scale"
        part = {p: f"{name}/{p}" for p in ("max", "min", "negated", "over", "under", "widest", "inverse", "scaled")}

        def reduce(op_type: str, out: str, node_name: str) -> Any:
            if self.axes_as_input:
                return helper.make_node(op_type, [x, "row_scales/last_axis"], [out], node_name, keepdims=1)
            return helper.make_node(op_type, [x], [out], node_name, axes=[-1], keepdims=1)

        self.replaced[id(node)] = [
            reduce("ReduceMax", part["max"], f"{name}/RowMax"),
            reduce("ReduceMin", part["min"], f"{name}/RowMin"),
            helper.make_node("Neg", [part["min"]], [part["negated"]], f"{name}/Negate"),
            # the smallest scale at which the row's maximum fits above the zero point and its minimum below
            helper.make_node("Div", [part["max"], above], [part["over"]], f"{name}/Over"),
            helper.make_node("Div", [part["negated"], below], [part["under"]], f"{name}/Under"),
            helper.make_node("Max", [part["over"], part["under"]], [part["widest"]], f"{name}/Widest"),
            helper.make_node("Max", [part["widest"], "row_scales/epsilon"], [scale], f"{name}/RowScale"),
            helper.make_node("Reciprocal", [scale], [part["inverse"]], f"{name}/RowInverse"),
            helper.make_node("Mul", [x, part["inverse"]], [part["scaled"]], f"{name}/Scale"),
            helper.make_node("QuantizeLinear", [part["scaled"], _ONE, point], [quantized], f"{name}/Quantize"),
        ]
        return quantized, scale, point

    def matmul(self, node: Any, rows: tuple[str, str, str]) -> None:
        """MatMulInteger -> Cast -> Mul(a_scale * b_scale) as MatMulIntegerToFloat times the row scales."""
        from onnx import helper

        quantized, scale, point = rows
        cast = self.only_consumer(node.output[0], "Cast")
        multiply = self.only_consumer(cast.output[0], "Mul")
        product = self.producers[next(i for i in multiply.input if i != cast.output[0])]
        if product.op_type != "Mul":
            raise RowScaleError(f"{node.name}: its output is not scaled by a product of scales")
        weight_scale = next(i for i in product.input if i in self.initializers)
        unscaled = f"{node.name}/unscaled"
        self.replaced[id(node)] = [
            helper.make_node(
                "MatMulIntegerToFloat",
                [quantized, node.input[1], _ONE, weight_scale, point, node.input[3]],
                [unscaled],
                f"{node.name}/MatMulIntegerToFloat",
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [unscaled, scale], list(multiply.output), f"{node.name}/RowScales"),
        ]
        for gone in (cast, multiply, product):
            self.replaced[id(gone)] = []

    def attention(self, node: Any, rows: tuple[str, str, str]) -> None:
        """QAttention as the int8 projection, a split into query, key and value, and MultiHeadAttention."""
        import numpy as np
        from onnx import helper, numpy_helper

        quantized, scale, point = rows
        inputs = list(node.input) + [""] * (9 - len(node.input))
        _, weight, bias, _, weight_scale, mask_index, _, weight_zero_point, past = inputs
        if past:
            raise RowScaleError(f"{node.name}: QAttention with a past state is not supported")
        zero_point = self.initializers.get(weight_zero_point)
        if zero_point is not None and np.any(numpy_helper.to_array(zero_point)):
            raise RowScaleError(f"{node.name}: asymmetric weights are not supported")
        name = node.name.removesuffix("_quant")
        hidden = int(self.initializers[bias].dims[0]) // 3
        sizes = self.constant(f"{name}/split_sizes", np.array([hidden] * 3, dtype=np.int64))
        unscaled, packed = f"{name}/qkv_unscaled", f"{name}/qkv"
        query, key, value = (f"{name}/{part}" for part in ("query", "key", "value"))
        attention = helper.make_node(
            "MultiHeadAttention", [query, key, value, bias, mask_index], list(node.output), name, domain="com.microsoft"
        )
        attention.attribute.extend(a for a in node.attribute if a.name in {"num_heads", "mask_filter_value"})
        self.replaced[id(node)] = [
            helper.make_node(
                "MatMulIntegerToFloat",
                [quantized, weight, _ONE, weight_scale, point, weight_zero_point],
                [unscaled],
                f"{name}/QkvMatMulIntegerToFloat",
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [unscaled, scale], [packed], f"{name}/QkvRowScales"),
            helper.make_node("Split", [packed, sizes], [query, key, value], f"{name}/QkvSplit", axis=-1),
            attention,
        ]

    def run(self) -> dict[str, int]:
        counts = {"DynamicQuantizeLinear": 0, "MatMulInteger": 0, "QAttention": 0}
        for node in list(self.graph.node):
            if node.op_type != "DynamicQuantizeLinear":
                continue
            rows = self.quantize_rows(node)
            counts["DynamicQuantizeLinear"] += 1
            users = {id(user): user for output in node.output for user in self.consumers.get(output, [])}
            for user in users.values():
                if user.op_type == "MatMulInteger":
                    self.matmul(user, rows)
                elif user.op_type == "QAttention":
                    self.attention(user, rows)
                elif user.op_type == "Mul" and user.input[0] == node.output[1]:
                    continue  # the a_scale * b_scale product, removed with its MatMulInteger
                else:
                    raise RowScaleError(f"{node.name} feeds a {user.op_type} ({user.name}), which is not supported")
                counts[user.op_type] += 1
        nodes = list(self.graph.node)
        del self.graph.node[:]
        for node in nodes:
            self.graph.node.extend(self.replaced.get(id(node), [node]))
        used = {name for node in self.graph.node for name in node.input}
        kept = [tensor for tensor in self.graph.initializer if tensor.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        return counts


def use_row_scales(model: Any) -> dict[str, int]:
    """Rewrite `model` (an `onnx.ModelProto` from `quantize_dynamic`) in place as the module docstring says.
    Returns how many nodes of each kind were rewritten; raises `RowScaleError` for a pattern it does not know."""
    return _Rewrite(model).run()


def use_row_scales_in_file(graph_file: Path) -> dict[str, int]:
    """`use_row_scales` on an ONNX file, rewritten where it is."""
    import onnx

    model = onnx.load(str(graph_file))
    counts = use_row_scales(model)
    onnx.save_model(model, str(graph_file))
    return counts
