"""Export the scoring function to ONNX (fp32 and dynamic int8) and write a verified bundle directory."""

from __future__ import annotations

import datetime as dt
import json
import logging
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
from redone_sdk.inference.torch_backend import build_scoring_head
from redone_sdk.policy import CategoryRule, Policy

__all__ = ["export_scoring_graph", "export_generation_graph", "quantize_int8", "write_bundle", "DEFAULT_POLICY"]

_NO_PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")

DEFAULT_POLICY = Policy(
    name="default",
    rules={"hate": CategoryRule(review=0.4, block=0.85)},
    default=CategoryRule(review=0.5, block=0.9),
)


def export_scoring_graph(
    model: Any, label_token_ids: Sequence[int], out_file: Path, *, max_length: int, opset: int
) -> Path:
    """(input_ids, attention_mask) -> label logits at the last real token, with dynamic batch and length."""
    import torch

    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    head = build_scoring_head(model, label_token_ids).eval()
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    example[1][1, 6:] = 0
    dynamic = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            head,
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


def quantize_int8(fp32_file: Path, out_file: Path) -> Path:
    """Dynamic int8 quantization of the MatMul weights (activations stay float, quantized on the fly)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # quantizer logs on root

    quantize_dynamic(str(fp32_file), str(out_file), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return out_file


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
) -> Bundle:
    """Copy files into `out_dir`, checksum them, write `manifest.json`, and load it back verified."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    shutil.copyfile(tokenizer_file, out_dir / "tokenizer.json")
    graph_specs = {}
    for precision, (path, opset) in sorted(graphs.items()):
        target = f"scoring.{precision}.onnx"
        shutil.copyfile(path, out_dir / target)
        graph_specs[precision] = GraphSpec(
            file=target, precision=precision, opset=opset, label_token_ids=tuple(label_token_ids)
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
            base_model="from-config (no pretrained weights)",
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
