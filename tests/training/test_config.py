"""The pipeline's configuration: defaults in one place, the stage registry, and CLI flags that reach the config."""

import dataclasses
import json
from pathlib import Path

import pytest

import redone_sdk
from redone_sdk.training.config import (
    PRESETS_DIR,
    CPTConfig,
    DPOStageConfig,
    PipelineConfig,
    SFTStageConfig,
    TrainerConfig,
    config_from_args,
)
from redone_sdk.training.stages.registry import STAGES, all_sections, model_stages, upstream_sections

SHIPPED_MANIFEST = Path(redone_sdk.__file__).parent / "bundles" / "default" / "manifest.json"


def _same_as_defaults(values: dict, defaults: dict, where: str = "") -> list[str]:
    """Paths of the values a config file lists that equal the defaults."""
    same = []
    for key, value in values.items():
        if isinstance(value, dict) and key != "task_upsample":
            same += _same_as_defaults(value, defaults[key], f"{where}{key}.")
        elif value == defaults[key]:
            same.append(f"{where}{key}")
    return same


def test_the_defaults_are_the_qwen2_small_preset_and_the_shipped_bundle_comes_from_base() -> None:
    defaults = PipelineConfig()
    assert PipelineConfig.from_file(PRESETS_DIR / "qwen2-small.json") == defaults
    assert PipelineConfig.from_file(None) == defaults
    # qwen2-small.json lists no value the dataclasses already hold: the defaults live only in config.py
    listed = json.loads((PRESETS_DIR / "qwen2-small.json").read_text())
    assert _same_as_defaults(listed, defaults.to_dict()) == []
    # the shipped bundle was built by base.json, and small.json distils from the shipped redone-base (by name, so a
    # clone builds it without a base run)
    shipped = json.loads(SHIPPED_MANIFEST.read_text())["lineage"]["training_config"]
    base = PipelineConfig.from_file(PRESETS_DIR / "base.json")
    # where the run read its data (`--data-data-dir`) and wrote its files (`--output-dir`) is not part of the recipe
    built = PipelineConfig.from_dict(shipped)
    built = dataclasses.replace(built, output_dir=base.output_dir, data=dataclasses.replace(built.data, data_dir=""))
    assert dataclasses.replace(base, data=dataclasses.replace(base.data, data_dir="")) == built
    small = PipelineConfig.from_file(PRESETS_DIR / "small.json")
    assert small.sft.teacher == base.bundle_name == json.loads(SHIPPED_MANIFEST.read_text())["name"]
    assert small.model.pretrained == base.model.pretrained
    assert defaults.export.generation_graph is False


def test_presets_keep_what_they_meant() -> None:
    tiny = PipelineConfig.from_file(PRESETS_DIR / "tiny.json")
    assert tiny.data.general_corpus == "stdlib-docs" and tiny.dpo.sft_average == 0.0
    assert tiny.export.generation_graph and tiny.export.smooth_alpha == 0.5
    assert tiny.cpt.max_steps > 0 and tiny.sft.max_steps > 0  # so their epochs do not count
    gpu = PipelineConfig.from_file(PRESETS_DIR / "gpu.json")
    assert gpu.cpt.epochs == 1.0 and gpu.sft.epochs == 2.0 and gpu.dpo.sft_average == 0.0
    assert gpu.export.smooth_alpha == 0.0 and gpu.data.task_upsample == {"querycorr": 4}


def test_training_stages_extend_one_trainer_config() -> None:
    common = {f.name for f in dataclasses.fields(TrainerConfig)}
    assert {"epochs", "max_steps", "batch_size", "learning_rate", "warmup_ratio", "weight_decay"} <= common
    for cls in (CPTConfig, SFTStageConfig, DPOStageConfig):
        assert issubclass(cls, TrainerConfig)
        mine = {f.name: f for f in dataclasses.fields(cls)}
        for name in common:  # a stage may change a default, never the meaning: the help text stays the base's
            assert mine[name].metadata["help"] == TrainerConfig.__dataclass_fields__[name].metadata["help"]
    assert (
        CPTConfig().learning_rate == SFTStageConfig().learning_rate == 1e-3 and DPOStageConfig().learning_rate == 5e-5
    )


def test_the_stage_registry_orders_every_stage() -> None:
    assert list(STAGES) == ["data", "init", "cpt", "sft", "dpo", "eval", "export"]
    assert all_sections() == ("data", "model", "cpt", "sft", "dpo", "export")
    assert model_stages() == ("init", "cpt", "sft", "dpo")
    assert [n for n, s in STAGES.items() if s.resumable] == ["data", "init", "cpt", "sft", "dpo"]
    assert upstream_sections("cpt") == ("data", "model", "cpt")
    assert upstream_sections("export") == all_sections()
    off = PipelineConfig().replace(cpt={"enabled": False})
    assert [n for n, s in STAGES.items() if not s.enabled(off)] == ["cpt"]
    from redone_sdk.training import pipeline

    assert pipeline.STAGES is STAGES


