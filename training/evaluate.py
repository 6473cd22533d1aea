"""Dev-set evaluation through the SDK itself, so the figures describe exactly what users run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.inference.engine import TaskEngine, open_backend
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.training.datasets import Example

__all__ = ["evaluate_bundle", "classification_metrics", "harm_set_metrics", "label_space"]


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over `labels`, and per-label precision / recall / F1 (predictions outside count as wrong)."""
    gold_a, pred_a = np.asarray(gold), np.asarray(pred)
    out = {"accuracy": float((gold_a == pred_a).mean()) if len(gold_a) else 0.0, "n": float(len(gold_a))}
    f1s = []
    for label in labels:
        tp = float(((pred_a == label) & (gold_a == label)).sum())
        p_den, r_den = float((pred_a == label).sum()), float((gold_a == label).sum())
        precision = tp / p_den if p_den else 0.0
        recall = tp / r_den if r_den else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[f"precision/{label}"], out[f"recall/{label}"], out[f"f1/{label}"] = precision, recall, f1
        f1s.append(f1)
    out["macro_f1"] = float(np.mean(f1s))
    return out


def label_space(set_name: str, labels: Sequence[str]) -> tuple[list[str], Callable[[str], str]]:
    """The labels a dev set is scored over and the map of a prediction or gold label into them: COLD and SWSR
    harmful-vs-safe (harmful = any label but `safe`), Davidson its three classes, any other set `labels`."""
    if set_name.startswith(("cold", "swsr")):
        return ["safe", "harmful"], lambda label: "safe" if label == "safe" else "harmful"
    if set_name.startswith("davidson"):
        return ["safe", "offensive", "hate"], lambda label: label
    return list(labels), lambda label: label


def harm_set_metrics(
    set_name: str, gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """`classification_metrics` of a dev set in its `label_space` (`labels` default: the gold labels seen)."""
    space, into = label_space(set_name, sorted(set(gold)) if labels is None else labels)
    return classification_metrics([into(g) for g in gold], [into(p) for p in predicted], space)


def evaluate_bundle(
    bundle_dir: Path, sets: dict[str, list[Example]], *, precision: str | None = None, backend: str = "auto"
) -> dict[str, dict[str, float]]:
    """Metrics per dev set, each in its own label space (`harm_set_metrics`); QueryCorr as its five grades."""
    bundle = Bundle.load(bundle_dir)
    options = InferenceOptions(backend=backend, precision=precision, batch_size=64)  # type: ignore[arg-type]
    scorer = open_backend(bundle, options)
    results: dict[str, dict[str, float]] = {}
    engines = {name: TaskEngine(bundle, name, scorer, options.batch_size) for name in bundle.manifest.tasks}
    for set_name, examples in sets.items():
        if not examples:
            continue
        task = examples[0].task
        engine = engines[task]
        probs, _ = engine.score([e.record for e in examples])
        labels = engine.task.label_names
        predicted = [labels[i] for i in probs.argmax(axis=1)]
        results[set_name] = harm_set_metrics(set_name, [e.label for e in examples], predicted, labels)
    return results
