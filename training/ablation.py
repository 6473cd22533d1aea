"""`redone train ablation`: what each stage buys, on the same data, in one table (like RedOne's).

Variants, all from the same tokenizer and initial weights:
- `sft_only`     — multi-task SFT from the initial model;
- `cpt_sft`      — continued pretraining, then the same SFT;
- `cpt_sft_dpo`  — the full recipe, DPO on the SFT model's own mistakes;
- `single_task`  — each task fine-tuned alone from the initial model (one model per task).
Plus the cross-set check: the full recipe's CPT model fine-tuned on harm data without SWSR, scored on SWSR's
dev part, against a char 1–3-gram TF-IDF + logistic regression trained on the same data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.pipeline import run_stage
from redone_sdk.training.stages.common import is_done, log, stage_dir
from redone_sdk.training.stages.data import load_dev, training_mixture
from redone_sdk.training.stages.evaluate import evaluate_model, harm_set_metrics

__all__ = ["run_ablation", "render_table"]

VARIANTS = ("sft_only", "cpt_sft", "cpt_sft_dpo", "single_task")


def _link_upstream(source: PipelineConfig, target: PipelineConfig, stages: tuple[str, ...]) -> None:
    """Share finished upstream stages (same fingerprint) instead of recomputing them."""
    Path(target.output_dir).mkdir(parents=True, exist_ok=True)
    for name in stages:
        link = stage_dir(target, name)
        if not link.exists():
            os.symlink(stage_dir(source, name).resolve(), link, target_is_directory=True)
        if not is_done(target, name):
            raise RuntimeError(f"ablation: stage {name} of {source.output_dir} does not fit {target.output_dir}")


def _ensure(config: PipelineConfig, name: str) -> None:
    if not is_done(config, name):
        run_stage(name, config)


def _flatten(metrics: dict[str, Any]) -> dict[str, float]:
    row: dict[str, float] = {}
    for set_name, values in metrics["scoring"].items():
        row[set_name] = values["macro_f1"]
    for task, values in metrics["generative"].items():
        row[task] = values.get("score", float("nan"))
    row.update(metrics["summary"])
    return row


def _tfidf_cross_set(config: PipelineConfig, harm_sources: tuple[str, ...]) -> dict[str, dict[str, float]]:
    from redone_sdk.training.baselines import TfidfLogReg

    scoring, _, _ = training_mixture(
        config.replace(data={"harm_sources": list(harm_sources), "sft_tasks": ["moderation"]})
    )
    rows = [r for r in scoring if r["task"] == "moderation"]
    model = TfidfLogReg().fit([r["fields"]["text"] for r in rows], [r["label"] for r in rows])
    dev, _ = load_dev(config)
    out = {}
    for set_name in ("cold_dev", "swsr_dev", "davidson_dev"):
        subset = [r for r in dev if r.get("set") == set_name]
        predicted = model.predict([r["fields"]["text"] for r in subset])
        out[set_name] = harm_set_metrics(set_name, [r["label"] for r in subset], predicted)
    return out


def run_ablation(config: PipelineConfig, *, single_tasks: tuple[str, ...] | None = None) -> Path:
    """Train and evaluate every variant under `<output_dir>/ablation`; write `table.json` and `table.md`."""
    started = time.monotonic()
    root = Path(config.output_dir) / "ablation"
    full = config.replace(
        output_dir=str(root / "cpt_sft_dpo"), cpt={"enabled": True}, sft={"enabled": True}, dpo={"enabled": True}
    )
    for name in ("data", "init", "cpt", "sft", "dpo"):
        _ensure(full, name)
    results: dict[str, dict[str, float]] = {}
    results["cpt_sft"] = _flatten(evaluate_model(stage_dir(full, "sft") / "model", full))
    results["cpt_sft_dpo"] = _flatten(evaluate_model(stage_dir(full, "dpo") / "model", full))

    sft_only = full.replace(output_dir=str(root / "sft_only"), cpt={"enabled": False}, dpo={"enabled": False})
    _link_upstream(full, sft_only, ("data", "init"))
    _ensure(sft_only, "sft")
    results["sft_only"] = _flatten(evaluate_model(stage_dir(sft_only, "sft") / "model", sft_only))

    _, _, counts = training_mixture(full)
    tasks = single_tasks or tuple(sorted(counts))
    single: dict[str, float] = {}
    for task in tasks:
        alone = sft_only.replace(output_dir=str(root / "single" / task), data={"sft_tasks": [task]})
        _link_upstream(full, alone, ("data", "init"))
        _ensure(alone, "sft")
        metrics = evaluate_model(stage_dir(alone, "sft") / "model", alone, tasks={task})
        single.update(
            {
                k: v
                for k, v in _flatten(metrics).items()
                if k not in ("snsbench_average", "harm_macro_f1", "translation")
            }
        )
    from redone_sdk.training.stages.evaluate import summarize

    results["single_task"] = single
    results["single_task"].update(
        summarize(
            {k: {"macro_f1": v} for k, v in single.items() if k.endswith("_dev")},
            {k: {"score": v} for k, v in single.items() if not k.endswith("_dev")},
        )
    )

    without = tuple(s for s in full.data.harm_sources if s != "swsr")
    cross = full.replace(
        output_dir=str(root / "cross_no_swsr"), dpo={"enabled": False}, data={"harm_sources": list(without)}
    )
    _link_upstream(full, cross, ("data", "init", "cpt"))
    _ensure(cross, "sft")
    model_cross = evaluate_model(stage_dir(cross, "sft") / "model", cross, tasks={"moderation"})["scoring"]
    tfidf_cross = _tfidf_cross_set(full, without)
    tfidf_all = _tfidf_cross_set(full, full.data.harm_sources)
    table = {
        "variants": results,
        "cross_set": {
            "trained_on": list(without),
            "model_cpt_sft": {k: v["macro_f1"] for k, v in model_cross.items()},
            "tfidf_logreg": {k: v["macro_f1"] for k, v in tfidf_cross.items()},
        },
        "tfidf_logreg_all_harm_sources": {k: v["macro_f1"] for k, v in tfidf_all.items()},
        "config": full.to_dict(),
        "seconds": round(time.monotonic() - started, 1),
    }
    (root / "table.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / "table.md").write_text(render_table(table), encoding="utf-8")
    log.info("ablation written to %s in %.0f s", root, time.monotonic() - started)
    return root


def render_table(table: dict[str, Any]) -> str:
    variants = [v for v in VARIANTS if v in table["variants"]]
    rows = sorted({k for v in variants for k in table["variants"][v]})
    summary = [r for r in ("snsbench_average", "harm_macro_f1", "translation") if r in rows]
    body = [r for r in rows if r not in summary]
    lines = ["| task (dev) | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for row in [*body, *summary]:
        cells = [table["variants"][v].get(row) for v in variants]
        label = f"**{row}**" if row in summary else row
        lines.append(f"| {label} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    cross = table["cross_set"]
    lines += [
        "",
        f"Cross-set check — harm classifiers trained on {', '.join(cross['trained_on'])} only (macro-F1 on dev parts):",
        "",
        "| set | model (CPT+SFT) | TF-IDF + LR |",
        "|---|---|---|",
    ]
    for set_name in sorted(cross["model_cpt_sft"]):
        baseline = cross["tfidf_logreg"].get(set_name, float("nan"))
        lines.append(f"| {set_name} | {cross['model_cpt_sft'][set_name]:.3f} | {baseline:.3f} |")
    lines += [
        "",
        "TF-IDF + LR trained on all harm sources: "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(table["tfidf_logreg_all_harm_sources"].items())),
    ]
    return "\n".join(lines) + "\n"
