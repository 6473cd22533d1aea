"""The pipeline on the pretrained BERT prefix-LM (training/prefix_lm_sft.py, stages init/sft/eval/export): a
1-layer cut of the real bge-small-zh-v1.5 trained a few steps on the fixture data, exported, calibrated and
loaded by the SDK; then a student distilled from that bundle. Also the loss and batching pieces on their own.

`registry`: the jar is fetched from Maven Central once into the project's cache.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.bundle import Bundle
from redone_sdk.labeled_data import COLD_TOPIC_LABELS, harm_examples
from redone_sdk.training.config import SFTStageConfig
from redone_sdk.training.prefix_lm_sft import ScoringItem, _batches, _loss, class_weights

BGE = "bge-small-zh-v1.5"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, cut_base_config) -> Path:
    from redone_sdk.training.pipeline import run_all

    out = tmp_path_factory.mktemp("prefix-lm-run") / "base"
    run_all(cut_base_config(out))
    return out


@pytest.mark.registry
def test_base_preset_trains_exports_and_the_sdk_loads_the_calibrated_bundle(base_run: Path) -> None:
    from safetensors.numpy import load_file

    from redone_sdk import Moderator, NoteQueryMatcher

    sft = json.loads((base_run / "sft" / "DONE.json").read_text())
    assert sft["steps"] == 8 and sft["examples"] > 0 and np.isfinite(sft["final_loss"])
    before = load_file(str(base_run / "init" / "model" / "model.safetensors"))
    after = load_file(str(base_run / "sft" / "model" / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = [name for name in before if not np.array_equal(before[name], after[name])]
    assert len(moved) > len(before) // 2  # SFT trained the encoder, not only the head
    metrics = json.loads((base_run / "eval" / "metrics.json").read_text())
    assert {"cold_dev", "swsr_dev", "davidson_dev"} <= set(metrics["scoring"])
    manifest = json.loads((base_run / "bundle" / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["architecture"] == "BertLMHeadModel (prefix-LM)"
    assert "303b0fbe4eed8cdeae9e25d576946a6b18e53caf330f95cae90a4976abddbcaf" in lineage["base_model"]
    licenses = " ".join(source["license"] for source in lineage["data_sources"])
    assert "BAAI" in licenses and "MIT" in licenses and "Apache" in licenses and "BAAI" in manifest["license"]
    temperature = manifest["tasks"]["moderation"]["temperature"]
    assert temperature > 0 and temperature != 1.0  # fitted, not the default
    assert manifest["metrics"]["calibration/moderation"]["temperature"] == pytest.approx(temperature)
    assert "int8_check" in manifest["metrics"] and "fp32/cold_dev" in manifest["metrics"]
    offsets = manifest["metrics"]["label_offsets/moderation"]  # fitted on the fixture's dev sets, as the policy
    chosen = {k[len("offset/") :]: v for k, v in offsets.items() if k.startswith("offset/") and v}
    assert manifest["tasks"]["moderation"].get("label_offsets", {}) == (chosen if offsets["kept"] else {})
    gain = offsets["cross_fitted/mean_macro_f1"] > offsets["before/mean_macro_f1"]
    assert offsets["kept"] == float(bool(chosen) and gain)
    assert offsets["after/mean_macro_f1"] >= offsets["before/mean_macro_f1"] and offsets["offset/safe"] == 0.0
    assert "cross_fitted/davidson_dev/f1/hate" in offsets and "review/hate" in manifest["metrics"]["policy/dev"]
    lexical = manifest["tasks"]["matching"]["lexical"]  # fitted on the fixture's QueryCorr train rows
    assert 0 <= lexical["weight"] <= 1 and lexical["grade_cuts"] == sorted(lexical["grade_cuts"])
    fit = manifest["metrics"]["lexical_fusion/matching"]
    assert fit["weight"] == lexical["weight"] and fit["examples"] == 30 and "30 pairs" in lexical["fitted_on"]
    match = NoteQueryMatcher.load(base_run / "bundle").score("egg waffle", {"note_id": "q", "content": "egg waffles"})
    assert match.lexical_coverage == 0.5
    moderator = Moderator.load(base_run / "bundle")
    result = moderator.classify({"note_id": "n1", "content": "女人就该待在家里做饭"})
    assert set(result.scores) == {"offensive", "hate", "sexism"} and 0 < sum(result.scores.values()) < 1
    assert result.label in {"safe", *result.scores}


@pytest.mark.registry
def test_a_fusion_holdout_stays_out_of_training_and_the_fusion_is_fitted_on_it(cut_base_config, tmp_path: Path) -> None:
    from redone_sdk.training.lexical_fusion import fusion_holdout_pairs
    from redone_sdk.training.pipeline import run_all
    from redone_sdk.training.stages.data import training_mixture

    config = cut_base_config(tmp_path / "run", data__fusion_holdout=0.5)
    run_all(config)
    train = [json.loads(line) for line in (tmp_path / "run" / "data" / "train" / "querycorr.jsonl").open()]
    every = {(r["fields"]["query"], r["fields"]["note"]) for r in train}
    held = fusion_holdout_pairs(train, 0.5, config.seed)
    scoring, _, _ = training_mixture(config)
    trained = {(r["fields"]["query"], r["fields"]["note"]) for r in scoring if r["task"] == "matching"}
    assert len(every) == 30 and len(held) == 15 and trained == every - held
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["lexical_fusion/matching"]["examples"] == 15
    assert "held out of SFT" in manifest["tasks"]["matching"]["lexical"]["fitted_on"]


@pytest.mark.registry
def test_a_student_distils_from_the_base_bundle(base_run: Path, cut_base_config, tmp_path: Path) -> None:
    from redone_sdk.training.pipeline import run_all

    out = tmp_path / "small"
    config = cut_base_config(out, sft__teacher=str(base_run / "bundle"), sft__distill_texts=16)
    run_all(config, skip=("eval",))
    sft = json.loads((out / "sft" / "DONE.json").read_text())
    assert sft["teacher"] == str(base_run / "bundle") and sft["tasks"]["teacher_labeled_notes"] == 16
    teacher = json.loads((base_run / "bundle" / "manifest.json").read_text())
    digest = Bundle.load(base_run / "bundle").digest
    assert sft["teacher_bundle"] == {"name": teacher["name"], "version": teacher["version"], "digest": digest}
    description = json.loads((out / "bundle" / "manifest.json").read_text())["description"]
    assert f"distilled from {teacher['name']} {teacher['version']} (bundle digest {digest[:12]})" in description


def test_cold_topics_name_the_category(data_dir: Path) -> None:
    plain = harm_examples(data_dir, "cold", "train")
    by_topic = harm_examples(data_dir, "cold", "train", cold_topics=True)
    assert {e.label for e in plain} == {"safe", "offensive"}
    assert {e.label for e in by_topic} == {"safe", *COLD_TOPIC_LABELS.values()}
    for a, b in zip(plain, by_topic, strict=True):
        assert a.record == b.record and (a.label == "safe") == (b.label == "safe")


def _items(task: str, targets: list[int], soft: list | None = None) -> list[ScoringItem]:
    return [
        ScoringItem(tuple(range(1, 3 + i % 5)), task, t, None if soft is None else tuple(soft[i]))
        for i, t in enumerate(targets)
    ]


def test_class_weights_lift_rare_labels_and_keep_the_mean() -> None:
    from types import SimpleNamespace

    specs = {"moderation": SimpleNamespace(labels=[0, 1, 2, 3])}
    items = _items("moderation", [0] * 80 + [1] * 16 + [2] * 4)
    flat = class_weights(items, specs, 0.0)["moderation"]
    assert flat.tolist() == [1.0, 1.0, 1.0, 1.0]
    w = class_weights(items, specs, 0.5)["moderation"]
    assert w[2] > w[1] > w[0] and float(w[3]) == 1.0  # never seen: left alone
    assert float(w[2] / w[0]) == pytest.approx((80 / 4) ** 0.5)
    assert float((w[0] * 80 + w[1] * 16 + w[2] * 4) / 100) == pytest.approx(1.0)


def test_loss_mixes_gold_cross_entropy_and_kl_to_the_teacher() -> None:
    import torch
    import torch.nn.functional as F

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    weight = torch.ones(3)
    gold_only = _items("moderation", [0, 1])
    assert float(_loss(logits, gold_only, weight, 0.7)) == pytest.approx(
        float(F.cross_entropy(logits, torch.tensor([0, 1])))
    )
    soft = [[0.2, 0.5, 0.3], [0.1, 0.8, 0.1]]
    both = _items("moderation", [0, -1], soft)
    ce = F.cross_entropy(logits[:1], torch.tensor([0]))
    kl = F.kl_div(F.log_softmax(logits, dim=-1), torch.tensor(soft), reduction="batchmean")
    assert float(_loss(logits, both, weight, 0.7)) == pytest.approx(float(0.3 * ce + 0.7 * kl), rel=1e-5)
    unlabeled = _items("moderation", [-1, -1], soft)
    assert float(_loss(logits, unlabeled, weight, 0.7)) == pytest.approx(float(kl), rel=1e-5)


def test_batches_hold_one_task_and_cover_every_item_once() -> None:
    items = _items("moderation", [0] * 37) + _items("matching", [1] * 21)
    random.Random(0).shuffle(items)
    batches = _batches(items, 8, random.Random(1))
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(len(items)))
    assert all(len({items[i].task for i in batch}) == 1 and len(batch) <= 8 for batch in batches)


def test_distillation_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="distill_weight"):
        SFTStageConfig(distill_weight=1.5)
    assert np.isclose(SFTStageConfig().distill_weight, 0.7)


@pytest.mark.registry
def test_the_pytorch_backend_scores_the_prefix_lm_as_its_graph_does(base_run: Path) -> None:
    """bundle-full carries the checkpoint; `backend="torch"` reads it through the same prefix-LM scoring head the
    export traced (bidirectional prompt, the LM head's transform and bias), so both give the same probabilities."""
    from redone_sdk import Moderator, NoteQueryMatcher

    full = base_run / "bundle-full"
    assert (full / "checkpoint" / "model.safetensors").is_file()
    assert not (base_run / "bundle" / "checkpoint").exists()  # export.keep_checkpoint is off
    texts = ["女人就该待在家里做饭", "a longer english note about cooking " * 6, "短"]
    eager_moderator = Moderator.load(full, backend="torch")
    assert eager_moderator.backend_info.name == "torch"
    eager = eager_moderator.classify_batch(texts)
    graph = Moderator.load(full, backend="onnx", precision="fp32").classify_batch(texts)
    for e, g in zip(eager, graph, strict=True):
        assert np.allclose(list(e.scores.values()), list(g.scores.values()), atol=1e-4)
    pairs = [("egg waffle", {"note_id": "a", "content": "egg waffles with syrup"})]
    e, g = (
        NoteQueryMatcher.load(full, backend="torch").score_pairs(pairs)[0],
        NoteQueryMatcher.load(full, backend="onnx", precision="fp32").score_pairs(pairs)[0],
    )
    assert e.score == pytest.approx(g.score, abs=1e-4) and e.grade == g.grade
