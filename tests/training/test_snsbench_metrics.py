"""SNS-Bench-style scoring: metric primitives on hand-computed cases, and each task's parse/score rules."""

import math
import random

import pytest

from redone_sdk.training.instructions import ChatExample
from redone_sdk.training.snsbench_metrics import (
    SNS_FAMILIES,
    anls,
    average,
    char_ngram_similarity,
    chrf,
    corpus_bleu,
    family_scores,
    lcs_length,
    levenshtein,
    parse_list,
    parse_result,
    rouge_l,
    rouge_n,
    score_task,
    sentence_bleu,
    token_f1,
    tokenize,
)

ALL_TASKS = (
    "moderation",
    "querycorr",
    "querycorr_explain",
    "taxonomy_single",
    "taxonomy_multiple",
    "hashtag_single",
    "hashtag_multiple",
    "mrc_simple",
    "mrc_complex",
    "ner",
    "gender",
    "chlw",
    "querygen",
    "translation_zh_en",
    "translation_en_zh",
)


def ex(task: str, answer: str, **meta: object) -> ChatExample:
    return ChatExample(task=task, prompt="p", answer=answer, source="test", meta=tuple(meta.items()))


# --- primitives ------------------------------------------------------------------------------------------------


def test_tokenize_is_char_level_for_chinese_and_word_level_otherwise() -> None:
    assert tokenize("Hello, 世界 42!🥹") == ["hello", "世", "界", "42"]


def test_sentence_bleu_hand_cases() -> None:
    # p1 = 2/3; p2 = (1+1)/(2+1); p3 = (0+1)/(1+1); p4 = (0+1)/(0+1); BP = 1
    assert sentence_bleu(["a", "b", "c"], ["a", "b", "d"]) == pytest.approx((2 / 3 * 2 / 3 * 1 / 2 * 1) ** 0.25)
    # all precisions 1, hypothesis half the reference: BP = exp(1 - 4/2)
    assert sentence_bleu(["a", "b"], ["a", "b", "c", "d"]) == pytest.approx(math.exp(-1))
    assert sentence_bleu(list("abcde"), list("abcde")) == pytest.approx(1.0)
    assert sentence_bleu(["x"], ["y"]) == 0.0


def test_corpus_bleu() -> None:
    assert corpus_bleu([list("abcdef")], [list("abcdef")]) == pytest.approx(1.0)
    assert corpus_bleu([["a", "b"]], [["c", "d"]]) == 0.0


def test_rouge_hand_cases() -> None:
    assert rouge_n(["a", "b", "c"], ["a", "b", "d"], 1) == pytest.approx(2 / 3)
    assert rouge_n(["a", "b", "c"], ["a", "b", "d"], 2) == pytest.approx(0.5)  # {ab, bc} vs {ab, bd}
    assert rouge_n(["a"], ["a"], 2) == 1.0  # no bigram on either side, same tokens
    assert rouge_l(["a", "b", "c", "d"], ["a", "c", "b", "d"]) == pytest.approx(0.75)  # LCS 3 of 4 and 4


