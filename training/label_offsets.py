"""Label offsets: a shift of a moderation task's label prior, fitted on dev for the macro-F1 of the most likely label.

Temperature scaling leaves the argmax alone; it fits the probabilities, not the decisions. The SFT recipe weights
labels by their share (`sft.class_balance`), which moves the model's prior away from every dev set's, and a single
argmax over four labels serves three dev sets scored in different label spaces (COLD and SWSR harmful vs safe,
Davidson safe / offensive / hate). Post-hoc logit adjustment (Menon et al., 2021) adds one offset per label to the
calibrated logits; here the offsets are chosen from a grid to maximise the mean dev macro-F1 over the sets, each in
its own `label_space`, with the reference (safe) label held at 0. Ties go to the smaller total |offset|.

Dev chooses the offsets, so dev scored with them is in-sample. `fit_label_offsets` also reports a cross-fitted
figure: each set split in two halves stratified by gold label (seeded), offsets fitted on one half score the
other, averaged over repeats; that figure is the one to quote, and the one that decides: `moderation_decisions`
keeps offsets only when their cross-fitted mean beats no offsets (`LabelOffsetFit.pays`), since a grid search
over a few labels always finds some in-sample gain on noise. The SDK applies the offsets
(`TaskSpec.label_offsets`, `redone_sdk.inference.engine.label_probabilities`).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.policy import Policy
from redone_sdk.training.evaluate import label_space

__all__ = ["OFFSET_GRID", "LabelOffsetFit", "fit_label_offsets", "moderation_decisions"]

OFFSET_GRID: tuple[float, ...] = tuple(np.round(np.arange(-1.0, 1.0001, 0.25), 6).tolist())


@dataclass(frozen=True)
class _ScoredSet:
    """One dev set as integers: scaled logits [n, labels], the space index of each label, the gold's space index."""

    logits: np.ndarray
    into: np.ndarray
    gold: np.ndarray
    space: tuple[str, ...]

    def subset(self, rows: np.ndarray) -> _ScoredSet:
        return _ScoredSet(self.logits[rows], self.into, self.gold[rows], self.space)

    def predicted(self, offsets: np.ndarray) -> np.ndarray:
        return self.into[(self.logits + offsets).argmax(axis=1)]


