"""Fit a matching task's lexical fusion (`LexicalFusion` in the manifest) on QueryCorr train.

relevance = (1 - w) * the model's expected grade value + w * query-term coverage (`redone_sdk.lexical`), graded by
`GradeCuts`. The weight w is the one of 0, 0.1, …, 1 with the best mean macro-F1 under stratified k-fold cross-
validation on train (cuts fitted on k - 1 folds, scored on the last; repeated with fresh shuffles; ties go to the
smaller weight), then the cuts are fitted on all of train at that weight. Dev is never looked at. By default the
model's outputs on train are in-sample: on redone-base 0.4.2 (one SFT epoch) its train macro-F1 (0.31) was close
enough to dev's (0.20) for that to hold; after two epochs (0.46 against 0.32) the fit misplaced dev's grades.
`data.fusion_holdout` keeps a share of the train pairs out of SFT (`fusion_holdout_pairs`) and fits on those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from redone_sdk.bundle.manifest import LexicalFusion
from redone_sdk.training.evaluate import classification_metrics
from redone_sdk.training.grade_cuts import GRADES, GradeCuts

__all__ = ["WEIGHTS", "FusionFit", "fit_lexical_fusion", "fusion_holdout_pairs", "query_note_pair", "stratified_folds"]

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class FusionFit:
    """The chosen weight and cuts, with the cross-validated macro-F1 of every weight tried."""

    weight: float
    grade_cuts: tuple[float, ...]
    cv_macro_f1: dict[float, float]
    train_macro_f1: float
    examples: int
    folds: int
    repeats: int
    rows: str = "QueryCorr train"

    def spec(self) -> LexicalFusion:
        return LexicalFusion(
            weight=self.weight,
            grade_cuts=self.grade_cuts,
            fitted_on=f"{self.rows} ({self.examples} pairs): weight by {self.folds}-fold stratified CV "
            f"x{self.repeats} of grade-cut macro-F1 over {list(self.cv_macro_f1)}, cuts refitted on all of them",
        )

    def figures(self) -> dict[str, float]:
        return {
            "weight": self.weight,
            "cv_macro_f1": self.cv_macro_f1[self.weight],
            "cv_macro_f1_model_only": self.cv_macro_f1.get(0.0, float("nan")),
            "cv_macro_f1_coverage_only": self.cv_macro_f1.get(1.0, float("nan")),
            "train_macro_f1": self.train_macro_f1,
            "examples": float(self.examples),
        }


def stratified_folds(gold: Sequence[str], folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number per example: each label's examples shuffled and dealt round-robin, so folds keep its share."""
    assignment = np.zeros(len(gold), dtype=np.int64)
    offset = 0
    for label in sorted(set(gold)):
        members = rng.permutation([i for i, g in enumerate(gold) if g == label])
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


def query_note_pair(row: dict) -> tuple[str, str]:
    """A QueryCorr row's identity: its (query, note); upsampled copies share it."""
    return row["fields"]["query"], row["fields"]["note"]


def fusion_holdout_pairs(rows: Sequence[dict], share: float, seed: int) -> frozenset[tuple[str, str]]:
    """The (query, note) pairs of QueryCorr train rows to keep out of training for the fusion fit: `share` of the
    distinct pairs of each grade (rounded, at least one of a grade that has two or more), drawn with `seed`."""
    if not share:
        return frozenset()
    grade: dict[tuple[str, str], str] = {}
    for row in rows:
        grade.setdefault(query_note_pair(row), str(row["label"]))
    rng = np.random.default_rng(seed)
    held: set[tuple[str, str]] = set()
    for label in sorted(set(grade.values())):
        pairs = sorted(p for p, g in grade.items() if g == label)
        take = min(len(pairs) - 1, max(1, round(share * len(pairs)))) if len(pairs) > 1 else 0
        held.update(pairs[i] for i in rng.permutation(len(pairs))[:take])
    return frozenset(held)


def fit_lexical_fusion(
    expected: np.ndarray,
    coverage: np.ndarray,
    gold: Sequence[str],
    *,
    weights: Sequence[float] = WEIGHTS,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    rows: str = "QueryCorr train",
) -> FusionFit:
    """Choose the coverage weight by cross-validation on train and fit the grade cuts at it (module docstring)."""
    expected, coverage = np.asarray(expected, dtype=np.float64), np.asarray(coverage, dtype=np.float64)
    if not len(expected) == len(coverage) == len(gold):
        raise ValueError(f"expected, coverage and gold differ in length: {len(expected)}, {len(coverage)}, {len(gold)}")
    if len(gold) < 2 * folds:
        raise ValueError(f"a lexical fusion needs at least {2 * folds} train pairs for {folds} folds, got {len(gold)}")
    unknown = sorted(set(gold) - set(GRADES))
    if unknown:
        raise ValueError(f"gold grades must be among {GRADES}, got {unknown}")
    rng = np.random.default_rng(seed)
    splits = [stratified_folds(gold, folds, rng) for _ in range(repeats)]
    labels = np.asarray(gold)
    cv: dict[float, float] = {}
    for weight in weights:
        relevance = (1.0 - weight) * expected + weight * coverage
        scores = []
        for assignment in splits:
            for fold in range(folds):
                held = assignment == fold
                cuts = GradeCuts()
                cuts.fit(relevance[~held], list(labels[~held]))
                predicted = cuts.grades(relevance[held])
                scores.append(classification_metrics(list(labels[held]), predicted, GRADES)["macro_f1"])
        cv[float(weight)] = float(np.mean(scores))
    best = max(cv, key=lambda w: (round(cv[w], 12), -w))
    cuts = GradeCuts()
    train_f1 = cuts.fit((1.0 - best) * expected + best * coverage, list(gold))
    return FusionFit(
        weight=best,
        grade_cuts=tuple(float(c) for c in cuts.cuts),
        cv_macro_f1=cv,
        train_macro_f1=float(train_f1),
        examples=len(gold),
        folds=folds,
        repeats=repeats,
        rows=rows,
    )
