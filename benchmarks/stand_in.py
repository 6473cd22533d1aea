"""What `--quick` measures on a fresh clone: a stand-in for bundle-full and the data to run on.

Without `runs/default/bundle-full` (only a full pipeline run makes one) the speed table still needs every backend of
one model in one process, so the tiny preset is trained once into a cache (about 15 s) and its rows are labelled as
the tiny model's. Without the shared data the repository's small labeled test set stands in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .settings import repo_root

__all__ = ["CACHE_ENV", "has_data", "fixture_data_dir", "stand_in_cache_dir", "tiny_bundle_full"]

# the project's cache folder (as for pretrained backbones); the stand-in goes under <it>/bench
CACHE_ENV = "REDONE_CACHE_DIR"

log = logging.getLogger("benchmarks")


def has_data(data_dir: Path) -> bool:
    """Whether `data_dir` holds the shared labeled data (checked by one file every set's reader needs)."""
    return (data_dir / "cold" / "train.csv").is_file()


def fixture_data_dir() -> Path | None:
    """The small labeled set committed under tests/fixtures/data, when running from a source checkout."""
    root = repo_root()
    folder = root / "tests" / "fixtures" / "data" if root else None
    return folder if folder is not None and has_data(folder) else None


def stand_in_cache_dir() -> Path:
    """`$REDONE_CACHE_DIR/bench`, else `$XDG_CACHE_HOME/redone-sdk/bench` (`~/.cache/redone-sdk/bench`)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "bench"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "redone-sdk" / "bench"


def tiny_bundle_full(data_dir: Path, cache_dir: Path | None = None) -> Path:
    """bundle-full of the tiny preset trained on `data_dir`: trained once per data folder (without the `eval`
    stage, which the benchmark does not read), then reused as it is; a run cut short resumes where it stopped.
    Needs the [train] extra, as the speed table's PyTorch backends do."""
    from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
    from redone_sdk.training.pipeline import run_all

    key = hashlib.sha256(str(data_dir.resolve()).encode("utf-8")).hexdigest()[:10]
    out = (cache_dir or stand_in_cache_dir()) / f"tiny-run-{key}"
    if (out / "bundle" / "manifest.json").is_file():  # export writes bundle/ after bundle-full is final
        log.info("stand-in bundle-full: reusing %s", out / "bundle-full")
        return out / "bundle-full"
    log.info("training the tiny preset as a stand-in bundle-full into %s (once, under a minute) …", out)
    config = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", output_dir=str(out), data__data_dir=str(data_dir))
    run_all(config, skip=("eval",))
    return out / "bundle-full"
