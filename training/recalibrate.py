"""Refit a finished bundle's decisions on dev from its own scores: the moderation task's label offsets and the policy.

The export fits both from the torch model's dev logits; a bundle whose checkpoint is gone (the shipped ones carry
none) can still be refitted from what its default ONNX graph scores, which is what its users get. The graphs,
tokenizer, temperatures and lexical fusion are copied unchanged; the moderation task's `label_offsets`,
`policy.json`, the version and the dev metrics of every graph are rewritten, and the new bundle is loaded back
verified. A source's signature (`bundle.sig`) is not copied: it signs the old digest.
`redone train recalibrate --bundle DIR --out NEW` runs it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.bundle import MANIFEST_FILE, Bundle, dump_manifest, sha256_file
from redone_sdk.bundle.trust import SIGNATURE_FILE
from redone_sdk.inference.engine import TaskEngine, label_offset_vector, open_backend
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.training.datasets import Example

__all__ = ["recalibrate_bundle"]

log = logging.getLogger(__name__)


def _scaled_logits(engine: TaskEngine, examples: Sequence[Example]) -> np.ndarray:
    """The task's logits divided by its temperature, up to a per-row shift, without its current offsets."""
    probs, _ = engine.score([e.record for e in examples])
    logits = np.log(np.maximum(probs.astype(np.float64), np.finfo(np.float32).tiny))
    current = label_offset_vector(engine.task)
    return logits - current if current is not None else logits


def _trained_sets(training_config: Mapping[str, Any]) -> set[str] | None:
    """The dev sets of the harm sources the bundle was trained on (its lineage's `data.harm_sources`), None when
    the lineage does not say: the offsets are fitted on those alone, as the export fits them."""
    sources = training_config.get("data", {}).get("harm_sources")
    return {f"{source}_dev" for source in sources} if sources else None


def recalibrate_bundle(
    bundle_dir: Path,
    out_dir: Path,
    sets: dict[str, list[Example]],
    *,
    version: str | None = None,
    fit_offsets: bool = True,
    seed: int = 13,
) -> Bundle:
    """Write `out_dir`: `bundle_dir` with its moderation task's label offsets (unless not `fit_offsets`: none) and
    policy refitted on the moderation dev `sets` ({set name: examples}, as `dev_examples` gives them), `version`
    (default: unchanged), and every graph's dev metrics on all of `sets` re-measured."""
    from redone_sdk.training.evaluate import evaluate_bundle
    from redone_sdk.training.label_offsets import moderation_decisions

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if out_dir.resolve() == bundle_dir.resolve():
        raise ValueError(f"recalibrate writes a new bundle: --output-dir {out_dir} is the bundle itself")
    bundle = Bundle.load(bundle_dir)
    manifest = bundle.manifest
    moderation = [name for name, task in manifest.tasks.items() if task.kind == "moderation"]
    if not moderation:
        raise ValueError(f"bundle {manifest.name} {manifest.version} has no moderation task to recalibrate")
    name = moderation[0]
    task = manifest.tasks[name]
    moderation_sets = {s: examples for s, examples in sets.items() if examples and examples[0].task == name}
    if not moderation_sets:
        raise ValueError(f"no dev examples of the task {name!r} among the sets {sorted(sets)}")

    options = InferenceOptions(batch_size=64, workers=1)  # as evaluate_bundle: passes independent of the cores
    engine = TaskEngine(bundle, name, open_backend(bundle, options), options.batch_size)
    scaled = {s: (_scaled_logits(engine, ex), [e.label for e in ex]) for s, ex in moderation_sets.items()}
    offsets, fit, policy, policy_figures = moderation_decisions(
        scaled, task, fit_offsets=fit_offsets, offset_sets=_trained_sets(manifest.lineage.training_config), seed=seed
    )
    log.info("recalibrate: %s label offsets %s", name, offsets)

    source_name = f"{manifest.name} {manifest.version}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(bundle_dir, out_dir)
    signature = out_dir / SIGNATURE_FILE
    if signature.exists():  # it signs the source's digest, which the new manifest changes: sign the new bundle anew
        signature.unlink()
        log.warning("recalibrate: %s's signature is not carried over; the new bundle is unsigned", source_name)
    policy_file = manifest.policy or "policy.json"
    (out_dir / policy_file).write_text(policy.to_json() + "\n", encoding="utf-8")
    metrics = {k: v for k, v in manifest.metrics.items() if not k.startswith(("label_offsets/", "policy/"))}
    if fit is not None:
        metrics[f"label_offsets/{name}"] = fit.figures()
    metrics["policy/dev"] = {k: float(v) for k, v in policy_figures.items()}
    data = json.loads(dump_manifest(manifest))
    data["tasks"][name]["label_offsets"] = offsets
    data.update(
        version=version or manifest.version,
        policy=policy_file,
        files={
            p.relative_to(out_dir).as_posix(): sha256_file(p)
            for p in sorted(out_dir.rglob("*"))
            if p.is_file() and p.relative_to(out_dir).as_posix() not in (MANIFEST_FILE, SIGNATURE_FILE)
        },
        metrics=metrics,
        description=manifest.description.rstrip()
        + f" Label offsets and policy refitted on dev from the {manifest.default_graph} graph's scores of "
        f"{source_name} (redone train recalibrate).",
    )
    written = type(manifest).model_validate(data)
    (out_dir / MANIFEST_FILE).write_text(dump_manifest(written), encoding="utf-8")
    for precision in sorted(written.graphs):
        for set_name, values in evaluate_bundle(out_dir, sets, precision=precision).items():
            metrics[f"{precision}/{set_name}"] = values
    written = type(manifest).model_validate({**data, "metrics": dict(sorted(metrics.items()))})
    (out_dir / MANIFEST_FILE).write_text(dump_manifest(written), encoding="utf-8")
    return Bundle.load(out_dir)
