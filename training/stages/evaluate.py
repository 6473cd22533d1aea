"""Stage 5 — evaluation on the dev parts: every SNS-Bench task scored the SNS-Bench way, translation, and
harm-content precision / recall / macro-F1 per category and per data set.

`evaluate_model` scores a checkpoint with torch (any stage's model, used by the ablation); `run` evaluates the
pipeline's final model and, when the bundle exists, writes the figures into its manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.datasets import HARM_LABELS
from redone_sdk.training.evaluate import harm_set_metrics, per_category_table
from redone_sdk.training.generation import generate_answers, predict_labels
from redone_sdk.training.model import inference_device, load_model
from redone_sdk.training.stages.common import configure_torch, is_main_process, latest_model_dir, log, stage_dir
from redone_sdk.training.stages.data import load_dev
from redone_sdk.training.tasks import GRADES

__all__ = ["run", "evaluate_model", "harm_set_metrics", "summarize"]

HARM_SETS = ("cold_dev", "swsr_dev", "davidson_dev")


def evaluate_model(model_dir: Path, config: PipelineConfig, tasks: set[str] | None = None) -> dict[str, Any]:
    """Dev metrics of a checkpoint: {"scoring": {set: metrics}, "generative": {task: metrics}, "summary": {...}}."""
    if config.model.pretrained:
        return evaluate_prefix_lm(model_dir, config, tasks)
    from redone_sdk.training.instructions import ChatExample
    from redone_sdk.training.snsbench_metrics import score_task

    model = load_model(model_dir, inference_device())
    model.eval()
    codec = ChatCodec(model_dir, config)
    dev_scoring, dev_generative = load_dev(config)
    scoring: dict[str, dict[str, float]] = {}
    for set_name in sorted({r["set"] for r in dev_scoring}):
        rows = [r for r in dev_scoring if r["set"] == set_name]
        task = rows[0]["task"]
        if tasks is not None and ("moderation" if task == "moderation" else "querycorr") not in tasks:
            continue
        predicted = predict_labels(model, codec, task, [r["fields"] for r in rows])
        gold = [r["label"] for r in rows]
        labels = HARM_LABELS if task == "moderation" else GRADES  # the model's categories, QueryCorr its grades
        scoring[set_name] = harm_set_metrics(set_name, gold, predicted, labels)
    generative: dict[str, dict[str, float]] = {}
    for task in sorted({r["task"] for r in dev_generative}):
        if tasks is not None and task not in tasks:
            continue
        rows = [r for r in dev_generative if r["task"] == task]
        examples = [ChatExample.from_dict(r) for r in rows]
        longest = max(len(codec.answer_ids(r["answer"])) for r in rows)
        answers = generate_answers(model, codec, [r["prompt"] for r in rows], max_new_tokens=min(128, longest + 16))
        generative[task] = score_task(task, answers, examples)
    return {"scoring": scoring, "generative": generative, "summary": summarize(scoring, generative)}


def evaluate_prefix_lm(model_dir: Path, config: PipelineConfig, tasks: set[str] | None = None) -> dict[str, Any]:
    """`evaluate_model` for a BERT prefix-LM checkpoint: the scoring sets only (it trains no generative task)."""
    from redone_sdk.training.prefix_lm_sft import load_prefix_lm

    model, tokenizer = load_prefix_lm(model_dir)
    return evaluate_scorer(model, tokenizer, config, tasks)


def evaluate_scorer(
    model: Any, tokenizer: Any, config: PipelineConfig, tasks: set[str] | None = None, scorer: Any | None = None
) -> dict[str, Any]:
    """Dev metrics of a loaded BERT model through its scorer (the prefix-LM's unless `scorer` is given: the
    backbone ablation's variants), in `evaluate_model`'s layout."""
    from redone_sdk.training.prefix_lm_sft import dev_logits, task_specs

    dev_scoring, _ = load_dev(config)
    if tasks is not None:
        dev_scoring = [r for r in dev_scoring if ("moderation" if r["task"] == "moderation" else "querycorr") in tasks]
    specs = task_specs(tokenizer, config)
    scoring: dict[str, dict[str, float]] = {}
    for set_name, (logits, gold, task) in dev_logits(model, tokenizer, specs, dev_scoring, scorer=scorer).items():
        labels = specs[task].label_names
        predicted = [labels[i] for i in logits.argmax(axis=1)]
        scoring[set_name] = harm_set_metrics(set_name, gold, predicted, labels)
    return {"scoring": scoring, "generative": {}, "summary": summarize(scoring, {})}


def summarize(scoring: dict[str, dict[str, float]], generative: dict[str, dict[str, float]]) -> dict[str, float]:
    """The headline figures: SNS-Bench average, harm macro-F1 (mean over sets), translation."""
    from redone_sdk.training.snsbench_metrics import average

    scores = {task: m["score"] for task, m in generative.items() if "score" in m}
    if "querycorr_dev" in scoring:
        scores["querycorr"] = scoring["querycorr_dev"]["macro_f1"]  # one forward pass: every answer parses
    summary: dict[str, float] = {}
    bench = {t: s for t, s in scores.items() if not t.startswith("translation")}
    if bench:
        summary["snsbench_average"] = float(average(bench))
    harm = [scoring[s]["macro_f1"] for s in HARM_SETS if s in scoring]
    if harm:
        summary["harm_macro_f1"] = float(sum(harm) / len(harm))
    translation = [s for t, s in scores.items() if t.startswith("translation")]
    if translation:
        summary["translation"] = float(sum(translation) / len(translation))
    return summary


def run(config: PipelineConfig) -> Path:
    configure_torch(config)
    out = stage_dir(config, "eval")
    model_dir = latest_model_dir(config, "export")
    metrics = evaluate_model(model_dir, config)
    metrics["model"] = str(model_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (out / "per_category.md").write_text(per_category_table(metrics["scoring"]), encoding="utf-8")
    log.info("eval: %s", json.dumps(metrics["summary"]))
    return out / "metrics.json"
