"""The three-stage pipeline on the tiny preset: real data, a real (tiny) model, real export; built once per session."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import Bundle, Moderator
from redone_sdk.inference.onnx_backend import OnnxScorer
from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
from redone_sdk.training.datasets import harm_examples, is_dev, querycorr_examples
from redone_sdk.training.stages.common import is_done


def _losses(stage_dir: Path, key: str = "loss") -> list[float]:
    return [e[key] for e in json.loads((stage_dir / "log.json").read_text()) if key in e]


def _config(tiny_run: Path, data_dir: Path) -> PipelineConfig:
    return PipelineConfig.from_file(PRESETS_DIR / "tiny.json", output_dir=str(tiny_run), data__data_dir=str(data_dir))


def test_data_stage_counts_and_files(tiny_run: Path) -> None:
    counts = json.loads((tiny_run / "data" / "counts.json").read_text())
    expected = {"moderation", "querycorr", "taxonomy_single", "hashtag_multiple", "mrc_simple", "ner", "gender", "chlw"}
    assert expected <= set(counts["train"]) and all(v > 0 for v in counts["train"].values())
    assert {"translation_zh_en", "translation_en_zh"} <= set(counts["train"])
    assert counts["cpt"]["general_chars"] > 0 and 0.2 < counts["cpt"]["general_share"] < 0.4
    assert {"cold_dev", "swsr_dev", "davidson_dev", "querycorr_dev"} <= set(counts["dev"])


def test_dev_text_never_reaches_training_files(tiny_run: Path) -> None:
    dev = [json.loads(line) for line in (tiny_run / "data" / "dev" / "scoring.jsonl").read_text().splitlines()]
    dev_texts = {r["fields"].get("text") for r in dev if r["task"] == "moderation"}
    train = (tiny_run / "data" / "train" / "moderation.jsonl").read_text()
    train_texts = {json.loads(line)["fields"]["text"] for line in train.splitlines()}
    assert dev_texts and not dev_texts & train_texts
    corpus = {json.loads(line)["text"] for line in (tiny_run / "data" / "cpt.jsonl").read_text().splitlines()}
    assert not dev_texts & corpus


def test_continued_pretraining_loss_falls(tiny_run: Path) -> None:
    losses = _losses(tiny_run / "cpt")
    assert len(losses) >= 2 and losses[-1] < losses[0]


def test_sft_loss_falls(tiny_run: Path) -> None:
    losses = _losses(tiny_run / "sft")
    assert len(losses) >= 2 and losses[-1] < losses[0] * 0.9


def test_dpo_pairs_come_from_mistakes(tiny_run: Path) -> None:
    pairs = [json.loads(line) for line in (tiny_run / "dpo" / "pairs.jsonl").read_text().splitlines()]
    assert pairs
    for pair in pairs:
        assert pair["prompt"].startswith("<|im_start|>user\n") and pair["prompt"].endswith("<|im_start|>assistant\n")
        assert pair["chosen"] != pair["rejected"]
    done = json.loads((tiny_run / "dpo" / "DONE.json").read_text())
    assert done["pairs"] == len(pairs) and done["steps"] >= 1


def test_bundles_round_trip_with_metrics_and_lineage(tiny_run: Path) -> None:
    bundle = Bundle.load(tiny_run / "bundle")
    manifest = bundle.manifest
    assert set(manifest.graphs) == {"int8"} and manifest.default_graph == "int8"
    assert manifest.lineage.training_config["model"]["vocab_size"] == 600
    assert "non-commercial" in manifest.license
    for precision in ("fp32", "int8"):
        assert 0.0 <= manifest.metrics[f"{precision}/cold_dev"]["macro_f1"] <= 1.0
    assert "snsbench_average" in manifest.metrics["summary"]
    assert "int8_check" in manifest.metrics
    full = Bundle.load(tiny_run / "bundle-full")
    assert set(full.manifest.graphs) == {"fp32", "int8"}
    assert full.manifest.checkpoint == "checkpoint" and full.manifest.generation == "generation"


def test_generation_graph_agrees_with_torch(tiny_run: Path) -> None:
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from redone_sdk.training.model import load_model

    full = tiny_run / "bundle-full"
    ort_model = ORTModelForCausalLM.from_pretrained(str(full / "generation"), use_cache=True, local_files_only=True)
    torch_model = load_model(full / "checkpoint").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = torch_model(input_ids=ids, attention_mask=mask).logits
        got = ort_model(input_ids=ids, attention_mask=mask).logits
        assert np.allclose(expected.numpy(), got.numpy(), atol=1e-4)
        a = torch_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
        b = ort_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert a.tolist() == b.tolist()


def test_scoring_graph_agrees_with_the_exported_checkpoint(tiny_run: Path) -> None:
    texts = ["短", "a longer english note about cooking", "混合 mixed 文本 " * 10]
    torch_scores = Moderator.load(tiny_run / "bundle-full", backend="torch").classify_batch(texts)
    onnx_scores = Moderator.load(tiny_run / "bundle-full", precision="fp32").classify_batch(texts)
    for t, o in zip(torch_scores, onnx_scores, strict=True):
        assert np.allclose(list(t.scores.values()), list(o.scores.values()), atol=1e-5)


def test_last_position_head_matches_the_full_forward(tiny_run: Path) -> None:
    """The scoring head's shortcut (last layer at the last real token only) computes the full model's logits."""
    import torch

    from redone_sdk.inference.scoring_head import build_scoring_head
    from redone_sdk.training.model import load_model

    model = load_model(tiny_run / "bundle-full" / "checkpoint").eval()
    labels = Bundle.load(tiny_run / "bundle-full").manifest.graphs["fp32"].label_token_ids
    fast = build_scoring_head(model, labels).eval()
    full = build_scoring_head(model, labels, last_position_only=False).eval()
    assert type(fast).__name__ == "LastPositionScoringHead" and type(full).__name__ == "LabelScoringHead"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped keys are covered

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(20, model.config.vocab_size, (6, 40), generator=generator)
    lengths = torch.tensor([40, 1, 7, 23, 39, 12])
    mask = (torch.arange(40)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    with torch.inference_mode():
        expected, got = full(ids, mask), fast(ids, mask)
    assert expected.shape == got.shape == (6, len(labels))
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()


def _ragged_batch(vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Six right-padded rows of lengths 1 to 40 (the shapes the SDK feeds its graphs)."""
    rng = np.random.default_rng(0)
    lengths = np.array([40, 1, 7, 23, 39, 12])
    mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(20, vocab_size, (6, 40)) * mask
    return ids, mask