def test_the_cli_has_one_subcommand_per_registered_stage() -> None:
    from redone_sdk.cli import build_parser

    parser = build_parser()
    for name, stage in STAGES.items():
        args = parser.parse_args(["train", name])
        assert args.step == name
        flags = vars(args)
        if stage.section:
            assert any(k.startswith(f"{stage.section}__") for k in flags)
        assert {k.split("__")[0] for k in flags if "__" in k} == {s for s in (stage.section, *stage.reads) if s}


def _parse(*argv: str) -> PipelineConfig:
    from redone_sdk.cli import build_parser

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_cli_flags_round_trip_into_the_config() -> None:
    assert _parse("all") == PipelineConfig()  # no --config: the defaults, which are the default preset
    assert _parse("all", "--config", str(PRESETS_DIR / "qwen2-small.json")) == PipelineConfig()
    config = _parse("all", "--no-data-matching", "--no-cpt-enabled", "--data-sft-tasks", "moderation")
    assert config == PipelineConfig().replace(
        data={"matching": False, "sft_tasks": ["moderation"]}, cpt={"enabled": False}
    )
    tiny = PipelineConfig.from_file(PRESETS_DIR / "tiny.json")
    config = _parse(
        "sft",
        "--config",
        str(PRESETS_DIR / "tiny.json"),
        "--learning-rate",
        "3e-4",
        "--no-lora",
        "--max-steps",
        "7",
        "--data-harm-sources",
        "cold,swsr",
        "--data-task-upsample",
        '{"ner": 3}',
        "--model-hidden-size",
        "48",
        "--output-dir",
        "/tmp/x",
        "--seed",
        "5",
        "--bundle-version",
        "9.9.9",
    )
    assert config == tiny.replace(
        output_dir="/tmp/x",
        seed=5,
        bundle_version="9.9.9",
        sft={"learning_rate": 3e-4, "lora": False, "max_steps": 7},
        data={"harm_sources": ["cold", "swsr"], "task_upsample": {"ner": 3}},
        model={"hidden_size": 48},
    )
    exported = _parse("export", "--generation-graph", "--no-fused-graph", "--dpo-sft-average", "0")
    assert exported.export.generation_graph and not exported.export.fused_graph and exported.dpo.sft_average == 0.0
    every = PipelineConfig().replace(export={"generation_graph": True}, sft={"lora": True})
    assert _parse("all", "--export-generation-graph", "--sft-lora") == every


def test_every_field_of_a_section_is_a_flag(tmp_path: Path) -> None:
    """Each field reaches the config from its flag: under `all` every section's field, prefixed."""
    from redone_sdk.cli import build_parser

    parser = build_parser()
    defaults = PipelineConfig()
    for section in all_sections():
        for f in dataclasses.fields(getattr(defaults, section)):
            value = getattr(getattr(defaults, section), f.name)
            flag = f"--{section}-{f.name}".replace("_", "-")
            if isinstance(value, bool):
                argv = [flag if not value else flag.replace(f"--{section}-", f"--no-{section}-", 1)]
            elif isinstance(value, tuple):
                argv = [flag, "a,b"]
            elif isinstance(value, dict):
                argv = [flag, '{"x": 2}']
            elif f.name == "sft_average":
                argv = [flag, "0.25"]
            elif f.name == "smooth_alpha":
                argv = [flag, "0.75"]
            elif f.name == "pretrained":  # a registered source's name
                argv = [flag, "bge-small-zh-v1.5"]
            elif f.name == "pretrained_layers":  # a cut of a pretrained source
                argv = [flag, "2", "--model-pretrained", "bge-small-zh-v1.5"]
            elif f.name in ("distill_weight", "mask_share"):
                argv = [flag, "0.25"]
            elif f.name == "fusion_holdout":  # a share, for the prefix-LM's lexical fusion
                argv = [flag, "0.25", "--model-pretrained", "bge-small-zh-v1.5"]
            elif f.name == "objective":  # a Literal: its choices, and the bert-only ones need model.pretrained
                argv = [flag, "span_mlm", "--model-pretrained", "bge-small-zh-v1.5"]
            else:
                argv = [flag, "7"]
            config = config_from_args(parser.parse_args(["train", "all", *argv]))
            assert getattr(getattr(config, section), f.name) != value, flag


def test_a_bad_flag_value_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"dpo\.beta must be positive"):
        _parse("dpo", "--beta", "0")


def test_one_label_map_scores_the_dev_sets_of_both_evaluations() -> None:
    from redone_sdk.training import evaluate
    from redone_sdk.training.stages import evaluate as stage

    assert stage.harm_set_metrics is evaluate.harm_set_metrics
    cold = evaluate.harm_set_metrics("cold_dev", ["safe", "offensive", "sexism"], ["safe", "hate", "offensive"])
    assert cold["accuracy"] == 1.0 and {"f1/safe", "f1/harmful"} <= set(cold)  # any harm label counts as harmful
    davidson = evaluate.harm_set_metrics("davidson_dev", ["hate", "safe"], ["offensive", "safe"])
    assert davidson["accuracy"] == 0.5 and "f1/offensive" in davidson and "f1/sexism" not in davidson
    grades = evaluate.harm_set_metrics("querycorr_dev", ["1", "2"], ["1", "3"], ("-1", "0", "1", "2", "3"))
    assert grades["accuracy"] == 0.5 and "f1/-1" in grades
