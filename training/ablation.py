"""`redone train ablation`: what each stage buys, on the same data, in one table (like RedOne's).

Variants, all from the same tokenizer and initial weights:
- `sft_only`     — multi-task SFT from the initial model;
- `cpt_sft`      — continued pretraining, then the same SFT;
- `cpt_sft_dpo`  — the full recipe, DPO on the SFT model's own mistakes;
- `single_task`  — each task fine-tuned alone from the initial model (one model per task).
On a pretrained backbone (`model.pretrained`: the prefix-LM presets, which have no CPT stage) the ablation is
`backbone` instead (`backbone_ablation.py`): prefix-LM vs causal LM vs a plain classifier head on that backbone.
Stages that `redone train all` already finished in the same output folder with the same configuration are
reused (linked), so the ablation after a pipeline run trains only what the pipeline did not.
Plus the cross-set check: the full recipe (CPT, SFT, DPO) with SWSR left out of its harm data, scored after SFT
and after DPO on SWSR's dev part, against a char 1–3-gram TF-IDF + logistic regression trained on the same data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.evaluate import harm_set_metrics
from redone_sdk.training.pipeline import run_stage
from redone_sdk.training.stages.common import is_done, log, stage_dir
from redone_sdk.training.stages.data import load_dev, training_mixture
from redone_sdk.training.stages.evaluate import evaluate_model

__all__ = ["PARTS", "VARIANTS", "run_ablation", "render_table"]

VARIANTS = ("sft_only", "cpt_sft", "cpt_sft_dpo", "single_task")
PARTS = (*VARIANTS, "cross_set", "backbone")
_CROSS_COLUMNS = (
    ("model_cpt_sft", "model (CPT+SFT)"),
    ("model_cpt_sft_dpo", "model (CPT+SFT+DPO)"),
    ("tfidf_logreg", "TF-IDF + LR"),
)


def _link_upstream(source: PipelineConfig, target: PipelineConfig, stages: tuple[str, ...]) -> None:
    """Share finished upstream stages (same fingerprint) instead of recomputing them."""
    Path(target.output_dir).mkdir(parents=True, exist_ok=True)
    for name in stages:
        link = stage_dir(target, name)
        if not link.exists():
            os.symlink(stage_dir(source, name).resolve(), link, target_is_directory=True)
        if not is_done(target, name):
            raise RuntimeError(f"ablation: stage {name} of {source.output_dir} does not fit {target.output_dir}")


def reuse_finished(source: PipelineConfig, target: PipelineConfig, stages: tuple[str, ...]) -> list[str]:
    """Link the stages `redone train all` already finished in `source` (same fingerprint) into `target`."""
    reused: list[str] = []
    for name in stages:
        if stage_dir(target, name).exists() or not is_done(source, name):
            break
        Path(target.output_dir).mkdir(parents=True, exist_ok=True)
        os.symlink(stage_dir(source, name).resolve(), stage_dir(target, name), target_is_directory=True)
        reused.append(name)
    return reused


def ensure_stage(config: PipelineConfig, name: str) -> None:
    if not is_done(config, name):
        run_stage(name, config)


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, float]:
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


def stage_summary(config: PipelineConfig, name: str) -> dict[str, Any]:
    """Steps, first/final loss and runtime a stage recorded in its DONE.json (what CPT's loss fell to, say)."""
    marker = stage_dir(config, name) / "DONE.json"
    if not marker.is_file():
        return {}
    done = json.loads(marker.read_text())
    keep = ("steps", "first_loss", "final_loss", "train_runtime_s", "tokens_per_step", "pairs")
    return {k: done[k] for k in keep if k in done}


def _machine() -> dict[str, Any]:
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {"device": device, "torch": torch.__version__, "python": platform.python_version()}


def run_ablation(
    config: PipelineConfig,
    *,
    single_tasks: tuple[str, ...] | None = None,
    parts: tuple[str, ...] | None = None,
) -> Path:
    """Train and evaluate every variant under `<output_dir>/ablation`; write `table.json` and `table.md`.

    The table is rewritten after every variant (with `"complete": false` until the end), so a run that stops
    part-way leaves what it measured; finished stages are reused when the command is run again. `parts`
    (some of `PARTS`) runs only those and merges them into the table already there, e.g. to finish the
    single-task column of a run that stopped.
    """
    unknown = set(parts or ()) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown ablation parts {sorted(unknown)}; choose from {PARTS}")
    if config.model.pretrained:
        return _run_pretrained_ablation(config, parts)
    if parts and "backbone" in parts:
        raise ValueError("the backbone part compares ways of post-training a pretrained backbone: set model.pretrained")
    wanted = set(parts or PARTS)
    started = time.monotonic()
    root = Path(config.output_dir) / "ablation"
    full = config.replace(
        output_dir=str(root / "cpt_sft_dpo"), cpt={"enabled": True}, sft={"enabled": True}, dpo={"enabled": True}
    )
    table: dict[str, Any] = {"variants": {}, "stages": {}, "seconds": {}}
    if parts and (root / "table.json").is_file():
        table = json.loads((root / "table.json").read_text(encoding="utf-8"))
    if "machine" in table:  # merging: the table keeps the machine of its first run; later ones are listed
        table.setdefault("runs", []).append({"parts": sorted(wanted), "machine": _machine()})
    else:
        table["machine"] = _machine()
    table.update(config=full.to_dict(), complete=False)

    def write() -> None:
        table["seconds"]["total"] = round(time.monotonic() - started, 1)
        root.mkdir(parents=True, exist_ok=True)
        (root / "table.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (root / "table.md").write_text(render_table(table), encoding="utf-8")

    def timed(name: str, fn: Any) -> Any:
        begun = time.monotonic()
        result = fn()
        table["seconds"][name] = round(time.monotonic() - begun, 1)
        return result

    pipeline = config.replace(cpt={"enabled": True}, sft={"enabled": True}, dpo={"enabled": True})
    table["reused_from_pipeline_run"] = reuse_finished(pipeline, full, ("data", "init", "cpt", "sft", "dpo"))
    needed = ("data", "init", "cpt", "sft", "dpo") if wanted & {"cpt_sft", "cpt_sft_dpo"} else ("data", "init")
    if "cross_set" in wanted and len(needed) == 2:
        needed = ("data", "init", "cpt")
    for name in needed:
        timed(f"train/{name}", lambda name=name: ensure_stage(full, name))
        table["stages"][name] = stage_summary(full, name)
    results: dict[str, dict[str, float]] = table["variants"]
    for variant, stage in (("cpt_sft", "sft"), ("cpt_sft_dpo", "dpo")):
        if variant in wanted:
            model_dir = stage_dir(full, stage) / "model"
            results[variant] = flatten_metrics(timed(f"eval/{variant}", lambda d=model_dir: evaluate_model(d, full)))
            write()

    if "sft_only" in wanted:
        sft_only = full.replace(output_dir=str(root / "sft_only"), cpt={"enabled": False}, dpo={"enabled": False})
        _link_upstream(full, sft_only, ("data", "init"))
        timed("train/sft_only", lambda: ensure_stage(sft_only, "sft"))
        table["stages"]["sft_only/sft"] = stage_summary(sft_only, "sft")
        results["sft_only"] = flatten_metrics(
            timed("eval/sft_only", lambda: evaluate_model(stage_dir(sft_only, "sft") / "model", sft_only))
        )
        write()

    if "cross_set" in wanted:
        without = tuple(s for s in full.data.harm_sources if s != "swsr")
        cross = full.replace(output_dir=str(root / "cross_no_swsr"), data={"harm_sources": list(without)})
        _link_upstream(full, cross, ("data", "init", "cpt"))
        timed("train/cross_no_swsr", lambda: ensure_stage(cross, "sft"))
        timed("train/cross_no_swsr_dpo", lambda: ensure_stage(cross, "dpo"))  # pairs mined without SWSR too
        model_cross, model_cross_dpo = (
            evaluate_model(stage_dir(cross, stage) / "model", cross, tasks={"moderation"})["scoring"]
            for stage in ("sft", "dpo")
        )
        tfidf_cross = _tfidf_cross_set(full, without)
        tfidf_all = _tfidf_cross_set(full, full.data.harm_sources)
        table["cross_set"] = {
            "trained_on": list(without),
            "model_cpt_sft": {k: v["macro_f1"] for k, v in model_cross.items()},
            "model_cpt_sft_dpo": {k: v["macro_f1"] for k, v in model_cross_dpo.items()},
            "tfidf_logreg": {k: v["macro_f1"] for k, v in tfidf_cross.items()},
        }
        table["tfidf_logreg_all_harm_sources"] = {k: v["macro_f1"] for k, v in tfidf_all.items()}
        write()

    if "single_task" in wanted:
        _run_single_tasks(full, root, table, single_tasks, timed, write)
    table["complete"] = _is_complete(table, full)
    write()
    log.info("ablation written to %s in %.0f s", root, time.monotonic() - started)
    return root


def _run_pretrained_ablation(config: PipelineConfig, parts: tuple[str, ...] | None) -> Path:
    """The ablation of a pretrained-backbone preset: the backbone part (the prefix-LM has no CPT stage, so the
    CPT variants and the cross-set check's CPT model do not apply; the cross-set check is a `--data-harm-sources`
    run of the pipeline)."""
    from redone_sdk.training.backbone_ablation import run_backbone_ablation

    other = set(parts or ("backbone",)) - {"backbone"}
    if other:
        raise ValueError(
            f"ablation parts {sorted(other)} need continued pretraining, which the pretrained prefix-LM presets do not "
            "have; run --parts backbone"
        )
    started = time.monotonic()
    root = Path(config.output_dir) / "ablation"
    table: dict[str, Any] = {"machine": _machine(), "config": config.to_dict(), "complete": False}
    table["backbone"] = run_backbone_ablation(config, root / "backbone")
    table["complete"] = True
    table["seconds"] = {"total": round(time.monotonic() - started, 1)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "table.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / "table.md").write_text(render_table(table), encoding="utf-8")
    log.info("ablation written to %s in %.0f s", root, time.monotonic() - started)
    return root


def _is_complete(table: dict[str, Any], full: PipelineConfig) -> bool:
    """Every variant, the cross-set check, and every task of the mixture in the single-task column."""
    _, _, counts = training_mixture(full)
    every_task = set(counts) <= set(table.get("single_tasks_done", []))
    return set(VARIANTS) <= set(table["variants"]) and "cross_set" in table and every_task


def _run_single_tasks(
    full: PipelineConfig,
    root: Path,
    table: dict[str, Any],
    single_tasks: tuple[str, ...] | None,
    timed: Any,
    write: Any,
) -> None:
    """Each task fine-tuned alone from the initial model, scored on its own dev part only."""
    from redone_sdk.training.stages.evaluate import summarize

    _, _, counts = training_mixture(full)
    sft_only = full.replace(output_dir=str(root / "sft_only"), cpt={"enabled": False}, dpo={"enabled": False})
    results: dict[str, dict[str, float]] = table["variants"]
    single: dict[str, float] = {
        k: v
        for k, v in results.get("single_task", {}).items()
        if k not in ("snsbench_average", "harm_macro_f1", "translation")
    }
    done: list[str] = table.setdefault("single_tasks_done", [])
    for task in single_tasks or tuple(sorted(counts)):
        alone = sft_only.replace(output_dir=str(root / "single" / task), data={"sft_tasks": [task]})
        _link_upstream(full, alone, ("data", "init"))
        timed(f"train/single/{task}", lambda alone=alone: ensure_stage(alone, "sft"))
        metrics = evaluate_model(stage_dir(alone, "sft") / "model", alone, tasks={task})
        single.update(
            {
                k: v
                for k, v in flatten_metrics(metrics).items()
                if k not in ("snsbench_average", "harm_macro_f1", "translation")
            }
        )
        results["single_task"] = {
            **single,
            **summarize(
                {k: {"macro_f1": v} for k, v in single.items() if k.endswith("_dev")},
                {k: {"score": v} for k, v in single.items() if not k.endswith("_dev")},
            ),
        }
        if task not in done:
            done.append(task)
        write()


def render_table(table: dict[str, Any]) -> str:
    if "backbone" in table:
        from redone_sdk.training.backbone_ablation import render_backbone

        machine = table.get("machine", {})
        head = [f"Machine: {machine.get('device')}, torch {machine.get('torch')}.", ""] if machine else []
        return "\n".join([*head, *render_backbone(table["backbone"])])
    variants = [v for v in VARIANTS if v in table["variants"]]
    rows = sorted({k for v in variants for k in table["variants"][v]})
    summary = [r for r in ("snsbench_average", "harm_macro_f1", "translation") if r in rows]
    body = [r for r in rows if r not in summary]
    machine = table.get("machine", {})
    lines = []
    if machine:
        lines += [f"Machine: {machine.get('device')}, torch {machine.get('torch')}.", ""]
    if not table.get("complete", True):
        lines += ["**Partial table: the run stopped before every variant was measured.**", ""]
    for run in table.get("runs", []):
        lines += [f"Merged in later: {', '.join(run['parts'])} on {run['machine'].get('device')}.", ""]
    if "single_tasks_done" in table:
        lines += [f"Single-task column: {', '.join(table['single_tasks_done'])}.", ""]
    cpt = table.get("stages", {}).get("cpt", {})
    if cpt.get("final_loss") is not None:
        tokens = cpt.get("steps", 0) * cpt.get("tokens_per_step", 0)
        lines += [
            f"Continued pretraining: {cpt['steps']} steps, {tokens / 1e6:.2f} M tokens, "
            f"loss {cpt['first_loss']:.2f} → {cpt['final_loss']:.2f}.",
            "",
        ]
    lines += ["| task (dev) | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for row in [*body, *summary]:
        cells = [table["variants"][v].get(row) for v in variants]
        label = f"**{row}**" if row in summary else row
        lines.append(f"| {label} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    if "cross_set" not in table:
        return "\n".join(lines) + "\n"
    cross = table["cross_set"]
    lines += [
        "",
        f"Cross-set check — harm classifiers trained on {', '.join(cross['trained_on'])} only (macro-F1 on dev parts):",
        "",
    ]
    columns = [(k, label) for k, label in _CROSS_COLUMNS if k in cross]  # tables from before DPO lack that one
    lines += ["| set | " + " | ".join(label for _, label in columns) + " |", "|---|" + "---|" * len(columns)]
    for set_name in sorted(cross["model_cpt_sft"]):
        cells = [cross[k].get(set_name, float("nan")) for k, _ in columns]
        lines.append(f"| {set_name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += [
        "",
        "TF-IDF + LR trained on all harm sources: "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(table["tfidf_logreg_all_harm_sources"].items())),
    ]
    return "\n".join(lines) + "\n"
