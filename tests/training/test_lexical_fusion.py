"""Fitting a lexical fusion (training/lexical_fusion.py) and grading by it in `evaluate_bundle`."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import NoteQueryMatcher
from redone_sdk.bundle import MANIFEST_FILE
from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
from redone_sdk.training.datasets import Example
from redone_sdk.training.evaluate import evaluate_bundle
from redone_sdk.training.lexical_fusion import fit_lexical_fusion, fusion_holdout_pairs, stratified_folds

GRADES = ("-1", "0", "1", "2", "3")


def _synthetic(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    grade = rng.integers(0, 5, n)
    return grade / 4.0, rng.random(n), [GRADES[g] for g in grade]


def test_folds_keep_each_grade_share() -> None:
    gold = ["a"] * 50 + ["b"] * 25 + ["c"] * 5
    folds = stratified_folds(gold, 5, np.random.default_rng(0))
    for fold in range(5):
        counts = Counter(g for g, f in zip(gold, folds, strict=True) if f == fold)
        assert counts == {"a": 10, "b": 5, "c": 1}


def test_the_weight_goes_to_whichever_signal_carries_the_grade() -> None:
    signal, noise, gold = _synthetic()
    model_knows = fit_lexical_fusion(signal, noise, gold)
    assert model_knows.weight == 0.0 and model_knows.cv_macro_f1[0.0] > 0.9 > 0.5 > model_knows.cv_macro_f1[1.0]
    coverage_knows = fit_lexical_fusion(noise, signal, gold)
    weight = coverage_knows.weight  # ties go to the smaller weight: 0.1 of noise still grades perfectly
    assert weight >= 0.8 and coverage_knows.cv_macro_f1[weight] > 0.9 > 0.5 > coverage_knows.cv_macro_f1[0.0]
    assert list(coverage_knows.grade_cuts) == sorted(coverage_knows.grade_cuts) and len(coverage_knows.grade_cuts) == 4
    spec = coverage_knows.spec()
    assert spec.weight == weight and "QueryCorr train (300 pairs)" in spec.fitted_on
    assert coverage_knows.figures()["cv_macro_f1_coverage_only"] == coverage_knows.cv_macro_f1[1.0]


def test_too_few_or_unknown_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        fit_lexical_fusion(np.zeros(9), np.zeros(9), ["0"] * 9)
    with pytest.raises(ValueError, match="among"):
        fit_lexical_fusion(np.zeros(12), np.zeros(12), ["5"] * 12)
    with pytest.raises(ValueError, match="length"):
        fit_lexical_fusion(np.zeros(12), np.zeros(11), ["0"] * 12)


def _querycorr_rows(per_grade: int) -> list[dict]:
    return [
        {"fields": {"query": f"query {grade}.{i}", "note": f"note {i}"}, "label": grade, "task": "matching"}
        for grade in GRADES
        for i in range(per_grade)
    ]


def test_the_holdout_takes_a_share_of_each_grade_and_every_copy_of_a_pair() -> None:
    rows = _querycorr_rows(10)
    copied = rows + rows[:7]  # upsampled / repeated rows are one pair
    held = fusion_holdout_pairs(copied, 0.3, seed=1)
    grade_of = {(r["fields"]["query"], r["fields"]["note"]): r["label"] for r in rows}
    assert Counter(grade_of[pair] for pair in held) == dict.fromkeys(GRADES, 3)
    assert held == fusion_holdout_pairs(list(reversed(copied)), 0.3, seed=1)  # row order does not matter
    assert held != fusion_holdout_pairs(copied, 0.3, seed=2)
    assert fusion_holdout_pairs(copied, 0.0, seed=1) == frozenset()
    lone = _querycorr_rows(1)  # a grade with one pair keeps it for training; with two, one is held at any share
    assert fusion_holdout_pairs(lone, 0.9, seed=1) == frozenset()
    assert len(fusion_holdout_pairs(_querycorr_rows(2), 0.01, seed=1)) == len(GRADES)


def test_a_holdout_needs_the_fusion_it_is_for() -> None:
    base = PRESETS_DIR / "base.json"
    assert PipelineConfig.from_file(base, data__fusion_holdout=0.25).data.fusion_holdout == 0.25
    with pytest.raises(ValueError, match=r"fusion_holdout must be in \[0, 1\)"):
        PipelineConfig.from_file(base, data__fusion_holdout=1.0)
    with pytest.raises(ValueError, match="only drop the pairs"):
        PipelineConfig.from_file(base, data__fusion_holdout=0.25, export__lexical_fusion=False)
    with pytest.raises(ValueError, match="only drop the pairs"):
        PipelineConfig.from_file(None, data__fusion_holdout=0.25)  # the Qwen2 preset fits no fusion


PAIRS = [
    ("egg waffle recipe", "Egg waffles: mix flour, eggs and milk."),
    ("egg waffle recipe", "Car repair: change the oil every 5,000 km."),
    ("小红书 穿搭", "今天的穿搭分享，小红书上很火"),
    ("waffle", "waffle waffle waffle"),
    ("oil change", "Egg waffles again"),
]


def test_evaluate_bundle_grades_as_the_matcher_does(default_bundle: Path, tmp_path: Path) -> None:
    fused = tmp_path / "fused"
    shutil.copytree(default_bundle, fused)
    manifest = json.loads((fused / MANIFEST_FILE).read_text())
    manifest["tasks"]["matching"]["lexical"] = {"weight": 0.6, "grade_cuts": [0.15, 0.3, 0.45, 0.6]}
    (fused / MANIFEST_FILE).write_text(json.dumps(manifest))
    notes = [({"note_id": str(i), "content": note}) for i, (_, note) in enumerate(PAIRS)]
    results = NoteQueryMatcher.load(fused).score_pairs([(q, n) for (q, _), n in zip(PAIRS, notes, strict=True)])
    grades = [str(r.grade) for r in results]
    by_model = [max(r.grade_probabilities, key=r.grade_probabilities.get) for r in results]
    assert grades != by_model  # so the check below tells the fused grading from the model's argmax
    examples = [
        Example(task="matching", fields=(("query", q), ("note", n)), label=g, source="t")
        for (q, n), g in zip(PAIRS, grades, strict=True)
    ]
    assert evaluate_bundle(fused, {"querycorr_dev": examples})["querycorr_dev"]["accuracy"] == 1.0


def test_an_export_with_too_few_held_out_pairs_warns_and_records_the_missing_fusion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from redone_sdk import Moderator
    from redone_sdk.training.stages.export_prefix_lm import MIN_FUSION_PAIRS, _with_lexical_fusion

    config = PipelineConfig.from_file(PRESETS_DIR / "base.json", output_dir=str(tmp_path), data__fusion_holdout=0.2)
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    rows = [{"task": "matching", "fields": {"query": f"q{i}", "note": f"note {i}"}, "label": "1"} for i in range(30)]
    (train / "querycorr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tasks = dict(Moderator.load("redone-base").bundle.manifest.tasks)
    with caplog.at_level("WARNING", logger="redone_sdk.training"):
        fused, figures = _with_lexical_fusion(config, None, None, tasks)  # returns before any scoring
    held = len(fusion_holdout_pairs(rows, 0.2, config.seed))
    assert held < MIN_FUSION_PAIRS and fused == tasks
    assert figures == {"lexical_fusion/matching": {"examples": float(held), "skipped": 1.0}}
    assert any("NO lexical fusion on matching" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
