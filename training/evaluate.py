"""Dev-set evaluation through the SDK itself, so the figures describe exactly what users run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.inference.engine import TaskEngine, open_backend
from redone_sdk.inference.options import InferenceOptions
from redone_sdk.lexical import fused_relevance
from redone_sdk.training.datasets import Example

__all__ = [
    "evaluate_bundle",
    "predicted_labels",
    "classification_metrics",
    "category_metrics",
    "harm_set_metrics",
    "label_space",
    "per_category_rows",
    "per_category_table",
]

CATEGORY_VIEW = "category/"  # prefix of the keys of the view over the bundle's own categories (`category_metrics`)


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over `labels`, and per-label precision / recall / F1 and support (the gold count);
    predictions outside `labels` count as wrong."""
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
        out[f"support/{label}"] = r_den
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


def category_metrics(
    set_name: str, gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """Precision / recall / F1 / support, keyed `category/…`, of each category of `labels` (the bundle's own) that
    the gold labels use and the set's `label_space` merges (COLD `offensive`, SWSR `sexism`, both scored `harmful`);
    {} where nothing is merged or a gold label is not one of `labels`. A prediction of another category counts as
    wrong (`hate` on a COLD `offensive`)."""
    _, into = label_space(set_name, labels)
    if not set(gold) <= set(labels):
        return {}
    used = [label for label in labels if label in set(gold) and into(label) != label]
    if not used:
        return {}
    per = classification_metrics(gold, predicted, used)
    keep = ("precision/", "recall/", "f1/", "support/")
    return {f"{CATEGORY_VIEW}{k}": v for k, v in per.items() if k.startswith(keep)}


def harm_set_metrics(
    set_name: str, gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """`classification_metrics` of a dev set in its `label_space` (`labels` default: the gold labels seen), plus
    `category_metrics` where that space merges the bundle's categories."""
    labels = sorted(set(gold)) if labels is None else labels
    space, into = label_space(set_name, labels)
    out = classification_metrics([into(g) for g in gold], [into(p) for p in predicted], space)
    return {**out, **category_metrics(set_name, gold, predicted, labels)}


def per_category_rows(metrics: dict[str, dict[str, float]]) -> list[tuple[str, str, str, float, float, float, int]]:
    """(set, view, category, precision, recall, F1, support) for every per-category figure of `metrics`
    ({set: harm_set_metrics}); view is `scored` (the set's label space) or `category` (the bundle's categories)."""
    rows = []
    for set_name, values in metrics.items():
        for view, prefix in (("scored", ""), ("category", CATEGORY_VIEW)):
            for key in values:
                if key.startswith(f"{prefix}support/"):
                    label = key.removeprefix(f"{prefix}support/")
                    p, r, f1 = (values[f"{prefix}{name}/{label}"] for name in ("precision", "recall", "f1"))
                    rows.append((set_name, view, label, p, r, f1, int(values[key])))
    return rows


def per_category_table(metrics: dict[str, dict[str, float]]) -> str:
    """`per_category_rows` as a Markdown table (what `redone train eval` writes and `eval-bundle --table` prints)."""
    lines = ["| set | view | category | precision | recall | F1 | support |", "|---|---|---|---|---|---|---|"]
    for set_name, view, label, precision, recall, f1, support in per_category_rows(metrics):
        lines.append(f"| {set_name} | {view} | {label} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {support} |")
    return "\n".join(lines) + "\n"


def predicted_labels(engine: TaskEngine, examples: Sequence[Example]) -> list[str]:
    """The label a bundle's task gives each example: the most likely one, or for a matching task with a lexical
    fusion the fusion's grade, as `NoteQueryMatcher` gives it."""
    records = [e.record for e in examples]
    probs, _ = engine.score(records)
    task = engine.task
    if task.lexical is None:
        chosen = probs.argmax(axis=1)
    else:
        values = np.array([label.value for label in task.labels], dtype=np.float64)
        queries, notes = [r["query"] for r in records], [r["note"] for r in records]
        _, chosen, _ = fused_relevance(probs.astype(np.float64) @ values, queries, notes, task.lexical)
    return [task.label_names[i] for i in chosen]


def evaluate_bundle(
    bundle_dir: Path,
    sets: dict[str, list[Example]],
    *,
    precision: str | None = None,
    backend: str | None = None,
    options: InferenceOptions | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per dev set, each in its own label space (`harm_set_metrics`); QueryCorr as its five grades.
    How the bundle runs: `options` (default: passes of 64, one at a time, so that the batches, and with them
    the int8 graph's dynamic activation scales, do not depend on the machine's core count), with `precision` /
    `backend` put in their place."""
    bundle = Bundle.load(bundle_dir)
    default = InferenceOptions(batch_size=64, workers=1)
    options = InferenceOptions.build(options or default, precision=precision, backend=backend)
    scorer = open_backend(bundle, options)
    results: dict[str, dict[str, float]] = {}
    engines = {name: TaskEngine(bundle, name, scorer, options.batch_size) for name in bundle.manifest.tasks}
    for set_name, examples in sets.items():
        if not examples:
            continue
        task = examples[0].task
        engine = engines[task]
        predicted = predicted_labels(engine, examples)
        labels = engine.task.label_names
        results[set_name] = harm_set_metrics(set_name, [e.label for e in examples], predicted, labels)
    return results
