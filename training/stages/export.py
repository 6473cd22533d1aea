"""Stage 6 — export: the final model as ONNX scoring graphs (fp32 + int8; with `export.generation_graph`, also a
generation graph with KV cache) and the bundles: `bundle-full/` (everything, with the checkpoint) and `bundle/`
(what ships).

The int8 graph must keep every dev metric of the scoring tasks within `export.int8_tolerance` of fp32; when it
does not, parts of the fused graph are kept in fp32 rung by rung (`export.int8_fallback`: the first layer's
attention, its MLP, the first and last layers), and only when every rung fails does the bundle ship fp32 as its
default graph. Its metrics record the rung (`int8_check`). `export.smooth_alpha` smooths the MLP inputs first
(`training/smoothing.py`), so that int8 loses less.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redone_sdk.bundle.manifest import DataSource
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.inference.encoding import PromptEncoder
from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.datasets import DATA_SOURCES, Example
from redone_sdk.training.evaluate import evaluate_bundle
from redone_sdk.training.export import (
    export_generation_graph,
    export_scoring_graph,
    graph_opset,
    int8_fallbacks,
    quantize_int8,
    write_bundle,
)
from redone_sdk.training.model import load_model
from redone_sdk.training.smoothing import smooth_mlp_inputs, supports_smoothing
from redone_sdk.training.stages.common import (
    configure_torch,
    is_main_process,
    latest_model_dir,
    log,
    mark_done,
    stage_dir,
)
from redone_sdk.training.stages.data import distinct, load_dev, training_mixture
from redone_sdk.training.tasks import answer_tokens
from redone_sdk.training.tokenizer import special_tokens

__all__ = ["run", "bundle_license", "climb_int8_ladder"]

NON_COMMERCIAL = (
    "CC BY-NC-SA 4.0 (trained on SNS-Bench / SNS-TransBench: non-commercial use only, "
    "derivatives under the same license)"
)


def bundle_license(config: PipelineConfig) -> tuple[str, list[DataSource]]:
    """The weights' license follows the data: any SNS-Bench or SNS-TransBench text makes them non-commercial."""
    used = list(config.data.harm_sources)
    snsbench = (
        config.data.matching or config.cpt.enabled or any(t not in ("moderation",) for t in config.data.sft_tasks)
    )
    if snsbench:
        used += ["sns-bench", "sns-transbench"]
    sources = [DataSource(name=DATA_SOURCES[s][0], license=DATA_SOURCES[s][1]) for s in used]
    return (NON_COMMERCIAL if snsbench else "Apache-2.0"), sources


def climb_int8_ladder(
    ladder: Sequence[tuple[str, ...]],
    requantize: Callable[[tuple[str, ...]], Path],
    bundle_dir: Path,
    dev: dict[str, list[Example]],
    metrics: dict[str, dict[str, float]],
    tolerance: float,
) -> tuple[bool, float]:
    """Score the int8 graph of `bundle_dir` on `dev` (into `metrics["int8/<set>"]`, beside the `fp32/<set>`
    figures already there); while its largest drop from fp32 exceeds `tolerance`, take the next rung of `ladder`
    (`requantize(keep)` keeps those parts in fp32 and returns the rewritten bundle). Records `int8_check` and
    returns (within tolerance, largest drop)."""
    for step, keep in enumerate(ladder):
        if step:
            bundle_dir = requantize(keep)
        for set_name, values in evaluate_bundle(bundle_dir, dev, precision="int8").items():
            metrics[f"int8/{set_name}"] = values
        drops = [metrics[f"fp32/{s}"][k] - metrics[f"int8/{s}"][k] for s in dev for k in ("macro_f1", "accuracy")]
        max_drop = max(drops) if drops else 0.0
        within = max_drop <= tolerance
        log.info("export: int8 keeping %s in fp32: max dev drop %.4f", list(keep) or "nothing", max_drop)
        if within:
            break
    metrics["int8_check"] = {
        "max_drop": round(max_drop, 4),
        "tolerance": tolerance,
        "within_tolerance": float(within),
        "ladder_step": float(step),
        **{f"fp32/{part}": 1.0 for part in keep},
    }
    return within, max_drop


def dev_examples(config: PipelineConfig) -> dict[str, list[Example]]:
    scoring, _ = load_dev(config)
    sets: dict[str, list[Example]] = {}
    for row in scoring:
        example = Example(
            task=row["task"], fields=tuple(row["fields"].items()), label=row["label"], source=row["source"]
        )
        sets.setdefault(row["set"], []).append(example)
    return sets


def _smooth(model: Any, codec: ChatCodec, config: PipelineConfig) -> None:
    """SmoothQuant the MLP inputs of the model the scoring graph is built from, calibrated on training prompts."""
    reason = supports_smoothing(model)
    if reason is not None:
        log.warning("export: no smoothing before int8 (%s)", reason)
        return
    scoring, _, _ = training_mixture(config)
    rows = distinct(scoring)
    rows = random.Random(config.seed + 2).sample(rows, min(config.export.smooth_calibration, len(rows)))
    prompts = [
        p
        for task in sorted({r["task"] for r in rows})
        for p in codec.scoring_prompts(task, [r["fields"] for r in rows if r["task"] == task])
    ]
    spreads = smooth_mlp_inputs(model, prompts, alpha=config.export.smooth_alpha, pad_id=codec.pad_id)
    log.info(
        "export: MLP inputs smoothed (alpha %.2f, %d training prompts); largest channel / median per layer: %s",
        config.export.smooth_alpha,
        len(prompts),
        [round(x, 1) for x in spreads],
    )


