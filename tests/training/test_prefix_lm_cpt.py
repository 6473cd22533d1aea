"""Continued pretraining of the BERT prefix-LM (training/prefix_lm_cpt.py): packing, whole-span masks, the three
objectives' inputs and targets, a loop that lowers its loss, and the pipeline's cpt stage on a 1-layer cut of
the real bge-small-zh-v1.5.

`registry` (all but the pure-Python tests): the jar is fetched from Maven Central once into the project's cache.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.training.config import CPTConfig
from redone_sdk.training.prefix_lm_cpt import objective_batch, pack_blocks, span_mask, train_cpt, warm_up_head

BGE = "bge-small-zh-v1.5"
TEXTS = [
    "今天天气很好，我们去公园散步吧。",
    "这家店的火锅太好吃了！强烈推荐给大家 #美食 #火锅 #成都",
    "女人就该待在家里做饭，这种话现在还有人说。",
    "How to make an egg waffle at home without a waffle iron?",
    "小红书 notes mix 中文 and english, 还有数字 2024。",
] * 6


# --- masks and batches (no model) -----------------------------------------------------------------------------


def test_span_mask_takes_its_share_in_whole_spans_and_never_cls() -> None:
    runs = []
    for seed in range(50):
        chosen = span_mask(128, 0.15, random.Random(seed))
        assert len(chosen) == round(0.15 * 127) and 0 not in chosen and max(chosen) < 128
        assert chosen == sorted(set(chosen))
        starts = [p for p in chosen if p - 1 not in chosen]
        runs.append(len(chosen) / len(starts))
    assert np.mean(runs) > 2.0  # whole spans (SpanBERT's mean is ~3.8 before merging), not scattered tokens
    assert span_mask(128, 0.15, random.Random(3)) == span_mask(128, 0.15, random.Random(3))
    assert span_mask(3, 0.15, random.Random(0)) in ([1], [2])  # at least one, never [CLS]


def _blocks() -> list[list[int]]:
    return [list(range(100, 110)), list(range(200, 206))]


def test_prefix_objective_is_bidirectional_before_the_split_and_predicts_the_next_token_after() -> None:
    batch = objective_batch(_blocks(), "prefix", random.Random(1), mask_share=0.15, mask_id=103, vocab_size=1000)
    mask = batch["attention_mask"].numpy()
    for r, block in enumerate(_blocks()):
        picks = batch["positions"][batch["rows"] == r].numpy()
        targets = batch["targets"][batch["rows"] == r].numpy()
        split = int(picks[0]) + 1  # the first prediction reads the last prefix position
        assert list(picks) == list(range(split - 1, len(block) - 1))
        assert list(targets) == block[split:]
        n = len(block)
        assert mask[r, 0, split - 1] == 1  # prefix positions see the whole prefix ...
        assert mask[r, :split, split:].sum() == 0  # ... and nothing after it
        assert np.array_equal(mask[r, split:n, split:n], np.tril(np.ones((n - split, n - split))))
        assert mask[r, n:, :].sum() == 0 and mask[r, :, n:].sum() == 0  # padding, both ways
    assert batch["input_ids"].tolist()[1][:6] == _blocks()[1]  # inputs are not corrupted


def test_causal_objective_predicts_every_next_token_under_a_triangular_mask() -> None:
    batch = objective_batch(_blocks(), "causal", random.Random(1), mask_share=0.15, mask_id=103, vocab_size=1000)
    assert batch["targets"].tolist() == [*range(101, 110), *range(201, 206)]
    mask = batch["attention_mask"].numpy()
    assert np.array_equal(mask[0], np.tril(np.ones((10, 10))))


def test_span_mlm_corrupts_the_chosen_tokens_and_predicts_the_originals_from_both_sides() -> None:
    blocks = [list(range(1000, 1200)) for _ in range(20)]
    batch = objective_batch(blocks, "span_mlm", random.Random(5), mask_share=0.15, mask_id=103, vocab_size=21128)
    rows, positions = batch["rows"].numpy(), batch["positions"].numpy()
    assert len(rows) == 20 * round(0.15 * 199)
    assert np.array_equal(batch["targets"].numpy(), 1000 + positions)  # the original token at the position
    inputs = batch["input_ids"].numpy()[rows, positions]
    share_masked = np.mean(inputs == 103)
    share_kept = np.mean(inputs == 1000 + positions)
    assert 0.74 < share_masked < 0.86 and 0.05 < share_kept < 0.16
    untouched = np.ones((20, 200), dtype=bool)
    untouched[rows, positions] = False
    assert np.array_equal(batch["input_ids"].numpy()[untouched], np.tile(np.arange(1000, 1200), (20, 1))[untouched])
    assert batch["attention_mask"].numpy().min() == 1  # bidirectional everywhere


# --- on the real backbone -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from redone_sdk.training import pretrained

    return pretrained.convert(BGE, tmp_path_factory.mktemp("cpt") / "cut1", num_layers=1)


@pytest.mark.registry
def test_pack_blocks_open_with_cls_and_keep_the_token_stream(cut: Path) -> None:
    from redone_sdk.training.prefix_lm import prefix_lm_tokenizer

    tokenizer = prefix_lm_tokenizer(cut)
    blocks = pack_blocks(tokenizer, TEXTS, 32)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert blocks and all(len(b) == 32 and b[0] == cls_id for b in blocks)
    stream = [t for e in tokenizer.encode_batch(TEXTS) for t in [*e.ids, sep_id]]
    assert [t for b in blocks for t in b[1:]] == stream[: 31 * len(blocks)]


@pytest.mark.registry
@pytest.mark.parametrize("objective", ["span_mlm", "prefix", "causal"])
def test_each_objective_lowers_its_own_loss(cut: Path, objective: str) -> None:
    import torch
    import torch.nn.functional as F

    from redone_sdk.training.prefix_lm import build_prefix_lm, prefix_lm_tokenizer

    model = build_prefix_lm(cut)
    tokenizer = prefix_lm_tokenizer(cut)
    blocks = pack_blocks(tokenizer, TEXTS, 32)
    cfg = dataclasses.replace(
        CPTConfig(), objective=objective, seq_length=32, batch_size=8, max_steps=30, learning_rate=1e-3
    )

    def loss() -> float:  # the same corrupted inputs and targets before and after
        batch = objective_batch(
            blocks,
            objective,
            random.Random(9),
            mask_share=0.15,
            mask_id=tokenizer.token_to_id("[MASK]"),
            vocab_size=model.config.vocab_size,
        )
        with torch.no_grad():
            states = model.bert(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=torch.zeros_like(batch["input_ids"]),
            ).last_hidden_state
            logits = model.cls(states[batch["rows"], batch["positions"]])
        return float(F.cross_entropy(logits, batch["targets"]))

    before = loss()
    summary = train_cpt(model, tokenizer, TEXTS, cfg, seed=4)
    after = loss()
    assert summary["steps"] == 30 and summary["objective"] == objective
    assert summary["tokens"] % 32 == 0 and len(blocks) * 32 <= summary["tokens"] <= 30 * 8 * 32
    assert after < 0.7 * before, (before, after)
    # the head stays tied to the embeddings (one matrix trained, not two)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


@pytest.mark.registry
def test_head_warm_up_trains_the_head_alone_then_cpt_trains_everything(cut: Path) -> None:
    import torch

    from redone_sdk.training.prefix_lm import build_prefix_lm, prefix_lm_tokenizer

    model = build_prefix_lm(cut)
    tokenizer = prefix_lm_tokenizer(cut)
    blocks = pack_blocks(tokenizer, TEXTS, 32)
    rng = random.Random(2)
    mask_id, vocab = tokenizer.token_to_id("[MASK]"), model.config.vocab_size
    batches = iter([objective_batch(blocks, "span_mlm", rng, mask_share=0.15, mask_id=mask_id, vocab_size=vocab)] * 40)
    encoder = {k: v.clone() for k, v in model.bert.state_dict().items()}
    transform = {k: v.clone() for k, v in model.cls.predictions.transform.state_dict().items()}
    figures = warm_up_head(model, batches, 40, 1e-3)
    assert figures["head_warmup_steps"] == 40
    assert figures["head_warmup_final_loss"] < 0.8 * figures["head_warmup_first_loss"]
    assert all(torch.equal(v, model.bert.state_dict()[k]) for k, v in encoder.items())  # incl. the tied rows
    moved = model.cls.predictions.transform.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in transform.items())

    cfg = dataclasses.replace(
        CPTConfig(), objective="span_mlm", seq_length=32, batch_size=8, max_steps=3, head_warmup_steps=5
    )
    summary = train_cpt(model, tokenizer, TEXTS, cfg, seed=4)
    assert summary["head_warmup_steps"] == 5 and summary["steps"] == 3
    assert any(not torch.equal(v, model.bert.state_dict()[k]) for k, v in encoder.items())


@pytest.mark.registry
def test_the_cpt_stage_runs_between_init_and_sft_and_names_its_objective(tmp_path: Path, cut_base_config) -> None:
    from safetensors.numpy import load_file

    from redone_sdk.training.pipeline import run_stage
    from redone_sdk.training.stages.common import latest_model_dir

    config = cut_base_config(
        tmp_path / "run",
        cpt__enabled=True,
        cpt__objective="span_mlm",
        cpt__max_steps=3,
        cpt__seq_length=64,
        cpt__batch_size=4,
    )
    for stage in ("data", "init", "cpt"):
        run_stage(stage, config)
    done = json.loads((tmp_path / "run" / "cpt" / "DONE.json").read_text())
    assert done["objective"] == "span_mlm" and done["steps"] == 3 and np.isfinite(done["final_loss"])
    assert done["tokens_per_step"] == 4 * 64
    before = load_file(str(tmp_path / "run" / "init" / "model" / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "cpt" / "model" / "model.safetensors"))
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert (tmp_path / "run" / "cpt" / "model" / "PRETRAINED.json").is_file()  # the lineage travels on
    assert latest_model_dir(config, "sft") == tmp_path / "run" / "cpt" / "model"