def test_lcs_length_matches_dynamic_programming() -> None:
    def slow(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    rng = random.Random(0)
    for _ in range(200):
        a = rng.choices("abcd", k=rng.randint(0, 12))
        b = rng.choices("abcd", k=rng.randint(0, 12))
        assert lcs_length(a, b) == slow(a, b)


def test_token_f1_levenshtein_anls() -> None:
    assert token_f1("北京", "北京大学") == pytest.approx(2 / 3)  # P = 1, R = 2/4
    assert token_f1("Apple 13", "apple 13!") == 1.0
    assert levenshtein("kitten", "sitting") == 3
    assert anls("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert anls("abc", "xyz") == 0.0  # NL = 1 >= 0.5
    assert anls(" Same  Text", "same text") == 1.0


def test_chrf_and_char_ngram_similarity() -> None:
    # n=1: P 2/2, R 2/3; n=2: P 1/1, R 1/2; n>=3: no hypothesis n-grams, left out.
    # P = 1, R = 7/12, F2 = 5PR / (4P + R) = 7/11
    assert chrf(["ab"], ["abc"]) == pytest.approx(7 / 11)
    assert chrf(["同一句话"], ["同一句话"]) == pytest.approx(1.0)
    assert char_ngram_similarity("How to cook rice", "how  to cook rice") == pytest.approx(1.0)
    assert char_ngram_similarity("abc", "xyz") == 0.0


def test_parse_list_is_lenient_but_not_blind() -> None:
    assert parse_list('["a", "b"]') == ["a", "b"]
    assert parse_list("Answer: ['CC mode']") == ["CC mode"]
    assert parse_list("[]<|im_end|>junk") == []
    assert parse_list("['Driver's license', 'eye']") == ["Driver's license", "eye"]
    assert parse_list('["has [ShyR] inside"]') == ["has [ShyR] inside"]
    assert parse_list("none of them") is None
    assert parse_list("[1, [2]]") is None


def test_parse_result() -> None:
    text = '<rewrite_query>q</rewrite_query><Result>[{"Option": "A", "Reason": "r"}, {"Option": "A", "Reason": "s"}]'
    assert parse_result(text + "</Result>") == [("A", "s")]  # duplicates collapse, the last reason wins
    assert parse_result(text) == [("A", "s")]  # unclosed block at the end still read
    assert parse_result("<Result>[]</Result>") == []
    assert parse_result("A and B") is None
    assert parse_result('<Result>[{"Reason": "r"}]</Result>') is None


# --- score_task ------------------------------------------------------------------------------------------------

PERFECT = {
    "moderation": [ex("moderation", "<safe>"), ex("moderation", "<offensive>")],
    "querycorr": [ex("querycorr", f"<grade:{g}>") for g in ("-1", "0", "1", "2", "3")],
    "querycorr_explain": [ex("querycorr_explain", "Yes"), ex("querycorr_explain", "No")],
    "taxonomy_single": [ex("taxonomy_single", "Food", candidates=("Food", "Travel"))],
    "taxonomy_multiple": [ex("taxonomy_multiple", "Food | Food Display | General Food Display")],
    "hashtag_single": [ex("hashtag_single", "Mr. Zhang's Old Amber", candidates=("Mr. Zhang's Old Amber", "X"))],
    "hashtag_multiple": [ex("hashtag_multiple", "Caramel, Food Play")],
    "mrc_simple": [ex("mrc_simple", '["Meeting Room 80 sqm can accommodate 50 people"]'), ex("mrc_simple", "[]")],
    "mrc_complex": [ex("mrc_complex", '<Result>[{"Option": "Apple 13", "Reason": "r"}]</Result>')],
    "ner": [ex("ner", "Summer, Spring")],
    "gender": [ex("gender", "No")],
    "chlw": [ex("chlw", '["Nicholas Tse"]'), ex("chlw", "[]")],
    "querygen": [ex("querygen", "How many minutes to air fry a raw durian")],
    "translation_zh_en": [ex("translation_zh_en", "It's Xia Anan")],
    "translation_en_zh": [ex("translation_en_zh", "是夏安安")],
}


@pytest.mark.parametrize("task", ALL_TASKS)
def test_perfect_predictions_score_one(task: str) -> None:
    examples = PERFECT[task]
    scores = score_task(task, [e.answer for e in examples], examples)
    assert scores["parse_rate"] == 1.0 and scores["score"] == pytest.approx(1.0), scores


@pytest.mark.parametrize("task", ALL_TASKS)
def test_unparseable_predictions_score_zero(task: str) -> None:
    examples = PERFECT[task]
    scores = score_task(task, [""] * len(examples), examples)
    assert scores["parse_rate"] == 0.0 and scores["score"] == 0.0


def test_every_task_has_a_perfect_case() -> None:
    assert set(PERFECT) == set(ALL_TASKS)
    assert {t for variants in SNS_FAMILIES.values() for t in variants} == set(ALL_TASKS) - {
        "moderation",
        "translation_zh_en",
        "translation_en_zh",
    }


def test_accuracy_counts_unparseable_as_wrong() -> None:
    examples = [ex("taxonomy_single", "Food", candidates=("Food", "Travel"))] * 4
    scores = score_task("taxonomy_single", ["Food", "Travel", "", "Answer: Food."], examples)
    assert scores["parse_rate"] == 0.75 and scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["score"] == pytest.approx(0.5)  # 2 right of 4


def test_querycorr_macro_f1_by_hand() -> None:
    golds = ["3", "3", "2", "-1", "0", "1"]
    examples = [ex("querycorr", f"<grade:{g}>") for g in golds]
    # grade 3: P 1, R 1/2; grade 2: P 1/2, R 1 -> F1 2/3 each; other grades 1 -> macro (3 + 4/3) / 5
    preds = ["<grade:3>", "<grade:2>", "2", "The grade is -1", "<grade:0>", "<grade:1>"]
    scores = score_task("querycorr", preds, examples)
    assert scores["macro_f1"] == pytest.approx(13 / 15) and scores["score"] == pytest.approx(13 / 15)
    scores = score_task("querycorr", [*preds[:5], "irrelevant"], examples)
    assert scores["parse_rate"] == pytest.approx(5 / 6)


def test_moderation_reads_tokens_and_bare_labels() -> None:
    examples = [ex("moderation", "<offensive>"), ex("moderation", "<safe>"), ex("moderation", "<safe>")]
    scores = score_task("moderation", ["<offensive>", "safe", "<offensive><|im_end|>"], examples)
    # offensive: P 1/2, R 1 -> 2/3; safe: P 1, R 1/2 -> 2/3
    assert scores["macro_f1"] == pytest.approx(2 / 3) and scores["accuracy"] == pytest.approx(2 / 3)


def test_multi_label_tasks_micro_f1() -> None:
    examples = [ex("hashtag_multiple", "a, b"), ex("hashtag_multiple", "d")]
    scores = score_task("hashtag_multiple", ["a, c", "D\nmore text"], examples)
    assert scores["f1"] == pytest.approx(2 / 3)  # tp 2, 3 predicted, 3 gold
    levels = [ex("taxonomy_multiple", "Food | Food Display | Other")] * 3
    scores = score_task("taxonomy_multiple", ["food | food display | other", "Food | Drinks | Other", "Food"], levels)
    assert scores["exact_match"] == 0.5 and scores["parse_rate"] == pytest.approx(2 / 3)
    assert scores["accuracy/primary"] == 1.0 and scores["accuracy/secondary"] == 0.5


def test_chlw_counts_empty_list_as_one_item() -> None:
    examples = [ex("chlw", "[]"), ex("chlw", '["x"]')]
    scores = score_task("chlw", ["[]", "[]"], examples)  # {""} vs {""}: hit; {""} vs {"x"}: miss
    assert scores["f1"] == pytest.approx(0.5) and scores["parse_rate"] == 1.0


def test_mrc_simple_by_hand() -> None:
    examples = [
        ex("mrc_simple", '["a b c"]'),
        ex("mrc_simple", "[]"),
        ex("mrc_simple", '["y"]'),
        ex("mrc_simple", "[]"),
    ]
    scores = score_task("mrc_simple", ['["a b d"]', '["x"]', "[]", "[]"], examples)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 1)
    bleu = (2 / 3 * 2 / 3 * 1 / 2) ** 0.25
    assert scores["existence_f1"] == pytest.approx(0.5) and scores["bleu"] == pytest.approx(bleu)
    expected = (0.5 + bleu + 2 / 3 + 0.5 + 2 / 3) / 5
    assert scores["metric"] == pytest.approx(expected) and scores["score"] == pytest.approx(expected)


def test_mrc_complex_by_hand() -> None:
    examples = [
        ex("mrc_complex", '<Result>[{"Option": "Apple 13", "Reason": "r"}]</Result>'),
        ex("mrc_complex", "<Result>[]</Result>"),
        ex("mrc_complex", "<Result>[]</Result>"),
    ]
    pred = '<Result>[{"Option": "apple 13", "Reason": "x"}, {"Option": "Banana", "Reason": "y"}]</Result>'
    scores = score_task("mrc_complex", [pred, "<Result>[]</Result>", "no idea"], examples)
    # parsed: one true positive with option F1 = EM = (1 + 0) / 2, one true negative (1, 1); existence F1 = 1
    assert scores["option_f1"] == pytest.approx(0.75) and scores["option_em"] == pytest.approx(0.75)
    assert scores["metric"] == pytest.approx(2.5 / 3) and scores["score"] == pytest.approx(2.5 / 3 * 2 / 3)


def test_querygen_and_translation() -> None:
    examples = [ex("querygen", "kitten"), ex("querygen", "abc")]
    scores = score_task("querygen", ["sitting\nsecond line", "abc"], examples)
    assert scores["anls"] == pytest.approx((4 / 7 + 1) / 2)
    examples = [ex("translation_en_zh", "是夏安安"), ex("translation_en_zh", "好")]
    scores = score_task("translation_en_zh", ["是夏安安", "  "], examples)
    assert scores["parse_rate"] == 0.5 and scores["chrf"] == pytest.approx(1.0) and scores["score"] == 0.5


def test_rows_without_meta_score_like_examples() -> None:
    rows = [{"task": "ner", "prompt": "p", "answer": "Summer, Spring", "source": "x"}]
    assert score_task("ner", ["spring, summer"], rows)["score"] == 1.0


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        score_task("nope", ["a"], [ex("ner", "a")])
    with pytest.raises(ValueError, match="predictions for"):
        score_task("ner", ["a", "b"], [ex("ner", "a")])
    with pytest.raises(ValueError, match="does not parse"):
        score_task("querycorr", ["<grade:1>"], [ex("querycorr", "relevant")])


def test_average_folds_variants_per_family() -> None:
    scores = {
        "taxonomy_single": 1.0,
        "taxonomy_multiple": {"score": 0.0},
        "ner": 0.5,
        "moderation": 0.9,
        "translation_zh_en": 0.3,
    }
    assert family_scores(scores) == {"taxonomy": 0.5, "ner": 0.5}
    assert average(scores) == pytest.approx(0.5)
    every = {t: 1.0 for variants in SNS_FAMILIES.values() for t in variants} | {"querygen": 0.2}
    assert average(every) == pytest.approx((7 + 0.2) / 8)
    with pytest.raises(ValueError):
        average({"moderation": 1.0})