def test_fused_scoring_graph_matches_torch_and_the_torch_onnx_export(tiny_run: Path, tmp_path: Path) -> None:
    """The pipeline ships the fused graph; it computes what the PyTorch head and the plain torch.onnx export do."""
    import onnx
    import onnxruntime as ort
    import torch

    from redone_sdk.inference.scoring_head import build_scoring_head
    from redone_sdk.training.export import export_scoring_graph
    from redone_sdk.training.model import load_model

    shipped_file = tiny_run / "bundle-full" / "scoring.fp32.onnx"
    shipped = onnx.load(str(shipped_file))
    ops = {n.op_type for n in shipped.graph.node}
    assert {"Attention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization"} <= ops, ops
    int8_ops = {n.op_type for n in onnx.load(str(tiny_run / "bundle-full" / "scoring.int8.onnx")).graph.node}
    # int8 MatMuls with a scale per row (training/row_scales.py), no per-batch quantizer
    assert "MatMulIntegerToFloat" in int8_ops and "DynamicQuantizeLinear" not in int8_ops and "Attention" in int8_ops

    model = load_model(tiny_run / "bundle-full" / "checkpoint").eval()
    labels = Bundle.load(tiny_run / "bundle-full").manifest.graphs["fp32"].label_token_ids
    ids, mask = _ragged_batch(model.config.vocab_size)
    with torch.inference_mode():
        expected = build_scoring_head(model, labels, last_position_only=False)(
            torch.from_numpy(ids), torch.from_numpy(mask)
        ).numpy()
    plain, no_cache = export_scoring_graph(
        model, labels, tmp_path / "plain.onnx", max_length=64, opset=18, fused=False, prefixes={"t": [1, 2]}
    )
    assert no_cache is None  # only the fused graph takes a prefix cache
    assert "SkipSimplifiedLayerNormalization" not in {n.op_type for n in onnx.load(str(plain)).graph.node}
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    outputs = {
        "torch.onnx": session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
        # random ids start with no cached prefix: the shipped graph gets a zero-length one and scores them whole
        "fused": OnnxScorer(shipped_file, prefix_cache=tiny_run / "bundle-full" / "prefix_cache.npz")(ids, mask),
    }
    for name, got in outputs.items():
        assert got.shape == expected.shape == (6, len(labels))
        assert np.allclose(expected, got, atol=1e-5), (name, np.abs(expected - got).max())

    full = tiny_run / "bundle-full"
    int8 = OnnxScorer(full / "scoring.int8.onnx", prefix_cache=full / "prefix_cache.npz")
    together = int8(ids, mask)
    alone = np.vstack([int8(ids[i : i + 1, : mask[i].sum()], mask[i : i + 1, : mask[i].sum()]) for i in range(6)])
    assert np.abs(alone - together).max() < 1e-5 * np.abs(together).max()  # batch mates change nothing