def run(config: PipelineConfig) -> Path:
    if config.model.pretrained:
        from redone_sdk.training.stages.export_prefix_lm import run as run_prefix_lm

        return run_prefix_lm(config)
    configure_torch(config)
    out = stage_dir(config, "export")
    root = Path(config.output_dir)
    model_dir = latest_model_dir(config, "export")
    model = load_model(model_dir).eval()
    codec = ChatCodec(model_dir, config)
    label_ids = [codec.token_ids[t] for t in answer_tokens()]
    cfg = config.export
    longest = max(config.model.moderation_max_length, config.model.matching_max_length)
    prefixes = None
    if cfg.prefix_cache:  # the token ids every prompt of a task starts with, as the SDK's encoder makes them
        tokenizer = load_tokenizer(model_dir / "tokenizer.json")
        prefixes = {
            name: PromptEncoder(tokenizer, task, special_tokens()).prefix_ids for name, task in codec.tasks.items()
        }
        prefixes = {name: ids for name, ids in prefixes.items() if ids}
    if cfg.smooth_alpha > 0:
        _smooth(model, codec, config)
    fp32, prefix_cache = export_scoring_graph(
        model,
        label_ids,
        out / "scoring.fp32.onnx",
        max_length=longest,
        opset=cfg.opset,
        fused=cfg.fused_graph,
        prefixes=prefixes,
    )
    int8 = out / "scoring.int8.onnx"
    ladder = int8_fallbacks(fp32) if cfg.int8_fallback else [()]
    quantize_int8(fp32, int8, keep_fp32=ladder[0])
    generation = export_generation_graph(model_dir, out / "generation") if cfg.generation_graph else None
    license, sources = bundle_license(config)
    common: dict[str, Any] = {
        "name": config.bundle_name,
        "version": config.bundle_version,
        "description": "Qwen2-architecture model post-trained by redone-sdk's pipeline "
        f"(continued pretraining: {config.cpt.enabled}, SFT: {config.sft.enabled}, DPO: {config.dpo.enabled}): "
        "harm taxonomy (safe/offensive/hate/sexism) and SNS-Bench query-note relevance by one forward pass"
        + (
            "; other SNS-Bench tasks and translation through the generation graph."
            if cfg.generation_graph
            else "; the other SNS-Bench tasks and translation are trained, not served (no generation graph)."
        ),
        "license": license,
        "tokenizer_file": model_dir / "tokenizer.json",
        "pad_token_id": codec.pad_id,
        "special_tokens": special_tokens(),
        "tasks": codec.tasks,
        "label_token_ids": label_ids,
        "data_sources": sources,
        "training_config": config.to_dict(),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "prefix_cache": prefix_cache,
    }
    opset = graph_opset(fp32)
    graphs = {"fp32": (fp32, opset), "int8": (int8, opset)}

    def write_full(metrics: dict[str, dict[str, float]]) -> Any:
        return write_bundle(
            root / "bundle-full",
            graphs=graphs,
            metrics=metrics,
            checkpoint_dir=model_dir,
            generation_dir=generation,
            **common,
        )

    full = write_full({})
    metrics: dict[str, dict[str, float]] = {}
    dev = dev_examples(config)
    for set_name, values in evaluate_bundle(full.path, dev, precision="fp32").items():
        metrics[f"fp32/{set_name}"] = values
    # Int8 must stay within tolerance on every dev metric; if it does not, keep the parts on the ladder in
    # float32, one rung at a time (cheapest first), and ship fp32 only when every rung fails.

    def requantize(keep: tuple[str, ...]) -> Path:
        quantize_int8(fp32, int8, keep_fp32=keep)
        return write_full({}).path

    within, max_drop = climb_int8_ladder(ladder, requantize, full.path, dev, metrics, cfg.int8_tolerance)
    if not within:
        log.warning(
            "export: int8 loses %.3f on a dev metric (tolerance %.3f): shipping fp32 as default",
            max_drop,
            cfg.int8_tolerance,
        )
    evaluation = stage_dir(config, "eval") / "metrics.json"
    if evaluation.is_file():
        measured = json.loads(evaluation.read_text())
        metrics["summary"] = measured["summary"]
        for task, values in measured["generative"].items():
            metrics[f"torch/{task}"] = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
    shipped = {"int8": ["int8"], "fp32": ["fp32"], "both": ["fp32", "int8"]}[cfg.ship_precision]
    if not within and "fp32" not in shipped:
        shipped.append("fp32")
    bundle = write_bundle(
        root / "bundle",
        graphs={p: graphs[p] for p in shipped},
        metrics=metrics,
        checkpoint_dir=model_dir if cfg.keep_checkpoint else None,
        default_graph="int8" if within and "int8" in shipped else "fp32",
        **common,
    )
    if is_main_process():
        write_full(metrics)
    log.info("export: bundle %s, int8 max drop %.4f", bundle.path, max_drop)
    mark_done(config, "export", {"bundle": str(bundle.path), "int8_max_drop": max_drop})
    return bundle.path
