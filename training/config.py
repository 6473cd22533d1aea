"""The pipeline's configuration: one frozen dataclass whose fields carry their help text and become CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["PipelineConfig", "add_config_arguments", "config_from_args", "PRESETS_DIR"]

PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides what `redone train all` builds. Defaults are the `default` preset's."""

    # output
    output_dir: str = _f("runs/default", "Folder for the tokenizer, checkpoints, the bundle and logs.")
    bundle_name: str = _f("redone-small", "Name written into the bundle manifest.")
    bundle_version: str = _f("0.1.0", "Version written into the bundle manifest.")
    data_dir: str = _f("", "Shared data folder; empty means $REDONE_DATA_DIR or ../shared/data.")
    # data
    harm_sources: tuple[str, ...] = _f(("cold", "swsr", "davidson"), "Harm-content sets trained on.")
    matching: bool = _f(True, "Train the query-note matching task on SNS-Bench QueryCorr.")
    matching_upsample: int = _f(8, "Times each QueryCorr training pair is repeated (it is small).")
    max_train_examples: int = _f(0, "Cap on training examples after mixing (0: no cap); for quick presets.")
    max_eval_examples: int = _f(0, "Cap on dev examples per set (0: all).")
    # tokenizer and model
    vocab_size: int = _f(8000, "Byte-level BPE vocabulary size.")
    hidden_size: int = _f(256, "Qwen2 hidden size.")
    num_layers: int = _f(4, "Qwen2 decoder layers.")
    num_heads: int = _f(4, "Attention heads.")
    num_kv_heads: int = _f(2, "Key/value heads (grouped-query attention).")
    intermediate_size: int = _f(768, "MLP width.")
    moderation_max_length: int = _f(128, "Most tokens of a moderation prompt.")
    matching_max_length: int = _f(256, "Most tokens of a matching prompt.")
    # fine-tuning
    epochs: float = _f(2.0, "Passes over the mixed training set.")
    batch_size: int = _f(32, "Examples per optimizer step.")
    learning_rate: float = _f(1e-3, "Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = _f(100, "Warm-up steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    seed: int = _f(13, "Seed of data order and initialization.")
    threads: int = _f(0, "torch threads (0: torch's default).")
    # export
    opset: int = _f(18, "ONNX opset of the scoring graph.")
    ship_precision: str = _f("int8", "Graph(s) written to the shipped bundle: int8, fp32 or both.")
    keep_checkpoint: bool = _f(False, "Also put the safetensors checkpoint in the bundle (PyTorch backend).")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> PipelineConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown config fields {unknown}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls._coerce(data)

    @classmethod
    def _coerce(cls, data: dict[str, Any]) -> PipelineConfig:
        hints = typing.get_type_hints(cls)
        for key, value in list(data.items()):
            if typing.get_origin(hints[key]) is tuple and isinstance(value, list | str):
                data[key] = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
        config = cls(**data)
        if config.ship_precision not in ("int8", "fp32", "both"):
            raise ValueError("ship_precision must be int8, fp32 or both")
        return config

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` plus one `--field` flag per config field, from the dataclass' help text."""
    parser.add_argument("--config", default=str(PRESETS_DIR / "default.json"), help="Config file (JSON).")
    hints = typing.get_type_hints(PipelineConfig)
    for f in fields(PipelineConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
        elif typing.get_origin(kind) is tuple or isinstance(kind, types.GenericAlias):
            parser.add_argument(flag, default=None, help=f.metadata["help"] + " (comma-separated)")
        else:
            parser.add_argument(flag, type=kind, default=None, help=f.metadata["help"])


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    overrides = {f.name: getattr(args, f.name, None) for f in fields(PipelineConfig)}
    return PipelineConfig.from_file(args.config, **overrides)
