"""Quality per dev set for the bundle (int8 and fp32 graphs) and its peers, in the pipeline's own label spaces.

Label spaces are those of `redone_sdk.training.evaluate.evaluate_bundle` (COLD and SWSR: harmful vs safe;
Davidson: safe / offensive / hate; QueryCorr: the five grades), so the bundle's figures equal the manifest's;
`check_against_evaluate_bundle` re-derives a slice through `evaluate_bundle` itself to prove it. Davidson is
also shown harmful-vs-safe, the only question an English profanity filter can answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.inference.engine import TaskEngine, open_backend
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.training.datasets import HARM_LABELS, Example, harm_examples, querycorr_examples
from redone_sdk.training.datasets import QUERYCORR_GRADES as GRADES
from redone_sdk.training.evaluate import classification_metrics, evaluate_bundle, harm_set_metrics, predicted_labels
from redone_sdk.training.evaluate import label_space as training_label_space

__all__ = [
    "DEV_SETS",
    "dev_sets",
    "label_space",
    "metrics_for",
    "BundlePredictor",
    "check_against_evaluate_bundle",
    "quality_table",
]

# name -> (language, what it is)
DEV_SETS = {
    "cold_dev": ("zh", "COLD dev.csv (whole file)"),
    "swsr_dev": ("zh", "SWSR: rows whose text hash falls in the lowest 20 % (held out from training)"),
    "davidson_dev": ("en", "Davidson: rows whose text hash falls in the lowest 20 % (held out from training)"),
    "querycorr_dev": ("en", "SNS-Bench QueryCorr (topic): pairs whose hash falls in the lowest 20 %"),
}
BINARY_VIEWS = {"davidson_dev:binary": "davidson_dev"}
EVAL_BATCH = 64  # evaluate_bundle's batch size: the int8 graph quantizes per batch, so keep it identical


def dev_sets(data_dir: Path, cap: int = 0, seed: int = 7) -> dict[str, list[Example]]:
    """The dev parts the pipeline evaluates on; `cap` keeps a seeded random subset of each (quick mode)."""
    sets = {f"{s}_dev": harm_examples(data_dir, s, "dev") for s in ("cold", "swsr", "davidson")}
    sets["querycorr_dev"] = querycorr_examples(data_dir, "dev")
    if cap:
        rng = random.Random(seed)
        sets = {k: (rng.sample(v, cap) if len(v) > cap else v) for k, v in sets.items()}
    return sets


def label_space(set_name: str, labels: Sequence[str]) -> tuple[list[str], Any]:
    """(space, mapper) exactly as evaluate_bundle scores `set_name`; a `:binary` view is harmful vs safe."""
    if set_name.endswith(":binary"):
        return training_label_space("cold", labels)
    return training_label_space(set_name, labels)


def metrics_for(set_name: str, gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """evaluate_bundle's metrics of one set (a `:binary` view: harmful vs safe only)."""
    if not set_name.endswith(":binary"):
        return harm_set_metrics(set_name, gold, pred, labels)
    space, mapper = label_space(set_name, labels)
    return classification_metrics([mapper(g) for g in gold], [mapper(p) for p in pred], space)


class BundlePredictor:
    """Top labels of one bundle graph over records, batched exactly like evaluate_bundle."""

    def __init__(self, bundle_dir: Path, precision: str | None, backend: str = "onnx") -> None:
        self.bundle = Bundle.load(bundle_dir)
        options = InferenceOptions(backend=backend, precision=precision, batch_size=EVAL_BATCH)  # type: ignore[arg-type]
        scorer = open_backend(self.bundle, options)
        self.engines = {n: TaskEngine(self.bundle, n, scorer, EVAL_BATCH) for n in self.bundle.manifest.tasks}
        self.precision = precision or self.bundle.manifest.default_graph
        graph = self.bundle.manifest.graphs.get(self.precision or "")
        self.file = graph.file if graph else None

    def predict(self, examples: Sequence[Example]) -> tuple[list[str], list[str]]:
        """(predicted labels, the task's label names)."""
        engine = self.engines[examples[0].task]
        return predicted_labels(engine, examples), list(engine.task.label_names)