def test_prefix_cache_scores_real_prompts_as_torch_does_on_the_whole_prompt(tiny_run: Path) -> None:
    """Every task's prompt starts with its instruction; the shipped graph takes that prefix's keys and values
    from the bundle's cache and computes only the rest, and scores what the PyTorch head scores on the whole."""
    import torch

    from redone_sdk.bundle.tokenizer import load_tokenizer
    from redone_sdk.inference.encoding import PromptEncoder, pad_batch
    from redone_sdk.inference.scoring_head import build_scoring_head
    from redone_sdk.training.model import load_model

    full = Bundle.load(tiny_run / "bundle-full")
    spec = full.manifest.graphs["fp32"]
    assert spec.prefix_cache == "prefix_cache.npz" and full.manifest.graphs["int8"].prefix_cache == spec.prefix_cache
    scorer = OnnxScorer(full.file(spec.file), prefix_cache=full.file(spec.prefix_cache))
    head = build_scoring_head(load_model(full.path / "checkpoint").eval(), spec.label_token_ids)
    tokenizer = load_tokenizer(full.file(full.manifest.tokenizer.file))
    texts = ["今天去了咖啡馆，拍了很多照片。", "egg waffle recipe", "这种人就该滚出去" * 7, "好"]
    for name, task in full.manifest.tasks.items():
        encoder = PromptEncoder(tokenizer, task, full.manifest.tokenizer.special_tokens)
        assert len(encoder.prefix_ids) > 10  # "<|im_start|>user\n" and the instruction
        prompts = encoder.encode_batch([{field: text for field in task.fields} for text in texts])
        ids, mask = pad_batch([p.ids for p in prompts], full.manifest.tokenizer.pad_token_id)
        feeds = scorer.feeds(ids, mask)
        assert feeds["input_ids"].shape[1] == ids.shape[1] - len(encoder.prefix_ids), name
        assert feeds["past_key.0"].shape[2] == len(encoder.prefix_ids)
        with torch.inference_mode():
            expected = head(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = scorer(ids, mask)
        assert np.allclose(expected, got, atol=1e-5), (name, np.abs(expected - got).max())


def test_prefix_cache_is_checked_when_the_graph_opens(tiny_run: Path, tmp_path: Path) -> None:
    from redone_sdk.errors import BundleFormatError

    graph = tiny_run / "bundle-full" / "scoring.fp32.onnx"
    cache = dict(np.load(tiny_run / "bundle-full" / "prefix_cache.npz"))
    with pytest.raises(BundleFormatError, match="takes a prompt-prefix cache, but the bundle names none"):
        OnnxScorer(graph)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**cache, "moderation.key.0": cache["moderation.key.0"][:, :, :-1]})
    with pytest.raises(BundleFormatError, match=r"moderation.key.0 does not fit moderation.ids"):
        OnnxScorer(graph, prefix_cache=bad)
    np.savez(bad, **{k: v for k, v in cache.items() if k != "matching.value.1"})
    with pytest.raises(BundleFormatError, match=r"matching.value.1 is missing"):
        OnnxScorer(graph, prefix_cache=bad)
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(BundleFormatError, match=r"cannot read the prompt-prefix cache bad\.npz"):
        OnnxScorer(graph, prefix_cache=bad)


