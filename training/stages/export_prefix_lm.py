"""Stage 6 for a BERT prefix-LM — calibrate on dev, export the fused scoring graph (fp32 and int8), and write the
bundles, as `export.py` does for the Qwen2 graph.

Calibration: one temperature per task, fitted by temperature scaling on the dev logits of the torch model
(`training/calibration.py`), written into the bundle's tasks (the SDK divides the logits by it); with
`export.label_offsets` the moderation task's label prior is shifted for dev macro-F1 (`training/label_offsets.py`);
the policy's thresholds are then set from the dev probabilities the SDK will give (`policy_from_dev`). With
`export.lexical_fusion` the matching task also gets a lexical fusion fitted on the QueryCorr train rows
(`training/lexical_fusion.py`). The int8 graph must keep every dev metric within `export.int8_tolerance` of fp32,
with fp32 kept for the parts on `bert_int8_fallbacks`' ladder one rung at a time before the bundle ships fp32 as
its default.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.bundle.manifest import DataSource
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.evaluate import evaluate_bundle
from redone_sdk.training.export import write_bundle
from redone_sdk.training.stages.common import (
    configure_torch,
    is_main_process,
    latest_model_dir,
    log,
    mark_done,
    read_jsonl,
    stage_dir,
)
from redone_sdk.training.stages.data import load_dev

__all__ = ["run"]


def _pretrained_sources(lineage: dict[str, Any]) -> list[DataSource]:
    """The backbone's origin as data-source lines of the bundle's lineage (model, export, jar, each licensed)."""
    return [DataSource(name=line.split(",")[0].strip(), license=line) for line in lineage.get("licenses", [])]


def run(config: PipelineConfig) -> Path:
    from redone_sdk.training.bert_graph import bert_int8_fallbacks, export_bert_scoring_graph, quantize_bert_int8
    from redone_sdk.training.calibration import calibrated_tasks, expected_calibration_error, fit_temperature
    from redone_sdk.training.export import graph_opset
    from redone_sdk.training.label_offsets import moderation_decisions
    from redone_sdk.training.prefix_lm import prefix_lm_special_tokens
    from redone_sdk.training.prefix_lm_sft import dev_logits, label_token_ids, lineage, load_prefix_lm, task_specs
    from redone_sdk.training.stages.export import bundle_license, climb_int8_ladder, dev_examples

    configure_torch(config)
    root, out = Path(config.output_dir), Path(config.output_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    model_dir = latest_model_dir(config, "export")
    model, tokenizer = load_prefix_lm(model_dir)
    specs = task_specs(tokenizer, config)
    cfg = config.export

    # temperature scaling, the label offsets and the policy, from the torch model's dev logits
    dev_rows, _ = load_dev(config)
    per_set = dev_logits(model, tokenizer, specs, dev_rows)
    temperatures: dict[str, float] = {}
    offsets: dict[str, dict[str, float]] = {}
    calibration: dict[str, dict[str, float]] = {}
    policy, policy_figures = None, {}
    for task, spec in specs.items():
        sets = [name for name, (_, _, t) in per_set.items() if t == task]
        if not sets:
            continue
        logits = np.concatenate([per_set[s][0] for s in sets])
        gold = np.array([spec.label_names.index(g) for s in sets for g in per_set[s][1]])
        temperature = fit_temperature(logits, gold)
        temperatures[task] = temperature
        before = expected_calibration_error(_softmax(logits), gold)
        after = expected_calibration_error(_softmax(logits / temperature), gold)
        calibration[f"calibration/{task}"] = {"temperature": temperature, "ece_before": before, "ece_after": after}
        log.info("export: %s temperature %.3f, ECE %.4f -> %.4f", task, temperature, before, after)
        if spec.kind == "moderation":
            scaled = {s: (per_set[s][0] / temperature, per_set[s][1]) for s in sets}
            offsets[task], fit, policy, policy_figures = moderation_decisions(
                scaled,
                spec,
                fit_offsets=cfg.label_offsets,
                offset_sets={f"{source}_dev" for source in config.data.harm_sources},  # trained-on sets only
                seed=config.seed,
            )
            if fit is not None:
                calibration[f"label_offsets/{task}"] = fit.figures()
                log.info(
                    "export: %s label offsets %s%s (mean dev macro-F1 %.4f -> %.4f; cross-fitted %.4f)",
                    task,
                    offsets[task],
                    "" if offsets[task] or not fit.spec() else f" (fitted {fit.spec()}: no out-of-sample gain)",
                    *(fit.figures()[f"{view}/mean_macro_f1"] for view in ("before", "after", "cross_fitted")),
                )
    tasks = calibrated_tasks(specs, temperatures, offsets)
    if cfg.lexical_fusion:
        tasks, fusion_figures = _with_lexical_fusion(config, model, tokenizer, tasks)
        calibration.update(fusion_figures)

    label_ids = label_token_ids(specs)
    fp32 = export_bert_scoring_graph(model, label_ids, out / "scoring.fp32.onnx")
    int8 = out / "scoring.int8.onnx"
    ladder = bert_int8_fallbacks(fp32) if cfg.int8_fallback else [()]
    quantize_bert_int8(fp32, int8, keep_fp32=ladder[0])
    license, sources = bundle_license(config)
    source = lineage(model_dir)
    common: dict[str, Any] = {
        "name": config.bundle_name,
        "version": config.bundle_version,
        "description": f"{config.model.pretrained} (BERT, {model.config.num_hidden_layers} layers) post-trained "
        "by redone-sdk's pipeline as a prefix-LM"
        + _distilled_from(config)
        + ": harm taxonomy (safe/offensive/hate/sexism) and SNS-Bench query-note relevance by one bidirectional "
        "pass over the prompt, read at the assistant marker; calibrated on dev (temperature scaling"
        + ("; label offsets for dev macro-F1)." if any(offsets.values()) else ")."),
        "license": f"{license}; backbone weights: " + "; ".join(source.get("licenses", [])),
        "tokenizer_file": model_dir / "tokenizer.json",
        "pad_token_id": tokenizer.token_to_id("[PAD]"),
        "special_tokens": prefix_lm_special_tokens(),
        "tasks": tasks,
        "label_token_ids": label_ids,
        "data_sources": [*_pretrained_sources(source), *sources],
        "training_config": config.to_dict(),
        "architecture": "BertLMHeadModel (prefix-LM)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "base_model": f"pretrained:{source.get('source', config.model.pretrained)} "
        f"(Maven {source.get('maven', '?')}, jar SHA-256 {source.get('jar_sha256', '?')})",
        **({"policy": policy} if policy is not None else {}),
    }
    opset = graph_opset(fp32)
    graphs = {"fp32": (fp32, opset), "int8": (int8, opset)}
    dev = dev_examples(config)
    metrics: dict[str, dict[str, float]] = {**calibration}
    if policy_figures:
        metrics["policy/dev"] = {k: float(v) for k, v in policy_figures.items()}
    with tempfile.TemporaryDirectory(prefix="export-check.", dir=out) as work:
        check = Path(work) / "bundle"
        write_bundle(check, graphs=graphs, metrics={}, **common)
        for set_name, values in evaluate_bundle(check, dev, precision="fp32").items():
            metrics[f"fp32/{set_name}"] = values

        def requantize(keep: tuple[str, ...]) -> Path:
            quantize_bert_int8(fp32, int8, keep_fp32=keep)
            return write_bundle(check, graphs=graphs, metrics={}, **common).path

        within, max_drop = climb_int8_ladder(ladder, requantize, check, dev, metrics, cfg.int8_tolerance)
    evaluation = root / "eval" / "metrics.json"
    if evaluation.is_file():
        metrics["summary"] = json.loads(evaluation.read_text())["summary"]
    shipped = {"int8": ["int8"], "fp32": ["fp32"], "both": ["fp32", "int8"]}[cfg.ship_precision]
    if not within and "fp32" not in shipped:
        log.warning("export: int8 loses %.3f on a dev metric: shipping fp32 as default", max_drop)
        shipped.append("fp32")
    if is_main_process():  # with the checkpoint: the PyTorch backend and `redone bench`'s eager rows read it
        write_bundle(root / "bundle-full", graphs=graphs, metrics=metrics, checkpoint_dir=model_dir, **common)
    bundle = write_bundle(
        root / "bundle",
        graphs={p: graphs[p] for p in shipped},
        metrics=metrics,
        default_graph="int8" if within and "int8" in shipped else "fp32",
        checkpoint_dir=model_dir if cfg.keep_checkpoint else None,
        **common,
    )
    log.info("export: bundle %s, int8 max drop %.4f", bundle.path, max_drop)
    mark_done(config, "export", {"bundle": str(bundle.path), "int8_max_drop": max_drop})
    return bundle.path


def _distilled_from(config: PipelineConfig) -> str:
    """The description's teacher: the bundle the sft stage recorded (name, version, digest), else the config's."""
    if not config.sft.teacher:
        return ""
    marker = stage_dir(config, "sft") / "DONE.json"
    teacher = json.loads(marker.read_text()).get("teacher_bundle") if marker.is_file() else None
    if not teacher:
        return f", distilled from {config.sft.teacher}"
    return f", distilled from {teacher['name']} {teacher['version']} (bundle digest {teacher['digest'][:12]})"


MIN_FUSION_PAIRS = 10  # fewer pairs give the cross-validated weight and grade cuts nothing to stand on


def _with_lexical_fusion(
    config: PipelineConfig, model: Any, tokenizer: Any, tasks: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """`tasks` with a lexical fusion on the matching task, fitted on the data stage's QueryCorr train rows with the
    calibrated torch model; unchanged when there is no matching task or too few rows (a warning, and a `skipped`
    entry in the returned metrics)."""
    from redone_sdk.bundle.manifest import TaskSpec
    from redone_sdk.lexical import query_coverage
    from redone_sdk.training.lexical_fusion import fit_lexical_fusion, fusion_holdout_pairs, query_note_pair
    from redone_sdk.training.prefix_lm_sft import dev_logits

    matching = [name for name, spec in tasks.items() if spec.kind == "matching"]
    path = stage_dir(config, "data") / "train" / "querycorr.jsonl"
    if not matching or not path.is_file():
        log.info("export: no lexical fusion (no matching task or no QueryCorr train rows)")
        return tasks, {}
    name, spec = matching[0], tasks[matching[0]]
    unique = {query_note_pair(r): r for r in read_jsonl(path)}
    described = "QueryCorr train"
    if config.data.fusion_holdout:
        held = fusion_holdout_pairs(list(unique.values()), config.data.fusion_holdout, config.seed)
        unique = {pair: r for pair, r in unique.items() if pair in held}
        described = f"QueryCorr train pairs held out of SFT (data.fusion_holdout {config.data.fusion_holdout})"
    rows = [{**r, "set": "querycorr_train"} for r in unique.values()]
    if len(rows) < MIN_FUSION_PAIRS:
        # Loud, and kept in the bundle's metrics: the bundle then matches on the model alone.
        log.warning(
            "export: NO lexical fusion on %s: %d pairs in %s, at least %d needed (lower data.fusion_holdout or "
            "add QueryCorr rows); the bundle matches on the model alone",
            name,
            len(rows),
            described,
            MIN_FUSION_PAIRS,
        )
        return tasks, {f"lexical_fusion/{name}": {"examples": float(len(rows)), "skipped": 1.0}}
    logits, gold, _ = dev_logits(model, tokenizer, tasks, rows)["querycorr_train"]
    values = np.array([label.value for label in spec.labels], dtype=np.float64)
    expected = _softmax(logits / spec.temperature) @ values
    coverage = np.array([query_coverage(r["fields"]["query"], r["fields"]["note"]) for r in rows])
    fit = fit_lexical_fusion(expected, coverage, gold, seed=config.seed, rows=described)
    log.info(
        "export: %s lexical fusion weight %.1f (CV macro-F1 %.3f; model alone %.3f, coverage alone %.3f)",
        name,
        fit.weight,
        fit.cv_macro_f1[fit.weight],
        fit.cv_macro_f1[0.0],
        fit.cv_macro_f1[1.0],
    )
    fused = TaskSpec.model_validate({**spec.model_dump(), "lexical": fit.spec().model_dump()})
    return {**tasks, name: fused}, {f"lexical_fusion/{name}": fit.figures()}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