def check_against_evaluate_bundle(bundle_dir: Path, sets: dict[str, list[Example]], precision: str) -> dict[str, Any]:
    """Score the first 64 records of each set through evaluate_bundle and through this module; they must agree."""
    head = {k: v[:EVAL_BATCH] for k, v in sets.items()}
    official = evaluate_bundle(bundle_dir, head, precision=precision, backend="onnx")
    ours = BundlePredictor(bundle_dir, precision)
    worst = 0.0
    for name, examples in head.items():
        pred, labels = ours.predict(examples)
        mine = metrics_for(name, [e.label for e in examples], pred, labels)
        worst = max(worst, *(abs(mine[k] - official[name][k]) for k in official[name]))
    return {"records_per_set": EVAL_BATCH, "precision": precision, "max_abs_difference": worst, "agrees": worst < 1e-9}


def quality_table(
    sets: dict[str, list[Example]],
    bundle_systems: dict[str, BundlePredictor],
    harm_peers: Sequence[Any],
    relevance_peers: Sequence[Any],
    unavailable: dict[str, str],
) -> dict[str, Any]:
    """{dataset: {language, n, space, systems: {name: {status, metrics | reason}}}} plus int8-vs-fp32 agreement."""
    out: dict[str, Any] = {}
    predictions: dict[str, dict[str, list[str]]] = {}
    for set_name, examples in sets.items():
        language, what = DEV_SETS[set_name]
        gold = [e.label for e in examples]
        kind = examples[0].task
        labels: list[str] = list(HARM_LABELS) if kind == "moderation" else list(GRADES)
        rows: dict[str, Any] = {}
        predictions[set_name] = {}
        for name, predictor in bundle_systems.items():
            pred, labels = predictor.predict(examples)
            predictions[set_name][name] = pred
            rows[name] = {"status": "ok", "metrics": metrics_for(set_name, gold, pred, labels)}
        for peer in harm_peers:
            if kind != "moderation":
                rows[peer.name] = {"status": "n/a", "reason": "a harm classifier: does not grade query-note relevance"}
            elif peer.languages is not None and language not in peer.languages:
                reason = f"{'/'.join(peer.languages)} only; this set is {language}"
                rows[peer.name] = {"status": "n/a", "reason": reason}
            else:
                pred = peer.predict([e.record["text"] for e in examples])
                predictions[set_name][peer.name] = pred
                rows[peer.name] = {"status": "ok", "metrics": metrics_for(set_name, gold, pred, labels)}
        for peer in relevance_peers:
            if kind != "matching":
                rows[peer.name] = {"status": "n/a", "reason": "a relevance scorer: does not classify harm"}
            else:
                pred = peer.predict([(e.record["query"], e.record["note"]) for e in examples])
                rows[peer.name] = {"status": "ok", "metrics": metrics_for(set_name, gold, pred, labels)}
        for name, reason in unavailable.items():
            rows[name] = {"status": "n/a", "reason": reason}
        space, _ = label_space(set_name, labels)
        out[set_name] = {"language": language, "what": what, "n": len(examples), "space": space, "systems": rows}
        for view, base in BINARY_VIEWS.items():
            if base == set_name:
                out[view] = _binary_view(view, out[set_name], gold, predictions[set_name], labels)
    out["_int8_vs_fp32_top_label_agreement"] = _agreement(predictions)
    return out


def _binary_view(view: str, base: dict[str, Any], gold: list[str], preds: dict[str, list[str]], labels: list[str]):
    rows = {}
    for name, row in base["systems"].items():
        if name in preds:
            rows[name] = {"status": "ok", "metrics": metrics_for(view, gold, preds[name], labels)}
        else:
            rows[name] = dict(row)
    space, _ = label_space(view, labels)
    what = base["what"] + "; scored harmful (offensive or hate) vs safe"
    return {**base, "what": what, "space": space, "systems": rows}


def _agreement(predictions: dict[str, dict[str, list[str]]]) -> dict[str, float]:
    out = {}
    for set_name, by_system in predictions.items():
        int8 = next((v for k, v in by_system.items() if k.startswith("redone") and "int8" in k), None)
        fp32 = next((v for k, v in by_system.items() if k.startswith("redone") and "fp32" in k), None)
        if int8 is not None and fp32 is not None and int8:
            out[set_name] = round(float(np.mean([a == b for a, b in zip(int8, fp32, strict=True)])), 4)
    return out
