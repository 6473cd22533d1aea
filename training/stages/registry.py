"""The one registry of the pipeline's stages, in run order: what each reads, how it runs, what it produces.

`pipeline.py` runs them in this order, `stages/common.py` takes their dependencies and model chain from it,
and `cli.py` makes one subcommand per stage with flags for the sections it reads. A stage's module is
imported only when it runs, so the CLI stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redone_sdk.training.config import PipelineConfig

__all__ = ["STAGES", "Stage", "all_sections", "model_stages", "upstream_sections"]


@dataclass(frozen=True)
class Stage:
    """A stage: `run(config)` in `redone_sdk.training.stages.<module>`; calling it runs the stage."""

    name: str
    help: str
    module: str
    section: str | None = None  # its own config section (unprefixed flags; `enabled` there can switch it off)
    reads: tuple[str, ...] = ()  # other sections it reads (prefixed flags)
    makes_model: bool = False  # writes `<name>/model`, which the next training stage starts from
    resumable: bool = False  # `train all` skips it when it finished before with the same fingerprint

    def __call__(self, config: PipelineConfig) -> Path:
        return importlib.import_module(f"redone_sdk.training.stages.{self.module}").run(config)

    def enabled(self, config: PipelineConfig) -> bool:
        return bool(getattr(getattr(config, self.section), "enabled", True)) if self.section else True


_ALL = ("data", "model", "cpt", "sft", "dpo")

STAGES: Mapping[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("data", "Build the CPT corpus and the multi-task instruction data.", "data", "data", resumable=True),
        Stage(
            "init",
            "Train the tokenizer and build a fresh model, or load --init-from.",
            "init",
            "model",
            ("data",),
            makes_model=True,
            resumable=True,
        ),
        Stage(
            "cpt",
            "Continued pretraining on the packed corpus.",
            "cpt",
            "cpt",
            ("model",),
            makes_model=True,
            resumable=True,
        ),
        Stage(
            "sft",
            "Multi-task supervised fine-tuning (full or LoRA).",
            "sft",
            "sft",
            ("data", "model"),
            makes_model=True,
            resumable=True,
        ),
        Stage(
            "dpo",
            "DPO on pairs mined from the SFT model's mistakes.",
            "dpo",
            "dpo",
            ("data", "model"),
            makes_model=True,
            resumable=True,
        ),
        Stage("eval", "Dev metrics of the pipeline's latest model.", "evaluate", None, ("data", "model")),
        Stage("export", "ONNX scoring graphs (fp32, int8) and bundles.", "export", "export", _ALL),
    )
}


def all_sections() -> tuple[str, ...]:
    """Every config section, in stage order (the flags of `train all`)."""
    return tuple(stage.section for stage in STAGES.values() if stage.section)


def model_stages() -> tuple[str, ...]:
    """The stages that write a model, in order; each training stage starts from the last enabled one before it."""
    return tuple(name for name, stage in STAGES.items() if stage.makes_model)


def upstream_sections(name: str) -> tuple[str, ...]:
    """The sections a stage's output depends on: its own and those of every stage before it."""
    names = list(STAGES)
    return tuple(s.section for s in list(STAGES.values())[: names.index(name) + 1] if s.section)