def test_fused_scoring_graph_refuses_models_of_another_shape(tiny_run: Path, tmp_path: Path) -> None:
    from redone_sdk.training.model import load_model
    from redone_sdk.training.scoring_graph import build_scoring_graph, supports

    model = load_model(tiny_run / "bundle-full" / "checkpoint").eval()
    assert supports(model) is None
    model.config.hidden_act = "gelu"
    assert supports(model) == "activation 'gelu' is not silu"
    with pytest.raises(ValueError, match="cannot build a fused scoring graph: activation 'gelu' is not silu"):
        build_scoring_graph(model, [1, 2], tmp_path / "g.onnx", opset=18)


def test_int8_ladder_keeps_the_named_parts_in_float32(tiny_run: Path, tmp_path: Path) -> None:
    import onnx

    from redone_sdk.training.export import int8_fallbacks, quantize_int8

    fp32 = tiny_run / "bundle-full" / "scoring.fp32.onnx"
    ladder = int8_fallbacks(fp32)  # the tiny model has two layers
    assert ladder == [
        (),
        ("layer0.attn",),
        ("layer0.mlp",),
        ("layer0.attn", "layer0.mlp"),
        ("layer0.attn", "layer0.mlp", "layer1.attn", "layer1.mlp"),
    ]

    def float_weights(graph: Path) -> set[str]:
        model = onnx.load(str(graph))
        weights = {t.name for t in model.graph.initializer}
        return {i for n in model.graph.node if n.op_type == "MatMul" for i in n.input if i in weights}

    everything = float_weights(quantize_int8(fp32, tmp_path / "all.onnx"))
    assert not any(w.startswith("layers.") for w in everything)
    kept = float_weights(quantize_int8(fp32, tmp_path / "mlp0.onnx", keep_fp32=("layer0.mlp",)))
    assert {w for w in kept if w.startswith("layers.")} == {
        "layers.0.mlp.gate.weight",
        "layers.0.mlp.up.weight",
        "layers.0.mlp.down.weight",
    }


def test_export_climbs_the_int8_ladder_then_ships_fp32(tiny_run: Path, data_dir: Path, tmp_path: Path) -> None:
    """A tolerance no int8 graph can meet: every rung is tried and recorded, and fp32 becomes the default."""
    import shutil

    from redone_sdk.training.pipeline import run_stage

    out = tmp_path / "run"
    for stage in ("data", "init", "cpt", "sft", "dpo", "eval"):
        shutil.copytree(tiny_run / stage, out / stage)
    config = _config(tiny_run, data_dir).replace(
        output_dir=str(out), export={"int8_tolerance": -1.0, "generation_graph": False}
    )
    run_stage("export", config)
    manifest = Bundle.load(out / "bundle").manifest
    check = manifest.metrics["int8_check"]
    assert check["within_tolerance"] == 0.0 and check["ladder_step"] == 4.0
    assert {k for k in check if k.startswith("fp32/")} == {
        "fp32/layer0.attn",
        "fp32/layer0.mlp",
        "fp32/layer1.attn",
        "fp32/layer1.mlp",
    }
    assert manifest.default_graph == "fp32" and set(manifest.graphs) == {"fp32", "int8"}
    # the generation graph is opt-in (the tiny preset opts in): without it, bundle-full has none
    assert Bundle.load(out / "bundle-full").manifest.generation is None
    assert not (out / "export" / "generation").exists() and not (out / "bundle-full" / "generation").exists()


def test_finished_stages_are_skipped_and_changes_invalidate_downstream(tiny_run: Path, data_dir: Path) -> None:
    config = _config(tiny_run, data_dir)
    assert all(is_done(config, s) for s in ("data", "init", "cpt", "sft", "dpo"))
    changed = config.replace(sft={"learning_rate": 0.0001})
    assert is_done(changed, "cpt") and not is_done(changed, "sft") and not is_done(changed, "dpo")
    assert is_done(config.replace(data={"harm_sources": ["cold"]}), "cpt")  # the mixture starts at sft


def test_dev_splits_are_disjoint(data_dir: Path) -> None:
    for source in ("swsr", "davidson"):
        train = {e.record["text"] for e in harm_examples(data_dir, source, "train")}
        dev = {e.record["text"] for e in harm_examples(data_dir, source, "dev")}
        assert dev and not train & dev and all(is_dev(t) for t in dev)
    qc_train = {e.record["query"] + e.record["note"] for e in querycorr_examples(data_dir, "train")}
    qc_dev = {e.record["query"] + e.record["note"] for e in querycorr_examples(data_dir, "dev")}
    assert qc_dev and not qc_train & qc_dev


