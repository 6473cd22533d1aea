"""`redone train all`: data → init → continued pretraining → SFT → DPO → evaluation → export, resumable.

A stage that already finished with the same configuration (its `DONE.json` fingerprint) is skipped, so a
run that stopped part-way continues where it was; trainers also resume from their last checkpoint. The
stages and their order are `stages/registry.py`'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from pathlib import Path

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages.common import is_done, log
from redone_sdk.training.stages.registry import STAGES

__all__ = ["STAGES", "run_stage", "run_all"]


def run_stage(name: str, config: PipelineConfig) -> Path:
    started = time.monotonic()
    log.info("stage %s: start", name)
    try:
        result = STAGES[name](config)
    finally:
        _restore_denormals()
    log.info("stage %s: done in %.0f s", name, time.monotonic() - started)
    return result


def _restore_denormals() -> None:
    """Undo `configure_torch`'s flush-to-zero: it is the calling thread's floating-point mode, and a stage run
    from a user's process (or a test session) must not leave that process computing without subnormals."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


def run_all(config: PipelineConfig, *, force: bool = False, skip: Collection[str] = ()) -> Path:
    """Every enabled stage in order but those named in `skip` (the benchmark's stand-in needs no `eval`); returns
    the shipped bundle's folder (`<output_dir>/bundle`)."""
    from redone_sdk.training.stages.init import check_supported

    check_supported(config)  # before the data stage, not an hour later
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")
    for name, stage in STAGES.items():
        if not stage.enabled(config) or name in skip:
            log.info("stage %s: %s", name, "skipped by the caller" if name in skip else "disabled")
            continue
        if not force and stage.resumable and is_done(config, name):
            log.info("stage %s: already done with this configuration, skipped", name)
            continue
        run_stage(name, config)
    return Path(config.output_dir) / "bundle"
