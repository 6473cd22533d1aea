"""`redone train all`: data → init → continued pretraining → SFT → DPO → evaluation → export, resumable.

A stage that already finished with the same configuration (its `DONE.json` fingerprint) is skipped, so a
run that stopped part-way continues where it was; trainers also resume from their last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.stages import cpt, data, dpo, evaluate, export, init, sft
from redone_sdk.training.stages.common import is_done, log

__all__ = ["STAGES", "run_stage", "run_all"]

STAGES = {
    "data": data.run,
    "init": init.run,
    "cpt": cpt.run,
    "sft": sft.run,
    "dpo": dpo.run,
    "eval": evaluate.run,
    "export": export.run,
}
_ENABLED = {"cpt": lambda c: c.cpt.enabled, "sft": lambda c: c.sft.enabled, "dpo": lambda c: c.dpo.enabled}


def run_stage(name: str, config: PipelineConfig) -> Path:
    started = time.monotonic()
    log.info("stage %s: start", name)
    result = STAGES[name](config)
    log.info("stage %s: done in %.0f s", name, time.monotonic() - started)
    return result


def run_all(config: PipelineConfig, *, force: bool = False) -> Path:
    """Every enabled stage in order; returns the shipped bundle's folder (`<output_dir>/bundle`)."""
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")
    for name in STAGES:
        if name in _ENABLED and not _ENABLED[name](config):
            log.info("stage %s: disabled", name)
            continue
        if not force and name in ("data", "init", "cpt", "sft", "dpo") and is_done(config, name):
            log.info("stage %s: already done with this configuration, skipped", name)
            continue
        run_stage(name, config)
    return Path(config.output_dir) / "bundle"