def test_config_files_sections_and_overrides(tmp_path: Path) -> None:
    config = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", sft__epochs=0.5, data__harm_sources="cold,swsr")
    assert config.sft.epochs == 0.5 and config.data.harm_sources == ("cold", "swsr")
    assert config.model.hidden_size == 32  # from the file
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    (tmp_path / "c.json").write_text('{"sft": {"epoch": 2}}')
    with pytest.raises(ValueError, match=r"unknown fields in config\.sft: \['epoch'\]"):
        PipelineConfig.from_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('{"sft": {"lora": "yes"}}')
    with pytest.raises(ValueError, match=r"config\.sft\.lora must be true or false"):
        PipelineConfig.from_file(tmp_path / "d.json")


def test_dpo_sft_weight_adds_an_nll_term_that_trl_accepts(tmp_path: Path) -> None:
    from trl import DPOConfig

    from redone_sdk.training.stages.dpo import loss_arguments

    plain = PipelineConfig.from_file(PRESETS_DIR / "tiny.json").dpo
    assert loss_arguments(plain) == {"loss_type": ["sigmoid"]}
    rpo = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", dpo__sft_weight=0.5).dpo
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, **loss_arguments(rpo))
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    (tmp_path / "c.json").write_text('{"dpo": {"sft_weight": -1}}')
    with pytest.raises(ValueError, match=r"dpo\.sft_weight must be 0 or more"):
        PipelineConfig.from_file(tmp_path / "c.json")
    with pytest.raises(ValueError, match=r"dpo\.beta must be positive"):
        PipelineConfig.from_file(PRESETS_DIR / "tiny.json", dpo__beta=0.0)


def test_dpo_weights_average_toward_the_sft_model(tiny_run: Path) -> None:
    from redone_sdk.training.model import load_model
    from redone_sdk.training.stages.dpo import average_with

    sft, dpo = load_model(tiny_run / "sft" / "model"), load_model(tiny_run / "dpo" / "model")
    before = {name: p.detach().clone() for name, p in dpo.named_parameters()}
    averaged = dict(average_with(dpo, tiny_run / "sft" / "model", 0.25).named_parameters())
    moved = 0
    for name, p in sft.named_parameters():
        expected = 0.75 * before[name] + 0.25 * p.detach()
        assert np.allclose(averaged[name].detach().numpy(), expected.numpy(), atol=1e-6), name
        moved += int(not np.allclose(before[name].numpy(), expected.numpy()))
    assert moved > 0  # DPO changed the weights, so the average differs from them
    with pytest.raises(ValueError, match=r"dpo\.sft_average must be in \[0, 1\)"):
        PipelineConfig.from_file(PRESETS_DIR / "tiny.json", dpo__sft_average=1.0)


def test_a_stage_resumes_only_checkpoints_of_its_own_configuration(tmp_path: Path) -> None:
    from redone_sdk.training.stages.common import last_checkpoint

    stage = tmp_path / "dpo"
    (stage / "trainer" / "checkpoint-40").mkdir(parents=True)  # left by a run that predates the marker
    assert last_checkpoint(stage, "aaaa") is None
    assert not (stage / "trainer" / "checkpoint-40").exists()
    (stage / "trainer" / "checkpoint-10").mkdir()  # this configuration's run, stopped part-way
    assert last_checkpoint(stage, "aaaa") == str(stage / "trainer" / "checkpoint-10")
    assert last_checkpoint(stage, "bbbb") is None  # the configuration changed: start over
    assert not (stage / "trainer" / "checkpoint-10").exists()


def test_smoothing_the_mlp_inputs_keeps_the_float_model_and_narrows_their_range(tiny_run: Path) -> None:
    import torch

    from redone_sdk.training.model import load_model
    from redone_sdk.training.smoothing import smooth_mlp_inputs

    model = load_model(tiny_run / "dpo" / "model").eval()
    prompts = [[5 + (7 * i + j) % 300 for j in range(8 + i % 9)] for i in range(24)]
    ids = torch.tensor([p[:8] for p in prompts])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    down_before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    spreads = smooth_mlp_inputs(model, prompts, alpha=0.5)
    assert len(spreads) == len(model.model.layers) and all(s >= 1 for s in spreads)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4)  # the same function
    assert not torch.allclose(down_before, model.model.layers[0].mlp.down_proj.weight)  # different weights
    with pytest.raises(ValueError, match=r"export\.smooth_alpha must be in \[0, 1\]"):
        PipelineConfig.from_file(PRESETS_DIR / "tiny.json", export__smooth_alpha=2.0)