def _f1s(gold: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """F1 of each space label (0 where it has neither gold nor predictions); a prediction of -1 (a label outside
    the space: sexism on Davidson) is wrong for every label, as `classification_metrics` counts it."""
    tp = np.bincount(gold[gold == predicted], minlength=size).astype(np.float64)
    denominator = np.bincount(gold, minlength=size) + np.bincount(predicted[predicted >= 0], minlength=size)
    return np.divide(2 * tp, denominator, out=np.zeros(size), where=denominator > 0)


def _macro_f1(scored: _ScoredSet, offsets: np.ndarray) -> float:
    return float(_f1s(scored.gold, scored.predicted(offsets), len(scored.space)).mean())


def _best_offsets(sets: Sequence[_ScoredSet], labels: int, reference: int, grid: Sequence[float]) -> np.ndarray:
    free = [i for i in range(labels) if i != reference]
    best_key, best = None, np.zeros(labels)
    for values in itertools.product(grid, repeat=len(free)):
        offsets = np.zeros(labels)
        offsets[free] = values
        key = (round(float(np.mean([_macro_f1(s, offsets) for s in sets])), 9), -float(np.abs(offsets).sum()))
        if best_key is None or key > best_key:
            best_key, best = key, offsets
    return best


def _halves(gold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1 per row, each gold label's rows split in two (shuffled) halves."""
    half = np.zeros(len(gold), dtype=np.int64)
    for label in np.unique(gold):
        rows = np.flatnonzero(gold == label)
        rng.shuffle(rows)
        half[rows[: len(rows) // 2]] = 1
    return half


@dataclass(frozen=True)
class LabelOffsetFit:
    """The chosen offsets (every label, the reference at 0) and, per dev set, macro-F1 and each space label's F1
    without them, with them (in-sample) and cross-fitted."""

    offsets: dict[str, float]
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    cross_fitted: dict[str, dict[str, float]]
    grid: tuple[float, ...]
    repeats: int

    def pays(self) -> bool:
        """Whether the cross-fitted mean macro-F1 (offsets fitted on one half of dev, scored on the other) beats the
        mean without offsets: the out-of-sample test that an in-sample gain cannot pass for."""
        cross = np.mean([v["macro_f1"] for v in self.cross_fitted.values()])
        return bool(cross > np.mean([v["macro_f1"] for v in self.before.values()]))

    def spec(self) -> dict[str, float]:
        """The manifest's `label_offsets`: the non-zero offsets."""
        return {label: value for label, value in sorted(self.offsets.items()) if value != 0.0}

    def figures(self) -> dict[str, float]:
        """Flat figures for the manifest's metrics (`label_offsets/<task>`)."""
        out: dict[str, float] = {f"offset/{label}": value for label, value in self.offsets.items()}
        for view, per_set in (("before", self.before), ("after", self.after), ("cross_fitted", self.cross_fitted)):
            for set_name, values in per_set.items():
                out.update({f"{view}/{set_name}/{key}": value for key, value in values.items()})
            out[f"{view}/mean_macro_f1"] = float(np.mean([v["macro_f1"] for v in per_set.values()]))
        out["repeats"] = float(self.repeats)
        out["kept"] = float(self.pays() and bool(self.spec()))
        return dict(sorted(out.items()))


def _figures(scored: _ScoredSet, predicted: np.ndarray) -> dict[str, float]:
    f1 = _f1s(scored.gold, predicted, len(scored.space))
    per_label = {f"f1/{label}": float(v) for label, v in zip(scored.space, f1, strict=True)}
    return {"macro_f1": float(f1.mean()), **per_label}


def fit_label_offsets(
    sets: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    labels: Sequence[str],
    *,
    reference: str,
    grid: Sequence[float] = OFFSET_GRID,
    repeats: int = 2,
    seed: int = 0,
) -> LabelOffsetFit:
    """Offsets for `labels` maximising the mean macro-F1 over `sets` ({set name: (scaled logits [n, labels], gold
    label names)}, each scored in its `label_space`, e.g. `cold_dev`), `reference` held at 0; with a cross-fitted
    estimate over `repeats` seeded two-way splits. The logits are what the SDK adds the offsets to: the task's
    logits divided by its temperature (the log of its probabilities works as well)."""
    names = list(labels)
    if reference not in names:
        raise ValueError(f"reference label {reference!r} is not one of {names}")
    if not sets:
        raise ValueError("no dev sets to fit label offsets on")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    scored: dict[str, _ScoredSet] = {}
    for set_name, (logits, gold) in sets.items():
        values = np.asarray(logits, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names) or values.shape[0] != len(gold) or not len(gold):
            raise ValueError(f"{set_name}: logits must be [n > 0, {len(names)}] with one gold label per row")
        if not np.isfinite(values).all():
            raise ValueError(f"{set_name}: logits must be finite")
        unknown = sorted(set(gold) - set(names))
        if unknown:
            raise ValueError(f"{set_name}: gold labels {unknown} are not among {names}")
        space, into = label_space(set_name, names)
        if any(into(g) not in space for g in set(gold)):
            raise ValueError(f"{set_name}: gold labels {sorted(set(gold))} fall outside its label space {space}")
        scored[set_name] = _ScoredSet(
            values,
            np.array([space.index(into(n)) if into(n) in space else -1 for n in names]),
            np.array([space.index(into(g)) for g in gold]),
            tuple(space),
        )
    ref = names.index(reference)
    zero = np.zeros(len(names))
    best = _best_offsets(list(scored.values()), len(names), ref, grid)

    crossed: dict[str, list[dict[str, float]]] = {name: [] for name in scored}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        halves = {name: _halves(s.gold, rng) for name, s in scored.items()}
        predicted = {name: np.empty(len(s.gold), dtype=np.int64) for name, s in scored.items()}
        for half in (0, 1):
            fitted = _best_offsets(
                [s.subset(np.flatnonzero(halves[n] == half)) for n, s in scored.items()], len(names), ref, grid
            )
            for name, s in scored.items():
                rows = np.flatnonzero(halves[name] != half)
                predicted[name][rows] = s.subset(rows).predicted(fitted)
        for name, s in scored.items():
            crossed[name].append(_figures(s, predicted[name]))
    return LabelOffsetFit(
        offsets={str(label): float(v) for label, v in zip(names, best, strict=True)},
        before={name: _figures(s, s.predicted(zero)) for name, s in scored.items()},
        after={name: _figures(s, s.predicted(best)) for name, s in scored.items()},
        cross_fitted={
            name: {key: float(np.mean([run[key] for run in runs])) for key in runs[0]} for name, runs in crossed.items()
        },
        grid=tuple(float(g) for g in grid),
        repeats=repeats,
    )


def moderation_decisions(
    sets: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    task: TaskSpec,
    *,
    fit_offsets: bool = True,
    offset_sets: Collection[str] | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], LabelOffsetFit | None, Policy, dict[str, float]]:
    """What a moderation task decides with, from its dev sets ({set: (logits divided by the task's temperature,
    gold label names)}): the label offsets (`fit_label_offsets` on the sets named in `offset_sets`, default all;
    {} and no fit without `fit_offsets` or without such a set; {} with the fit returned when it does not pay out of
    sample, `LabelOffsetFit.pays`), then the policy set from the dev probabilities
    those offsets give on every set (`policy_from_dev`) and its figures. `offset_sets` keeps a set the model never
    trained on (the cross-set check) out of the fit, so that its dev figure stays out of sample."""
    from redone_sdk.training.calibration import policy_from_dev, softmax

    if task.kind != "moderation" or task.safe_label is None:
        raise ValueError("label offsets and a policy are fitted for a moderation task only")
    labels = list(task.label_names)
    chosen = {name: value for name, value in sets.items() if offset_sets is None or name in offset_sets}
    fit = fit_label_offsets(chosen, labels, reference=task.safe_label, seed=seed) if fit_offsets and chosen else None
    offsets = fit.spec() if fit is not None and fit.pays() else {}
    shift = np.array([offsets.get(label, 0.0) for label in labels])
    logits = np.concatenate([np.asarray(values, dtype=np.float64) for values, _ in sets.values()])
    gold = np.array([labels.index(g) for _, names in sets.values() for g in names])
    policy, figures = policy_from_dev(softmax(logits + shift), gold, labels, task.safe_label)
    return offsets, fit, policy, figures
