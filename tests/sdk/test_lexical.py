"""Lexical fusion (redone_sdk/lexical.py, `LexicalFusion` in the manifest): query terms and their coverage of a
note, the manifest's checks, and `NoteQueryMatcher` / `evaluate_bundle` grading fused relevance by the cuts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import Bundle, BundleFormatError, NoteQueryMatcher
from redone_sdk.bundle import MANIFEST_FILE
from redone_sdk.bundle.manifest import LexicalFusion
from redone_sdk.lexical import fused_relevance, query_coverage, query_terms

VALUES = {"-1": 0.0, "0": 0.25, "1": 0.5, "2": 0.75, "3": 1.0}


def _with_lexical(source: Path, target: Path, lexical: dict | None, task: str = "matching") -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["tasks"][task].pop("lexical", None)
    if lexical is not None:
        manifest["tasks"][task]["lexical"] = lexical
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


def test_terms_are_lowercased_words_and_cjk_bigrams() -> None:
    assert query_terms("Egg_Waffles, 2 EGGS!") == {"egg", "waffles", "2", "eggs"}
    assert query_terms("小红书 好") == {"小红", "红书", "好"}
    assert query_terms("abc中文x") == {"abc", "中文", "x"}
    assert query_terms("!!! ... ") == frozenset()


def test_coverage_is_the_share_of_query_terms_anywhere_in_the_note() -> None:
    assert query_coverage("traffic violations", "Avoid TRAFFIC violations.") == 1.0
    assert query_coverage("traffic violations fines", "traffic only") == pytest.approx(1 / 3)
    assert query_coverage("小红书攻略", "我在小红书上看到") == pytest.approx(2 / 4)  # 小红 红书 of 小红 红书 书攻 攻略
    assert query_coverage("???", "anything") == 0.0
    assert query_coverage("waffle", "x " * 5000 + "waffle") == 1.0  # far past what the model reads


def test_fused_relevance_mixes_and_grades_by_the_cuts() -> None:
    fusion = LexicalFusion(weight=0.25, grade_cuts=(0.2, 0.4, 0.6, 0.8))
    relevance, grades, coverage = fused_relevance(
        np.array([0.0, 0.4, 1.0]), ["a b", "a b", "a"], ["x", "a", "a"], fusion
    )
    assert coverage.tolist() == [0.0, 0.5, 1.0]
    assert relevance.tolist() == pytest.approx([0.0, 0.425, 1.0])
    assert grades.tolist() == [0, 2, 4]
    _, at_cut, _ = fused_relevance(np.array([0.4 / 0.75]), ["q"], ["x"], fusion)
    assert at_cut.tolist() == [2]  # a relevance equal to a cut is past it


@pytest.mark.parametrize(
    ("lexical", "task", "message"),
    [
        ({"weight": 0.2, "grade_cuts": [0.1, 0.2, 0.3]}, "matching", "needs 4 cuts"),
        ({"weight": 0.2, "grade_cuts": [0.4, 0.3, 0.5, 0.6]}, "matching", "ascending"),
        ({"weight": 1.5, "grade_cuts": [0.1, 0.2, 0.3, 0.4]}, "matching", "weight"),
        ({"weight": 0.2, "grade_cuts": [0.1, 0.2, 0.3]}, "moderation", "only a matching task"),
    ],
)
def test_a_bad_fusion_is_refused_with_the_reason(
    default_bundle: Path, tmp_path: Path, lexical: dict, task: str, message: str
) -> None:
    bundle = _with_lexical(default_bundle, tmp_path / "b", lexical, task)
    with pytest.raises(BundleFormatError, match=message):
        Bundle.load(bundle)


@pytest.fixture(scope="module")
def model_only(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_lexical(default_bundle, tmp_path_factory.mktemp("lex") / "plain", None)


@pytest.fixture(scope="module")
def fused(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lexical = {"weight": 0.5, "grade_cuts": [0.2, 0.4, 0.6, 0.8], "fitted_on": "a test"}
    return _with_lexical(default_bundle, tmp_path_factory.mktemp("lex") / "fused", lexical)


PAIRS = [
    ("egg waffle recipe", {"note_id": "a", "title": "Egg waffles", "content": "Mix flour, eggs and milk."}),
    ("egg waffle recipe", {"note_id": "b", "content": "Car repair: change the oil every 5,000 km."}),
    ("小红书 穿搭", {"note_id": "c", "content": "今天的穿搭分享，小红书上很火"}),
]


def test_the_matcher_fuses_model_and_coverage_and_grades_by_the_cuts(model_only: Path, fused: Path) -> None:
    plain = NoteQueryMatcher.load(model_only).score_pairs(PAIRS)
    mixed = NoteQueryMatcher.load(fused).score_pairs(PAIRS)
    coverages = [1 / 3, 0.0, 1.0]  # egg of egg/waffle/recipe; none; 小红 红书 穿搭
    for p, m, (query, note), coverage in zip(plain, mixed, PAIRS, coverages, strict=True):
        assert p.lexical_coverage is None
        expected = sum(VALUES[g] * q for g, q in p.grade_probabilities.items())
        assert p.score == pytest.approx(expected, abs=1e-5)
        assert p.grade == int(max(p.grade_probabilities, key=p.grade_probabilities.get))
        assert m.grade_probabilities == pytest.approx(p.grade_probabilities)  # the model's own, unchanged
        assert m.lexical_coverage == pytest.approx(query_coverage(query, note.get("title", "") + " " + note["content"]))
        assert m.lexical_coverage == pytest.approx(coverage)
        assert m.score == pytest.approx(0.5 * expected + 0.5 * coverage, abs=1e-5)
        assert m.grade == int(np.searchsorted([0.2, 0.4, 0.6, 0.8], m.score, side="right")) - 1
