"""Export the scoring function to ONNX (fp32 and dynamic int8) and write a verified bundle directory."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redone_sdk import __version__ as sdk_version
from redone_sdk.bundle import Bundle, dump_manifest, sha256_file
from redone_sdk.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    DataSource,
    GraphSpec,
    Lineage,
    Manifest,
    TaskSpec,
    TokenizerSpec,
)
from redone_sdk.inference.scoring_head import build_scoring_head
from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.training import scoring_graph

__all__ = [
    "export_scoring_graph",
    "export_generation_graph",
    "torch_export_scorer",
    "quantize_int8",
    "int8_fallbacks",
    "graph_opset",
    "write_bundle",
    "DEFAULT_POLICY",
]

_log = logging.getLogger(__name__)

_NO_PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")

DEFAULT_POLICY = Policy(
    name="default",
    rules={"hate": CategoryRule(review=0.4, block=0.85)},
    default=CategoryRule(review=0.5, block=0.9),
)


def export_scoring_graph(
    model: Any,
    label_token_ids: Sequence[int],
    out_file: Path,
    *,
    max_length: int,
    opset: int,
    fused: bool = True,
    prefixes: dict[str, Sequence[int]] | None = None,
) -> tuple[Path, Path | None]:
    """(input_ids, attention_mask) -> label logits at the last real token, with dynamic batch and length; and
    the prompt-prefix cache beside it (`prefix_cache.npz`) when `prefixes` (task -> token ids) are given and the
    graph is fused (the only kind that takes one), else None.

    `fused` builds it from the weights with ONNX Runtime's fused operators where the model's shape allows
    (`scoring_graph.supports`), else it goes through `torch.onnx.export`."""
    import numpy as np

    if fused:
        reason = scoring_graph.supports(model)
        if reason is None:
            cached = bool(prefixes)
            graph = scoring_graph.build_scoring_graph(
                model, label_token_ids, out_file, opset=opset, prefix_cache=cached
            )
            if not cached:
                return graph, None
            cache = out_file.parent / "prefix_cache.npz"
            np.savez(cache, **scoring_graph.prefix_cache_arrays(model, prefixes or {}))
            return graph, cache
        _log.info("scoring graph through torch.onnx.export: %s", reason)

    head = build_scoring_head(model, label_token_ids).eval()
    return torch_export_scorer(head, out_file, opset=opset), None


def torch_export_scorer(module: Any, out_file: Path, *, opset: int = 18, example_token_id: int = 1) -> Path:
    """Export a (input_ids, attention_mask) -> label logits module with `torch.onnx.export` (dynamo), dynamic batch
    and length; the example batch is `example_token_id` everywhere, its second row right-padded."""
    import torch

    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    example = (torch.full((2, 8), example_token_id, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    example[1][1, 6:] = 0
    dynamic = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(out_file),
            input_names=["input_ids", "attention_mask"],
            output_names=["label_logits"],
            dynamic_shapes={"input_ids": dynamic, "attention_mask": dynamic},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return out_file


def export_generation_graph(model_dir: Path, out_dir: Path) -> Path:
    """The causal LM with KV cache as ONNX (optimum's `ORTModelForCausalLM` layout), for generative tasks."""
    from optimum.onnxruntime import ORTModelForCausalLM

    for noisy in ("optimum", "onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model = ORTModelForCausalLM.from_pretrained(str(model_dir), export=True, use_cache=True, local_files_only=True)
    model.save_pretrained(str(out_dir))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
    return out_dir


def quantize_int8(fp32_file: Path, out_file: Path, *, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 quantization of the MatMul weights (activations quantized on the fly, a scale per row:
    `row_scales`), except the MatMuls of the parts named in `keep_fp32` (see `int8_fallbacks`), which stay float32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from redone_sdk.training.row_scales import use_row_scales_in_file

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # quantizer logs on root

    parts = _matmul_parts(fp32_file)
    quantize_dynamic(
        str(fp32_file),
        str(out_file),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=sorted(node for node, part in parts.items() if part in set(keep_fp32)),
        # The fused graph's contrib operators have no ONNX shape inference: their outputs are float32. Only
        # MatMuls with a weight: one activation times another stays float, so rows can get their own scales.
        extra_options={"DefaultTensorType": TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    use_row_scales_in_file(Path(out_file))
    return out_file


_PART = re.compile(r"layers\.(\d+)\.(attn|self_attn|mlp)\.")


def _matmul_parts(graph_file: Path) -> dict[str, str]:
    """MatMul node name -> the part its weight belongs to (`layer0.attn`, `layer3.mlp`), from weight names."""
    import onnx

    model = onnx.load(str(graph_file), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    parts: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            match = _PART.search(name) if name in weights else None
            if match:
                kind = "attn" if match.group(2) != "mlp" else "mlp"
                parts[node.name] = f"layer{match.group(1)}.{kind}"
    return parts


def int8_fallbacks(fp32_file: Path) -> list[tuple[str, ...]]:
    """Parts kept in float32, tried in order until int8 is within tolerance: none, then the first layer's
    attention projections, its MLP, the whole first layer, the first and last layers (cheapest first)."""
    layers = sorted({int(p.split(".")[0][5:]) for p in _matmul_parts(fp32_file).values()})
    ladder: list[tuple[str, ...]] = [()]
    if layers:
        first, last = layers[0], layers[-1]
        ladder += [(f"layer{first}.attn",), (f"layer{first}.mlp",), (f"layer{first}.attn", f"layer{first}.mlp")]
        if last != first:
            ladder.append((f"layer{first}.attn", f"layer{first}.mlp", f"layer{last}.attn", f"layer{last}.mlp"))
    return ladder


def graph_opset(graph_file: Path) -> int:
    """The default-domain opset a graph file declares."""
    import onnx

    model = onnx.load(str(graph_file), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_bundle(
    out_dir: Path,
    *,
    name: str,
    version: str,
    description: str,
    license: str,
    tokenizer_file: Path,
    pad_token_id: int,
    special_tokens: Sequence[str],
    tasks: dict[str, TaskSpec],
    graphs: dict[str, tuple[Path, int]],
    label_token_ids: Sequence[int],
    data_sources: Sequence[DataSource],
    training_config: dict[str, Any],
    architecture: str,
    parameters: int,
    metrics: dict[str, dict[str, float]],
    checkpoint_dir: Path | None = None,
    generation_dir: Path | None = None,
    default_graph: str | None = None,
    policy: Policy = DEFAULT_POLICY,
    prefix_cache: Path | None = None,
    base_model: str = "from-config (no pretrained weights)",
) -> Bundle:
    """Copy files into `out_dir`, checksum them, write `manifest.json`, and load it back verified. `base_model`:
    what the weights started from (the lineage's first line)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    shutil.copyfile(tokenizer_file, out_dir / "tokenizer.json")
    cache_file = None
    if prefix_cache is not None:
        cache_file = "prefix_cache.npz"
        shutil.copyfile(prefix_cache, out_dir / cache_file)
    graph_specs = {}
    for precision, (path, opset) in sorted(graphs.items()):
        target = f"scoring.{precision}.onnx"
        shutil.copyfile(path, out_dir / target)
        graph_specs[precision] = GraphSpec(
            file=target,
            precision=precision,
            opset=opset,
            label_token_ids=tuple(label_token_ids),
            prefix_cache=cache_file,
        )
    (out_dir / "policy.json").write_text(policy.to_json() + "\n", encoding="utf-8")
    checkpoint = None
    if checkpoint_dir is not None:
        shutil.copytree(checkpoint_dir, out_dir / "checkpoint", ignore=shutil.ignore_patterns(*_NO_PICKLES))
        checkpoint = "checkpoint"
    generation = None
    if generation_dir is not None:
        shutil.copytree(generation_dir, out_dir / "generation", ignore=shutil.ignore_patterns(*_NO_PICKLES))
        generation = "generation"
    files = {p.relative_to(out_dir).as_posix(): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        description=description,
        license=license,
        tokenizer=TokenizerSpec(file="tokenizer.json", pad_token_id=pad_token_id, special_tokens=tuple(special_tokens)),
        tasks=tasks,
        graphs=graph_specs,
        default_graph=default_graph or ("int8" if "int8" in graph_specs else ("fp32" if graph_specs else None)),
        checkpoint=checkpoint,
        generation=generation,
        policy="policy.json",
        files=files,
        lineage=Lineage(
            base_model=base_model,
            architecture=architecture,
            parameters=parameters,
            data_sources=tuple(data_sources),
            training_config=json.loads(json.dumps(training_config)),
            created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            sdk_version=sdk_version,
        ),
        metrics=metrics,
    )
    (out_dir / MANIFEST_FILE).write_text(dump_manifest(manifest), encoding="utf-8")
    return Bundle.load(out_dir)
