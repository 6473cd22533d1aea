"""Shared fixtures: a tiny but real bundle trained by our own pipeline (about 15 s on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("REDONE_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "cold" / "train.csv").is_file():
        pytest.fail(f"shared data not found at {DATA_DIR}; set REDONE_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Output folder of `train all` with the tiny preset: every stage's folder, bundle/ and bundle-full/.

    `REDONE_TEST_TINY_RUN=DIR` reuses (or fills) a folder across sessions: finished stages are skipped.
    """
    from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
    from redone_sdk.training.pipeline import run_all

    reuse = os.environ.get("REDONE_TEST_TINY_RUN")
    out = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny-run")
    config = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", output_dir=str(out), data__data_dir=str(data_dir))
    run_all(config)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path) -> Path:
    """A small real bundle (int8 scoring graph, tokenizer, policy) as shipped bundles are laid out."""
    return tiny_run / "bundle"


@pytest.fixture(scope="session")
def tiny_full_bundle(tiny_run: Path) -> Path:
    """The same model with fp32 and int8 graphs, the generation graph and the safetensors checkpoint."""
    return tiny_run / "bundle-full"
