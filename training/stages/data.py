"""Stage 1 — data: the continued-pretraining corpus and the multi-task instruction data, seeded and logged.

Writes under `<output_dir>/data/`: `cpt.jsonl` (platform text mixed with general text, deduplicated),
`train/<task>.jsonl` for every task (scoring tasks as fields + label, generative tasks as chat prompt +
answer), `dev/scoring.jsonl`, `dev/generative.jsonl` and `counts.json`. Dev parts never enter a training file.
Which tasks and sources a run trains on, and how they are mixed, is decided later by `training_mixture`, so
one data folder serves every variant of an ablation.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.corpus import build_cpt_corpus
from redone_sdk.training.datasets import Example, default_data_dir, harm_examples, querycorr_examples
from redone_sdk.training.lexical_fusion import fusion_holdout_pairs, query_note_pair
from redone_sdk.training.stages.common import is_main_process, log, mark_done, read_jsonl, stage_dir, write_jsonl
from redone_sdk.training.tasks import SCORING_TASKS

__all__ = ["run", "data_dir_of", "distinct", "training_mixture", "load_dev", "HARM_SOURCES"]

HARM_SOURCES = ("cold", "swsr", "davidson")


def data_dir_of(config: PipelineConfig) -> Path:
    return Path(config.data.data_dir) if config.data.data_dir else default_data_dir()


def _scoring_row(example: Example, set_name: str | None = None) -> dict[str, Any]:
    row = {"task": example.task, "fields": example.record, "label": example.label, "source": example.source}
    if set_name:
        row["set"] = set_name
    return row


def _chat_row(example: Any) -> dict[str, Any]:
    return example.to_dict()


def _cap(rows: list[dict[str, Any]], limit: int, rng: random.Random) -> list[dict[str, Any]]:
    return rng.sample(rows, limit) if limit and len(rows) > limit else rows


def run(config: PipelineConfig) -> Path:
    from redone_sdk.training.instructions import TASKS, build_instructions

    generative_tasks = [t for t in TASKS if t not in SCORING_TASKS]
    budget = config.data.max_input_chars

    out = stage_dir(config, "data")
    rng = random.Random(config.seed)
    data_dir = data_dir_of(config)
    limit = config.data.max_eval_examples

    topics = config.data.cold_topic_labels
    train: dict[str, list[dict[str, Any]]] = {
        "moderation": [
            _scoring_row(e) for s in HARM_SOURCES for e in harm_examples(data_dir, s, "train", cold_topics=topics)
        ],
        "querycorr": [_scoring_row(e) for e in querycorr_examples(data_dir, "train")],
    }
    dev_scoring = [
        r
        for s in HARM_SOURCES
        for r in _cap(
            [_scoring_row(e, f"{s}_dev") for e in harm_examples(data_dir, s, "dev", cold_topics=topics)], limit, rng
        )
    ]
    dev_scoring += _cap([_scoring_row(e, "querycorr_dev") for e in querycorr_examples(data_dir, "dev")], limit, rng)
    for example in build_instructions(data_dir, "train", generative_tasks, seed=config.seed, max_input_chars=budget):
        train.setdefault(example.task, []).append(_chat_row(example))
    dev_by_task: dict[str, list[dict[str, Any]]] = {}
    for example in build_instructions(data_dir, "dev", generative_tasks, seed=config.seed, max_input_chars=budget):
        dev_by_task.setdefault(example.task, []).append(_chat_row(example))
    dev_generative = [r for _, rows in sorted(dev_by_task.items()) for r in _cap(rows, limit, rng)]

    corpus, corpus_stats = build_cpt_corpus(
        data_dir,
        general=config.data.general_corpus,
        general_ratio=config.data.general_ratio,
        max_chars=config.data.cpt_max_chars,
        seed=config.seed,
    )
    counts = {
        "train": {task: len(rows) for task, rows in sorted(train.items())},
        "dev": dict(sorted(Counter(r.get("set", r["task"]) for r in dev_scoring + dev_generative).items())),
        "cpt": corpus_stats,
    }
    if is_main_process():
        for task, rows in train.items():
            write_jsonl(out / "train" / f"{task}.jsonl", rows)
        write_jsonl(out / "dev" / "scoring.jsonl", dev_scoring)
        write_jsonl(out / "dev" / "generative.jsonl", dev_generative)
        write_jsonl(out / "cpt.jsonl", [{"text": t} for t in corpus])
        (out / "counts.json").write_text(json.dumps(counts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("data: %s", json.dumps(counts, ensure_ascii=False))
    mark_done(config, "data", {"counts": counts})
    return out


def distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mixture's rows without the repeats that upsampling made, in first-seen order."""
    return list({json.dumps(r, sort_keys=True): r for r in rows}.values())


def training_mixture(config: PipelineConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(scoring rows, generative rows, count per task) this run trains on: tasks, sources, upsampling, caps."""
    folder = stage_dir(config, "data") / "train"
    if not folder.is_dir():
        read_jsonl(folder / "moderation.jsonl")  # raises the "run `redone train data` first" error
    rng = random.Random(config.seed)
    wanted = set(config.data.sft_tasks)
    available = sorted(p.stem for p in folder.glob("*.jsonl"))
    unknown = sorted(wanted - set(available) - {"all"})
    if unknown:
        raise ValueError(f"data.sft_tasks names unknown tasks {unknown}; known: {available}")
    tasks = available if "all" in wanted else sorted(wanted)
    if not config.data.matching:
        tasks = [t for t in tasks if t != "querycorr"]
    scoring: list[dict[str, Any]] = []
    generative: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for task in tasks:
        rows = read_jsonl(folder / f"{task}.jsonl")
        if task == "moderation":
            rows = [r for r in rows if r["source"] in config.data.harm_sources]
        if task == "querycorr" and config.data.fusion_holdout:
            held = fusion_holdout_pairs(rows, config.data.fusion_holdout, config.seed)
            rows = [r for r in rows if query_note_pair(r) not in held]
        rows = _cap(rows, config.data.max_per_task, rng) * config.data.task_upsample.get(task, 1)
        counts[task] = len(rows)
        (scoring if task in SCORING_TASKS else generative).extend(rows)
    rng.shuffle(scoring)
    rng.shuffle(generative)
    if config.data.max_train_examples:
        share = config.data.max_train_examples / max(1, len(scoring) + len(generative))
        scoring = scoring[: max(1, round(len(scoring) * share))]
        generative = generative[: round(len(generative) * share)]
    return scoring, generative, counts


def load_dev(config: PipelineConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    folder = stage_dir(config, "data") / "dev"
    return read_jsonl(folder / "scoring.jsonl"), read_jsonl(folder / "generative.jsonl")
