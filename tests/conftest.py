"""Shared fixtures: the tests' labeled data, and a tiny but real bundle trained by our own pipeline.

Data: `$REDONE_DATA_DIR` when set (the full data, see the README's "Data"), else the small labeled set committed
under tests/fixtures/data (tests/fixtures/data/README.md says where its rows come from). The session exports
`REDONE_DATA_DIR` so that code reading its default data folder (and subprocesses) sees the same folder, never
`../shared/data`.

This module imports only the core: the training pipeline (torch, trl) is imported inside `tiny_run`, so the core
tests (tests/sdk) run with the light install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from redone_sdk import InferenceOptions

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"
DATA_DIR = Path(os.environ.get("REDONE_DATA_DIR") or FIXTURE_DATA)


def pytest_configure(config: pytest.Config) -> None:
    os.environ["REDONE_DATA_DIR"] = str(DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "cold" / "train.csv").is_file():
        pytest.fail(f"no labeled data at {DATA_DIR} (REDONE_DATA_DIR); unset it to use tests/fixtures/data")
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


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The bundle shipped inside the package (what `Moderator.load()` loads): int8 graph only, no checkpoint."""
    from redone_sdk.bundle import default_bundle_path

    return default_bundle_path()


@pytest.fixture(scope="session")
def every_inference_flag() -> tuple[list[str], InferenceOptions]:
    """Model flags that set every `InferenceOptions` field to a value other than its default, and those options
    (the batch-size flag is left out: `redone stream` names it `--model-batch-size`; add `--batch-size 4`)."""
    from redone_sdk import InferenceOptions

    flags = [
        "--backend", "onnx", "--precision", "fp32", "--workers", "2", "--threads", "1", "--inter-op-threads", "2",
        "--no-spinning", "--providers", "CPUExecutionProvider", "--torch-dtype", "bfloat16",
    ]  # fmt: skip
    options = InferenceOptions(
        backend="onnx",
        precision="fp32",
        batch_size=4,
        intra_op_threads=1,
        inter_op_threads=2,
        providers=("CPUExecutionProvider",),
        torch_dtype="bfloat16",
        allow_spinning=False,
        workers=2,
    )
    return flags, options
