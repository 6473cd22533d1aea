"""Typed, frozen configuration of the pipeline: one dataclass per stage section, each field with its help text.

The dataclass defaults are the `qwen2-small` preset (the from-scratch Qwen2 recipe of bundle 0.3.1), so
`configs/qwen2-small.json` is empty, and other presets list only what they change: `base.json` and
`small.json` build the shipped bundles (redone-base, the default, and its distilled student redone-small) on a
pretrained BERT. A config file is JSON with one object per
section (`data`, `model`, `cpt`, `sft`, `dpo`, `export`) plus the top-level fields. The training stages'
sections extend one `TrainerConfig`, as trl's `SFTConfig` and `DPOConfig` extend `TrainingArguments`.

Every field becomes a CLI flag of the stages that read it (`redone train sft --learning-rate 3e-4`,
`--data-harm-sources cold`, `--no-cpt-enabled`). transformers' `HfArgumentParser` does not fit these flags
(no section prefixes, no tuple or dict fields, no `--no-` flag for fields that default to false, and its flag
defaults would override the config file), so a small argparse adapter below builds them from the fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PRESETS_DIR",
    "CPTConfig",
    "DataConfig",
    "DPOStageConfig",
    "ExportConfig",
    "ModelConfig",
    "PipelineConfig",
    "SFTStageConfig",
    "TrainerConfig",
    "add_section_arguments",
    "config_from_args",
]

PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def _f(default: Any, help: str) -> Any:
    """A dataclass field with its help text (which becomes the CLI flag's help)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _default(base: type, name: str, default: Any) -> Any:
    """`base`'s field `name` with another default in a subclass; the help text stays the base's."""
    return _f(default, base.__dataclass_fields__[name].metadata["help"])


@dataclass(frozen=True)
class DataConfig:
    """Stage 1: which data, how mixed, how split (the mixture fields are read by sft and dpo)."""

    data_dir: str = _f("", "Shared data folder; empty means $REDONE_DATA_DIR or ../shared/data.")
    harm_sources: tuple[str, ...] = _f(("cold", "swsr", "davidson"), "Harm-content sets trained on.")
    sft_tasks: tuple[str, ...] = _f(
        ("all",), "SFT tasks: `all`, or names such as moderation, querycorr, taxonomy_single, translation_zh_en."
    )
    matching: bool = _f(True, "Train query-note matching (SNS-Bench QueryCorr). Off gives a commercially usable model.")
    task_upsample: dict[str, int] = _f(  # noqa: RUF009
        {"querycorr": 8, "querycorr_explain": 4, "gender": 4, "querygen": 4, "mrc_complex": 2},
        "Times each example of a task is repeated in SFT.",
    )
    max_per_task: int = _f(0, "Cap on SFT training examples per task (0: no cap).")
    max_train_examples: int = _f(0, "Cap on all SFT examples after mixing (0: no cap); for quick presets.")
    max_eval_examples: int = _f(0, "Cap on dev examples per set or task (0: all).")
    max_input_chars: int = _f(1500, "Longest note / document of a generative task's prompt, in characters.")
    general_corpus: str = _f(
        "sanguo,web-bible,stdlib-docs", "General-domain texts mixed into continued pretraining (see corpus.py)."
    )
    general_ratio: float = _f(0.3, "General-domain share of the continued-pretraining characters (0 to 1).")
    cpt_max_chars: int = _f(0, "Cap on continued-pretraining characters (0: all platform text).")
    cold_topic_labels: bool = _f(
        False,
        "Label COLD's offensive comments by topic: race -> hate, gender -> sexism, region -> offensive "
        "(labeled_data.COLD_TOPIC_LABELS); off, they are all `offensive`.",
    )
    fusion_holdout: float = _f(
        0.0,
        "Share of the QueryCorr train pairs (stratified by grade, seeded) kept out of SFT and DPO so that the "
        "export fits the lexical fusion on pairs the model never saw (0: fit on every train pair, in-sample).",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.fusion_holdout < 1:
            raise ValueError(f"data.fusion_holdout must be in [0, 1), got {self.fusion_holdout}")


@dataclass(frozen=True)
class ModelConfig:
    """Tokenizer and architecture of a fresh model, or the checkpoint to start from."""

    init_from: str = _f("", "Hugging Face checkpoint dir to start from; empty trains a tokenizer and a fresh Qwen2.")
    pretrained: str = _f(
        "",
        "Name of a registered pretrained source (training/pretrained.py, e.g. bge-small-zh-v1.5: a BERT from a "
        "Maven jar); empty: fresh model. A BERT source is post-trained as a prefix-LM (training/prefix_lm.py).",
    )
    pretrained_layers: int = _f(0, "Keep only the first N layers of the pretrained backbone (0: all of them).")
    vocab_size: int = _f(8000, "Byte-level BPE vocabulary size (fresh model only).")
    hidden_size: int = _f(256, "Qwen2 hidden size.")
    num_layers: int = _f(4, "Qwen2 decoder layers.")
    num_heads: int = _f(4, "Attention heads.")
    num_kv_heads: int = _f(2, "Key/value heads (grouped-query attention).")
    intermediate_size: int = _f(768, "MLP width.")
    moderation_max_length: int = _f(128, "Most tokens of a moderation prompt (scoring task).")
    matching_max_length: int = _f(256, "Most tokens of a matching prompt (scoring task).")
    max_position_embeddings: int = _f(1024, "Longest sequence the model can take.")

    def __post_init__(self) -> None:
        from redone_sdk.training.pretrained import PRETRAINED_SOURCES

        if self.pretrained and self.pretrained not in PRETRAINED_SOURCES:
            raise ValueError(
                f"model.pretrained {self.pretrained!r} is not a registered source: {sorted(PRETRAINED_SOURCES)}"
            )
        if self.pretrained and self.init_from:
            raise ValueError("model.pretrained and model.init_from are two starting points; set one")
        if self.pretrained_layers < 0 or (self.pretrained_layers and not self.pretrained):
            raise ValueError("model.pretrained_layers is a count of the pretrained backbone's layers (0: all)")


@dataclass(frozen=True)
class TrainerConfig:
    """What every training stage sets of its transformers Trainer (see `stages.common.trainer_arguments`)."""

    enabled: bool = _f(True, "Run this stage.")
    epochs: float = _f(1.0, "Passes over the stage's data (packed corpus, instruction mixture or pairs).")
    max_steps: int = _f(0, "Stop after this many steps (0: use epochs).")
    batch_size: int = _f(16, "Examples per step and device (packed blocks in cpt, pairs in dpo).")
    gradient_accumulation: int = _f(1, "Steps accumulated per optimizer update.")
    learning_rate: float = _f(1e-3, "Peak learning rate (linear warm-up, then cosine decay).")
    warmup_ratio: float = _f(0.03, "Share of steps for linear warm-up.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")


@dataclass(frozen=True)
class CPTConfig(TrainerConfig):
    """Stage 2: continued pretraining on the packed corpus (causal LM; on a pretrained BERT prefix-LM also
    prefix-LM or whole-span masked LM, see `training/prefix_lm_cpt.py`)."""

    epochs: float = _default(TrainerConfig, "epochs", 3.0)
    seq_length: int = _f(256, "Tokens per packed block.")
    objective: Literal["causal", "prefix", "span_mlm"] = _f(
        "causal",
        "causal: next token everywhere (the only one for the Qwen2 models); prefix: bidirectional before a random "
        "split, next token after it; span_mlm: whole spans masked, predicted from both sides (prefix-LM presets).",
    )
    mask_share: float = _f(0.15, "span_mlm: share of each block's tokens chosen for prediction.")
    head_warmup_steps: int = _f(
        0,
        "Prefix-LM: before CPT proper, train only the LM head's transform and bias this many steps over the frozen "
        "encoder (the jar has no MLM head: its loss starts near 15, and its first gradients would reach the "
        "encoder); 0: off.",
    )
    head_warmup_lr: float = _f(1e-3, "Learning rate of the head warm-up (AdamW, constant).")

    def __post_init__(self) -> None:
        if self.objective not in ("causal", "prefix", "span_mlm"):
            raise ValueError(f"cpt.objective must be causal, prefix or span_mlm, got {self.objective!r}")
        if not 0 < self.mask_share < 1:
            raise ValueError(f"cpt.mask_share must be in (0, 1), got {self.mask_share}")
        if self.head_warmup_steps < 0 or not self.head_warmup_lr > 0:
            raise ValueError("cpt.head_warmup_steps must be 0 or more and cpt.head_warmup_lr above 0")


@dataclass(frozen=True)
class SFTStageConfig(TrainerConfig):
    """Stage 3: multi-task supervised fine-tuning with the loss on assistant tokens only."""

    epochs: float = _default(TrainerConfig, "epochs", 1.5)
    batch_size: int = _default(TrainerConfig, "batch_size", 32)
    max_length: int = _f(384, "Most tokens of a prompt + answer (generative tasks; scoring tasks use the model's).")
    lora: bool = _f(False, "Train LoRA adapters (peft) and merge them, instead of full fine-tuning.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    class_balance: float = _f(
        0.0,
        "Prefix-LM: weight each label's loss by (its share of the task's examples) ^ -x; 0: plain cross-entropy, "
        "0.5: inverse square root of the frequency (lifts rare categories such as hate).",
    )
    teacher: str = _f(
        "",
        "Prefix-LM: distil from this bundle (a folder, or the name of a shipped bundle): its label distributions "
        "are soft targets beside the gold labels; empty: no teacher.",
    )
    distill_weight: float = _f(0.7, "With a teacher: share of the KL-to-teacher term in the loss (rest: gold CE).")
    distill_texts: int = _f(
        0, "With a teacher: unlabeled platform notes from the CPT corpus the teacher labels for the student."
    )

    def __post_init__(self) -> None:
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"sft.distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.class_balance < 0 or self.distill_texts < 0:
            raise ValueError("sft.class_balance and sft.distill_texts must be 0 or more")


@dataclass(frozen=True)
class DPOStageConfig(TrainerConfig):
    """Stage 4: preference optimization on pairs mined from the SFT model's own mistakes."""

    learning_rate: float = _default(TrainerConfig, "learning_rate", 5e-5)
    warmup_ratio: float = _default(TrainerConfig, "warmup_ratio", 0.1)
    weight_decay: float = _default(TrainerConfig, "weight_decay", 0.0)
    max_length: int = _f(320, "Most tokens of prompt + answer.")
    mine_examples: int = _f(4000, "Training examples the SFT model answers to find its mistakes.")
    mine_generative: int = _f(200, "Of those, at most this many from generative tasks (they need generation).")
    max_pairs: int = _f(2000, "Cap on preference pairs.")
    extra_pairs: str = _f("", "JSON-lines file of extra {prompt, chosen, rejected} pairs (prompt = user text).")
    beta: float = _f(0.1, "DPO beta (strength of the KL anchor to the SFT model).")
    sft_weight: float = _f(
        0.0,
        "Weight of a negative log-likelihood term on the chosen answers added to the DPO loss (RPO); 0: plain DPO. "
        "It keeps the SFT model's probability of right answers from falling while DPO widens the margins.",
    )
    sft_average: float = _f(
        0.5,
        "Share of the SFT weights in the stage's model: after DPO the weights become (1 - w) * DPO + w * SFT, a "
        "weight-space ensemble (as WiSE-FT and model soups) that keeps what SFT knew while taking part of DPO's "
        "gain; 0 keeps the DPO weights.",
    )
    feedback: str = _f(
        "",
        "Folder written by `redone train feedback`: its dpo.jsonl (reviewers' label chosen, the model's rejected) "
        "is mixed into this round with the mined pairs; its hold-out notes never are. Empty: mined pairs only.",
    )
    feedback_repeat: int = _f(
        4,
        "Times each reviewer pair appears in the round (mined pairs appear once; max_pairs caps the mined ones "
        "only): the weight of the reviewers' decisions against the mined mistakes.",
    )

    anchor_weight: float = _f(
        0.0,
        "Prefix-LM: weight of a cross-entropy term on the gold labels of the rows mining checked (right and "
        "wrong), one batch of them per step beside the pairs, class-weighted as SFT was (sft.class_balance). Mined "
        "pairs are mistakes only, mostly of one kind, so DPO alone shifts the label prior; this keeps it. 0: off.",
    )

    def __post_init__(self) -> None:
        if self.anchor_weight < 0:
            raise ValueError(f"dpo.anchor_weight must be 0 or more, got {self.anchor_weight}")
        if self.feedback_repeat < 1:
            raise ValueError(f"dpo.feedback_repeat must be 1 or more, got {self.feedback_repeat}")
        if self.beta <= 0:
            raise ValueError(f"dpo.beta must be positive, got {self.beta}")
        if self.sft_weight < 0:
            raise ValueError(f"dpo.sft_weight must be 0 or more, got {self.sft_weight}")
        if not 0 <= self.sft_average < 1:
            raise ValueError(f"dpo.sft_average must be in [0, 1), got {self.sft_average}")


@dataclass(frozen=True)
class ExportConfig:
    """Stage 6: ONNX graphs and the bundle."""

    opset: int = _f(18, "ONNX opset (the fused scoring graph uses at least 23, for ONNX Attention).")
    fused_graph: bool = _f(
        True,
        "Build the scoring graph from the weights with ONNX Runtime's fused operators (Qwen2/Llama/Mistral; about "
        "1.6x faster on CPU); off, or for other models, export it through torch.onnx.",
    )
    prefix_cache: bool = _f(
        True,
        "Fused graph only: compute each task's prompt prefix (the instruction before the note) once at export and "
        "ship its keys and values, so the graph runs only the rest of each prompt (about a third fewer tokens).",
    )
    ship_precision: str = _f("int8", "Scoring graph(s) put in the shipped bundle: int8, fp32 or both.")
    keep_checkpoint: bool = _f(False, "Also put the safetensors checkpoint in the shipped bundle.")
    generation_graph: bool = _f(
        False,
        "Also export a KV-cache generation graph (optimum) into bundle-full/generation, for generating the "
        "generative tasks' answers outside the SDK (the SDK only scores).",
    )
    int8_tolerance: float = _f(0.01, "Largest allowed drop of any dev metric from fp32 to int8.")
    smooth_alpha: float = _f(
        0.5,
        "Before int8 quantization, smooth each MLP down projection's input (SmoothQuant, migration strength alpha, "
        "calibrated on training prompts): the float graph computes the same function, and int8 loses less. "
        "0: off; 0.5 is the usual value.",
    )
    smooth_calibration: int = _f(256, "Training prompts the smoothing scales are measured on.")
    int8_fallback: bool = _f(
        True,
        "When int8 misses the tolerance, keep the first layer's attention, then its MLP, then the first and last "
        "layers in fp32 (one rung at a time) before shipping fp32 (fused graph only).",
    )
    lexical_fusion: bool = _f(
        True,
        "Prefix-LM bundles: fuse the matching task's expected relevance with query-term coverage of the whole note, "
        "weight and grade cuts fitted on QueryCorr train by cross-validation (training/lexical_fusion.py).",
    )
    label_offsets: bool = _f(
        True,
        "Prefix-LM bundles: shift the moderation task's label prior by offsets on its calibrated logits, chosen on "
        "dev for the mean dev macro-F1 of the most likely label, before the policy is set (training/label_offsets.py).",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.smooth_alpha <= 1:
            raise ValueError(f"export.smooth_alpha must be in [0, 1], got {self.smooth_alpha}")


@dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline. Its defaults are the `qwen2-small` preset (the from-scratch recipe of bundle 0.3.1)."""

    output_dir: str = _f("runs/default", "Folder for data, checkpoints of every stage, evaluation and bundles.")
    bundle_name: str = _f("redone-small", "Name written into the bundle manifest.")
    bundle_version: str = _f("0.3.1", "Version written into the bundle manifest.")
    seed: int = _f(13, "Seed of data order, initialization and sampling.")
    threads: int = _f(0, "torch threads (0: torch's default).")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cpt: CPTConfig = field(default_factory=CPTConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.data.fusion_holdout and not (self.model.pretrained and self.export.lexical_fusion):
            raise ValueError(
                "data.fusion_holdout keeps QueryCorr pairs out of training for the lexical fusion, which only a "
                "prefix-LM export (model.pretrained) with export.lexical_fusion fits: it would only drop the pairs"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> PipelineConfig:
        """Build from a dict of fields and sections; `overrides` are `field=value` (top level) or
        `section__field=value`, None skipped."""
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for key, value in overrides.items():
            if value is None:
                continue
            section, _, name = key.partition("__")
            if name:
                data.setdefault(section, {})[name] = value
            else:
                data[key] = value
        return _build(cls, data, "config")

    @classmethod
    def from_file(cls, path: str | Path | None, **overrides: Any) -> PipelineConfig:
        """Read a JSON config (None: the defaults) with `overrides` as in `from_dict`."""
        data = json.loads(Path(path).read_text(encoding="utf-8")) if path is not None else {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file holds a JSON object")
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path or 'defaults'}: {exc}") from None

    def replace(self, **sections: Any) -> PipelineConfig:
        """A copy with some fields or whole sections replaced (`sft={"lora": True}` merges into the section)."""
        current = dataclasses.asdict(self)
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(current.get(key), dict):
                current[key] = {**current[key], **value}
            else:
                current[key] = value
        return PipelineConfig.from_dict(current)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in fields(PipelineConfig)
    if dataclasses.is_dataclass(f.default_factory)
}
_TOP_LEVEL = tuple(f for f in fields(PipelineConfig) if f.name not in SECTIONS)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown fields in {where}: {unknown}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{name} must be an object")
            values[name] = _build(kind, value, f"{where}.{name}")
        else:
            values[name] = _coerce(kind, value, f"{where}.{name}")
    return cls(**values)


def _coerce(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"{where} must be one of {', '.join(map(str, typing.get_args(kind)))}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where} must be a list of strings")
        return tuple(value)
    if origin is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object")
        return {str(k): int(v) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{where} must be {getattr(kind, '__name__', kind)}, got {value!r}")


def _add_field(group: Any, f: dataclasses.Field, kind: Any, flag: str, dest: str) -> None:
    """One flag for a field; its default is None, so only flags given on the command line override the file."""
    help_text = f.metadata["help"]
    if kind is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif typing.get_origin(kind) in (tuple, dict):
        group.add_argument(flag, dest=dest, default=None, help=help_text + " (comma list or JSON)")
    elif typing.get_origin(kind) is Literal:
        group.add_argument(flag, dest=dest, default=None, choices=typing.get_args(kind), help=help_text)
    else:
        group.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)


def add_section_arguments(parser: argparse.ArgumentParser, own: str | None, others: Sequence[str] = ()) -> None:
    """`--config FILE`, the top-level fields (`--output-dir`, `--seed`), one flag per field of the stage's `own`
    section (`--learning-rate`) and prefixed flags for the `others` it reads (`--data-harm-sources`)."""
    parser.add_argument(
        "--config", default=None, help="Config file (JSON); without one, the defaults (the default preset)."
    )
    hints = typing.get_type_hints(PipelineConfig)
    for f in _TOP_LEVEL:
        _add_field(parser, f, hints[f.name], "--" + f.name.replace("_", "-"), f.name)
    for section in ([own] if own else []) + list(others):
        cls = SECTIONS[section]
        hints = typing.get_type_hints(cls)
        group = parser.add_argument_group(f"{section}: {(cls.__doc__ or '').splitlines()[0].rstrip('.')}")
        for f in fields(cls):
            name = f.name if section == own else f"{section}_{f.name}"
            _add_field(group, f, hints[f.name], "--" + name.replace("_", "-"), f"{section}__{f.name}")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The config `--config` names, with the flags given on the command line applied."""
    overrides = {k: v for k, v in vars(args).items() if "__" in k}
    for f in _TOP_LEVEL:
        overrides[f.name] = getattr(args, f.name, None)
    return PipelineConfig.from_file(args.config, **overrides)
