"""Multi-task instruction data: every task on both sides, dev apart from train, deterministic, scorable."""

import json
from pathlib import Path

import pytest

from redone_sdk.training.datasets import is_dev
from redone_sdk.training.instructions import TASKS, ChatExample, build_instructions, count_by_task
from redone_sdk.training.snsbench_metrics import score_task
from redone_sdk.training.tasks import MATCHING_TEMPLATE, MODERATION_TEMPLATE, answer_tokens


@pytest.fixture(scope="module")
def train(data_dir: Path) -> list[ChatExample]:
    return build_instructions(data_dir, "train")


@pytest.fixture(scope="module")
def dev(data_dir: Path) -> list[ChatExample]:
    return build_instructions(data_dir, "dev")


def by_task(examples: list[ChatExample], task: str) -> list[ChatExample]:
    return [e for e in examples if e.task == task]


def test_every_task_has_train_and_dev(train: list[ChatExample], dev: list[ChatExample]) -> None:
    train_counts, dev_counts = count_by_task(train), count_by_task(dev)
    assert list(train_counts) == list(TASKS) and list(dev_counts) == list(TASKS)
    assert all(n > 0 for n in train_counts.values()) and all(n > 0 for n in dev_counts.values())
    for task in TASKS:  # dev is the smaller side everywhere (about 20 %)
        assert dev_counts[task] < train_counts[task], task


def test_dev_and_train_are_disjoint(data_dir: Path, train: list[ChatExample], dev: list[ChatExample]) -> None:
    for task in TASKS:
        train_prompts = {e.prompt for e in by_task(train, task)}
        assert not train_prompts & {e.prompt for e in by_task(dev, task)}, task
        if task not in ("moderation", "querycorr"):  # records of one file: no record on both sides
            train_records = {e.info["record"] for e in by_task(train, task)}
            assert not train_records & {e.info["record"] for e in by_task(dev, task)}, task
    # the split key is the one the CPT corpus uses: content for SNS-Bench, the Chinese side for SNS-TransBench
    # (so both directions of a pair fall on the same side)
    files = {
        "mrc_simple": ("sns-bench/Note-MRC-simple.json", "content"),
        "translation_zh_en": ("sns-transbench/RedTrans-Bench.json", "zh"),
        "translation_en_zh": ("sns-transbench/RedTrans-Bench.json", "zh"),
    }
    for task, (name, key) in files.items():
        records = json.loads((data_dir / name).read_text(encoding="utf-8"))
        assert all(is_dev(records[e.info["record"]][key]) for e in by_task(dev, task))
        assert not any(is_dev(records[e.info["record"]][key]) for e in by_task(train, task))


def test_build_is_deterministic(data_dir: Path, train: list[ChatExample], dev: list[ChatExample]) -> None:
    assert build_instructions(data_dir, "train") == train
    assert build_instructions(data_dir, "dev", seed=7) == dev  # the seed never touches dev
    other = build_instructions(data_dir, "train", tasks=["mrc_simple", "ner"], seed=7)
    assert by_task(other, "ner") == by_task(train, "ner")  # only MRC windows depend on the seed
    assert len(by_task(other, "mrc_simple")) > 0


def test_scoring_tasks_use_the_template_text(train: list[ChatExample], dev: list[ChatExample]) -> None:
    tokens = set(answer_tokens())
    for example in by_task(dev, "moderation")[:200] + by_task(train, "moderation")[-200:]:
        text = example.prompt.split("\n", 1)[1]
        assert (
            MODERATION_TEMPLATE.format(text=text)
            == f"<|im_start|>user\n{example.prompt}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert example.answer in tokens and example.answer == f"<{example.info['label']}>"
    for example in by_task(dev, "querycorr"):
        query, note = example.prompt.split("\nQuery: ", 1)[1].split("\nNote: ", 1)
        wrapped = MATCHING_TEMPLATE.format(query=query, note=note)
        assert wrapped == f"<|im_start|>user\n{example.prompt}<|im_end|>\n<|im_start|>assistant\n"
        assert example.answer == f"<grade:{example.info['label']}>"
    assert {e.source for e in by_task(train, "moderation")} == {"cold", "swsr", "davidson"}


@pytest.mark.parametrize("task", TASKS)
def test_gold_answers_parse_and_score_one(task: str, dev: list[ChatExample]) -> None:
    examples = by_task(dev, task)
    scores = score_task(task, [e.answer for e in examples], examples)
    assert scores["parse_rate"] == 1.0 and scores["score"] == pytest.approx(1.0)


def test_inputs_are_cut_to_the_budget_and_mrc_gold_stays_visible(data_dir: Path) -> None:
    tasks = ["mrc_simple", "mrc_complex", "gender", "translation_zh_en"]
    train = build_instructions(data_dir, "train", tasks=tasks, max_input_chars=300)
    dev = build_instructions(data_dir, "dev", tasks=tasks, max_input_chars=300)
    for example in by_task(train, "mrc_simple"):
        assert len(example.prompt.split("\nDoc: ", 1)[1]) <= 301
        assert all(span in example.prompt for span in example.info["spans"])
    windows = [e for e in by_task(train, "mrc_simple") if e.prompt.split("\nDoc: ", 1)[1].startswith("…")]
    assert windows  # some gold sits past the head, so a window was placed over it
    assert all(len(e.prompt) < 450 for e in by_task(dev, "gender"))
    assert all(len(e.prompt.split("\n", 1)[1]) <= 300 for e in by_task(train, "translation_zh_en"))
    full = {e.info["record"]: e for e in build_instructions(data_dir, "dev", tasks=["mrc_simple"])}
    for example in by_task(dev, "mrc_simple"):  # dev keeps its gold whatever the cut
        assert example.answer == full[example.info["record"]].answer


def test_options(data_dir: Path) -> None:
    without_swsr = build_instructions(data_dir, "train", tasks=["moderation"], harm_sources=("cold", "davidson"))
    assert {e.source for e in without_swsr} == {"cold", "davidson"}
    full = build_instructions(data_dir, "dev", tasks=["mrc_complex"], mrc_complex_answer="full")
    assert all(e.answer.startswith("<rewrite_query>") for e in full)
    assert score_task("mrc_complex", [e.answer for e in full], full)["score"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown tasks"):
        build_instructions(data_dir, "train", tasks=["taxonomy"])
    with pytest.raises(ValueError, match="split"):
        build_instructions(data_dir, "test")  # type: ignore[arg-type]


def test_rows_round_trip(dev: list[ChatExample]) -> None:
    for example in dev[:: max(1, len(dev) // 500)]:
        assert ChatExample.from_dict(json.loads(json.dumps(example.to_dict(), ensure_ascii=False))) == example