def test_every_preset_parses() -> None:
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
    assert {"tiny", "qwen2-small", "base", "small", "gpu"} <= set(names)
    for name in names:
        PipelineConfig.from_file(PRESETS_DIR / f"{name}.json")


def test_cli_flags_reach_the_config() -> None:
    from redone_sdk.cli import build_parser
    from redone_sdk.training.config import config_from_args

    args = build_parser().parse_args(
        [
            "train",
            "sft",
            "--config",
            str(PRESETS_DIR / "tiny.json"),
            "--learning-rate",
            "0.01",
            "--lora",
            "--data-harm-sources",
            "cold",
        ]
    )
    config = config_from_args(args)
    assert config.sft.learning_rate == 0.01 and config.sft.lora and config.data.harm_sources == ("cold",)
    args = build_parser().parse_args(["train", "dpo", "--config", str(PRESETS_DIR / "tiny.json"), "--sft-weight", "1"])
    assert config_from_args(args).dpo.sft_weight == 1.0


def test_ablation_table_reuses_the_pipeline_run_and_covers_every_variant(tiny_run: Path, data_dir: Path) -> None:
    import shutil

    from redone_sdk.training.ablation import VARIANTS, run_ablation

    shutil.rmtree(tiny_run / "ablation", ignore_errors=True)  # a reused run folder may hold an earlier one
    root = run_ablation(_config(tiny_run, data_dir), single_tasks=("moderation", "ner"))
    table = json.loads((root / "table.json").read_text())
    assert table["complete"] is False  # two of the fifteen tasks in the single-task column
    assert table["single_tasks_done"] == ["moderation", "ner"]
    assert table["reused_from_pipeline_run"] == ["data", "init", "cpt", "sft", "dpo"]
    assert set(table["variants"]) == set(VARIANTS)
    for variant in ("sft_only", "cpt_sft", "cpt_sft_dpo"):
        row = table["variants"][variant]
        assert {"cold_dev", "swsr_dev", "davidson_dev", "querycorr_dev", "ner", "harm_macro_f1"} <= set(row)
        assert all(0.0 <= v <= 1.0 for v in row.values() if v == v)
    assert {"cold_dev", "ner", "snsbench_average"} <= set(table["variants"]["single_task"])
    assert "swsr" not in table["cross_set"]["trained_on"]
    cross = table["cross_set"]
    assert set(cross["model_cpt_sft"]) == set(cross["model_cpt_sft_dpo"]) == set(cross["tfidf_logreg"]) >= {"swsr_dev"}
    cross_dpo = json.loads((root / "cross_no_swsr" / "dpo" / "DONE.json").read_text())
    assert cross_dpo["pairs"] > 0  # DPO ran on the cross-set model's own mistakes
    assert table["stages"]["cpt"]["steps"] >= 1 and table["stages"]["cpt"]["final_loss"] > 0
    markdown = (root / "table.md").read_text()
    assert "| task (dev) | sft_only | cpt_sft | cpt_sft_dpo | single_task |" in markdown
    assert "Cross-set check" in markdown and "Continued pretraining:" in markdown
    assert "| set | model (CPT+SFT) | model (CPT+SFT+DPO) | TF-IDF + LR |" in markdown

    # finishing a column later merges into the same table and keeps what was measured
    root = run_ablation(_config(tiny_run, data_dir), single_tasks=("gender",), parts=("single_task",))
    merged = json.loads((root / "table.json").read_text())
    assert merged["single_tasks_done"] == ["moderation", "ner", "gender"]
    assert merged["variants"]["cpt_sft_dpo"] == table["variants"]["cpt_sft_dpo"]
    assert {"gender", "ner", "cold_dev"} <= set(merged["variants"]["single_task"])
    assert merged["runs"][0]["parts"] == ["single_task"]
    assert "Single-task column: moderation, ner, gender." in (root / "table.md").read_text()


def test_training_leaves_the_processes_floating_point_mode_alone(tiny_run: Path) -> None:
    """Stages flush denormals to zero while they train; the caller's thread must get subnormal floats back."""
    import math

    assert math.nextafter(0.0, 1.0) * 1.0 > 0
