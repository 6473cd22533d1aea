"""Score generated answers the way SNS-Bench scores them (stdlib + numpy only; no embedding model needed).

Every task's figure follows the benchmark's evaluation code (HC-Guo/SNS-Bench `code/*.py`): a prediction is first
*parsed* into the task's answer format; the task metric is computed over the outputs that parse, and the reported
`score` is that metric times `parse_rate` (the share of outputs that parse; the benchmark's "success" figures). For
accuracy-type metrics this is exactly "unparseable outputs count as wrong". Gold answers are parsed from
`example.answer` with the same parser, so rows read back from JSONL (no `meta`) score the same as fresh examples.

| task | parses when | metric |
|---|---|---|
| moderation | `<label>` token or the bare label word first | macro-F1 over the labels seen in gold or prediction |
| querycorr (topic) | a grade `-1`…`3` occurs (first match, as upstream) | macro-F1 over the 5 grades |
| querycorr_explain, gender | starts with Yes / No | accuracy |
| taxonomy_single, hashtag_single | non-empty first line (cut at `.`/`,` unless it is a candidate) | accuracy |
| taxonomy_multiple | first line is `primary | secondary | tertiary` | exact match of all three levels |
| hashtag_multiple, ner | non-empty comma-separated first line | micro-F1 over items |
| chlw | a list of strings (`[]` counts as the one item "", as upstream) | micro-F1 over items |
| mrc_simple | a list of strings | mean of answer-existence F1, BLEU-4, ROUGE-1/2/L (last four: pairs both answer) |
| mrc_complex | `<Result>[{"Option": …}]</Result>` | mean of existence F1, option token-F1, option exact match |
| querygen | non-empty first line | mean of ANLS and char-n-gram cosine (stands in for the embedding similarity) |
| translation_* | non-empty output | chrF (char 6-grams, beta 2, corpus level); corpus BLEU-4 reported beside it |

Departures from the upstream code, on purpose: its MRC-complex token splitter keeps an English string whole (so its
"F1" there is an exact match) -- we use bag-of-token F1 over mixed segmentation (each CJK character a token, other
scripts split into words); it divides MRC-complex's success ratio by a hard-coded 1000 -- we use the real count;
BLEU/ROUGE use our tokenizer instead of jieba; embedding similarity (QueryGen) is replaced by char 2-3-gram cosine.

`average()` folds the variants of a family (taxonomy single/multiple, hashtag single/multiple, querycorr topic/explain,
mrc simple/complex) into their mean, then averages the 8 SNS-Bench families; moderation and translation stay out.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from redone_sdk.labeled_data import HARM_LABELS
from redone_sdk.labeled_data import QUERYCORR_GRADES as GRADES

__all__ = [
    "SNS_FAMILIES",
    "TRANSLATION_TASKS",
    "score_task",
    "average",
    "family_scores",
    "tokenize",
    "sentence_bleu",
    "corpus_bleu",
    "rouge_n",
    "rouge_l",
    "lcs_length",
    "token_f1",
    "levenshtein",
    "anls",
    "char_ngram_similarity",
    "chrf",
    "parse_list",
    "parse_result",
]

SNS_FAMILIES: dict[str, tuple[str, ...]] = {
    "taxonomy": ("taxonomy_single", "taxonomy_multiple"),
    "hashtag": ("hashtag_single", "hashtag_multiple"),
    "querycorr": ("querycorr", "querycorr_explain"),
    "mrc": ("mrc_simple", "mrc_complex"),
    "ner": ("ner",),
    "gender": ("gender",),
    "chlw": ("chlw",),
    "querygen": ("querygen",),
}
TRANSLATION_TASKS = ("translation_zh_en", "translation_en_zh")

# ---------------------------------------------------------------------------------------------------------------
# Text primitives
# ---------------------------------------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_STOP = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>")
_ANSWER_PREFIX = re.compile(r"^\s*(?:answer|答案)\s*[:：]\s*", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    """Mixed segmentation: lowercased; each CJK character is a token, other letters/digits form words; punctuation,
    emoji and whitespace are dropped. Char-level for Chinese, word-level for English."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[Any], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(hypothesis: Sequence[str], reference: Sequence[str], max_n: int = 4) -> float:
    """Sentence BLEU with Lin & Och (2004) add-one smoothing of the 2..N-gram precisions (unigrams unsmoothed).

    p_1 = m_1 / c_1;  p_n = (m_n + 1) / (c_n + 1) for n >= 2;  BLEU = BP * exp(mean log p_n),
    BP = exp(1 - r/c) when the hypothesis is shorter than the reference, else 1.
    """
    if not hypothesis or not reference:
        return float(not hypothesis and not reference)
    log_p = 0.0
    for n in range(1, max_n + 1):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
        total = max(len(hypothesis) - n + 1, 0)
        if n == 1:
            if matches == 0:
                return 0.0
            p = matches / total
        else:
            p = (matches + 1) / (total + 1)
        log_p += math.log(p) / max_n
    bp = 1.0 if len(hypothesis) >= len(reference) else math.exp(1 - len(reference) / len(hypothesis))
    return bp * math.exp(log_p)


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU-N (Papineni et al.): n-gram matches and counts summed over the corpus, no smoothing."""
    matches, totals = np.zeros(max_n), np.zeros(max_n)
    hyp_len = ref_len = 0
    for hyp_tokens, ref_tokens in zip(hypotheses, references, strict=True):
        hyp_len += len(hyp_tokens)
        ref_len += len(ref_tokens)
        for n in range(1, max_n + 1):
            hyp, ref = _ngrams(hyp_tokens, n), _ngrams(ref_tokens, n)
            matches[n - 1] += sum(min(count, ref[gram]) for gram, count in hyp.items())
            totals[n - 1] += max(len(hyp_tokens) - n + 1, 0)
    if hyp_len == 0 or np.any(matches == 0):
        return 0.0
    log_p = float(np.mean(np.log(matches / totals)))
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def _f1(overlap: float, n_pred: float, n_gold: float) -> float:
    if overlap <= 0 or n_pred <= 0 or n_gold <= 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_gold
    return 2 * precision * recall / (precision + recall)


def rouge_n(hypothesis: Sequence[str], reference: Sequence[str], n: int) -> float:
    """ROUGE-N F1: clipped n-gram overlap over the hypothesis' and the reference's n-gram counts. When neither side
    has an n-gram of that order (both shorter than n tokens) it is 1.0 for identical token lists, else 0."""
    hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
    if not hyp and not ref:
        return float(list(hypothesis) == list(reference))
    overlap = sum(min(count, ref[gram]) for gram, count in hyp.items())
    return _f1(overlap, sum(hyp.values()), sum(ref.values()))


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(a) * len(b) / wordsize)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[Any, int] = {}
    for i, item in enumerate(a):
        masks[item] = masks.get(item, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for item in b:
        u = v & masks.get(item, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 (beta = 1): LCS length over the hypothesis' and the reference's lengths (1.0 when both are empty)."""
    if not hypothesis and not reference:
        return 1.0
    return _f1(lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD-style bag-of-token F1 over `tokenize` (char-level for Chinese); 1.0 when both have no tokens."""
    pred, ref = tokenize(prediction), tokenize(gold)
    if not pred or not ref:
        return float(not pred and not ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    return _f1(overlap, len(pred), len(ref))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def anls(prediction: str, gold: str, threshold: float = 0.5) -> float:
    """ANLS of one pair: 1 - NL if NL < threshold else 0, NL = edit distance / longer length (lowercased,
    whitespace collapsed)."""
    pred, ref = _squash(prediction), _squash(gold)
    if not pred and not ref:
        return 1.0
    distance = levenshtein(pred, ref) / max(len(pred), len(ref))
    return 1.0 - distance if distance < threshold else 0.0


def char_ngram_similarity(a: str, b: str, orders: Iterable[int] = (2, 3)) -> float:
    """Cosine similarity of char n-gram count vectors (lowercased, whitespace collapsed; n-grams of all `orders`
    in one vector). Our offline stand-in for SNS-Bench's sentence-embedding similarity in QueryGen: bigrams and
    trigrams (no unigrams, which make any two English strings look alike) give about 0.1 for unrelated queries of
    the set and about 0.8 for a paraphrase such as "How to supplement yang qi" vs "Methods to Supplement Yang Qi"."""
    x, y = _squash(a), _squash(b)
    cx: Counter = Counter()
    cy: Counter = Counter()
    for n in orders:
        cx.update(_ngrams(x, n))
        cy.update(_ngrams(y, n))
    if not cx or not cy:
        return float(not cx and not cy)
    keys = sorted(set(cx) | set(cy))
    vx = np.array([cx[k] for k in keys], dtype=float)
    vy = np.array([cy[k] for k in keys], dtype=float)
    return float(vx @ vy / (np.linalg.norm(vx) * np.linalg.norm(vy)))


def chrf(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF (Popović 2015, as sacreBLEU computes it): char n-grams n = 1..6 with whitespace removed,
    statistics summed over the corpus, precision and recall averaged over the n-gram orders that occur, then
    F-beta with beta = 2."""
    stats = np.zeros((max_n, 3))  # matches, hypothesis n-grams, reference n-grams
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp_chars, ref_chars = "".join(hypothesis.split()), "".join(reference.split())
        for n in range(1, max_n + 1):
            hyp, ref = _ngrams(hyp_chars, n), _ngrams(ref_chars, n)
            stats[n - 1] += (sum((hyp & ref).values()), sum(hyp.values()), sum(ref.values()))
    used = (stats[:, 1] > 0) & (stats[:, 2] > 0)
    if not used.any():
        return 0.0
    precision = float(np.mean(stats[used, 0] / stats[used, 1]))
    recall = float(np.mean(stats[used, 0] / stats[used, 2]))
    if precision + recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


# ---------------------------------------------------------------------------------------------------------------
# Parsers (also used on gold answers)
# ---------------------------------------------------------------------------------------------------------------


def _clean_output(text: str) -> str:
    """Cut a generation at the first chat control token and strip it."""
    return _STOP.split(text, maxsplit=1)[0].strip()


def _first_line(text: str) -> str:
    for line in _clean_output(text).splitlines():
        line = _ANSWER_PREFIX.sub("", line).strip()
        if line:
            return line
    return ""


def _literal_list(text: str) -> list[Any] | None:
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)):
            return list(value)
    return None


_QUOTED_SPLIT = re.compile(r"""['"]\s*,\s*['"]""")


def parse_list(text: str) -> list[str] | None:
    """A list of strings written as a JSON or Python list (`["a", "b"]`, `['a']`, `[]`), leniently: the whole text,
    else the outermost `[...]`, else the first bracket pair without nested brackets (SNS-Bench's regex), else a
    quote-delimited split (which accepts `['Driver's license']`). None when no list of strings can be read."""
    text = _ANSWER_PREFIX.sub("", _clean_output(text)).strip()
    text = re.sub(r"^```(?:json|python)?\s*|\s*```$", "", text)
    candidates = [text]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    inner = re.search(r"\[[^\[\]]*\]", text, re.DOTALL)
    if inner:
        candidates.append(inner.group(0))
    for candidate in candidates:
        value = _literal_list(candidate)
        if value is not None:
            return [str(v) for v in value] if all(isinstance(v, (str, int, float)) for v in value) else None
    if 0 <= start < end:
        body = text[start + 1 : end].strip()
        if not body:
            return []
        if body[0] in "'\"" and body[-1] in "'\"":
            return [item.strip() for item in _QUOTED_SPLIT.split(body[1:-1])]
    return None


_RESULT = re.compile(r"<Result>(.*?)(?:</Result>|$)", re.DOTALL)


def parse_result(text: str) -> list[tuple[str, str]] | None:
    """MRC-complex answer: the last `<Result>[{"Option": ..., "Reason": ...}, ...]</Result>` block as
    (option, reason) pairs, duplicates of an option collapsed (as upstream). `Reason` may be missing (read as "");
    an unclosed final block (generation cut short) is still read if its JSON is whole."""
    matches = _RESULT.findall(_clean_output(text))
    if not matches:
        return None
    body = re.sub(r"^\s*```(?:json)?|```\s*$", "", matches[-1].strip()).strip()
    value = _literal_list(body)
    if value is None:
        return None
    options: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("Option"), str):
            return None
        reason = item.get("Reason", "")
        options[item["Option"]] = reason if isinstance(reason, str) else str(reason)
    return list(options.items())


def _norm(text: str) -> str:
    return " ".join(text.casefold().strip().strip("'\"“”‘’`").rstrip(".。!！").split())


def _parse_label(text: str) -> str | None:
    clean = _clean_output(text)
    token = re.search(r"<(safe|offensive|hate|sexism)>", clean)
    if token:
        return token.group(1)
    word = re.match(r"^\W*(safe|offensive|hate|sexism)\b", _ANSWER_PREFIX.sub("", clean), re.IGNORECASE)
    return word.group(1).lower() if word else None


def _parse_grade(text: str) -> str | None:
    match = re.search(r"-1|0|1|2|3", _clean_output(text))
    return match.group(0) if match else None


def _parse_yes_no(text: str) -> str | None:
    match = re.match(r"^\W*(yes|no)\b", _ANSWER_PREFIX.sub("", _clean_output(text)), re.IGNORECASE)
    return match.group(1).capitalize() if match else None


def _parse_choice(text: str, known: Iterable[str] = ()) -> str | None:
    line = _first_line(text)
    if line and _norm(line) not in {_norm(k) for k in known}:
        line = re.split(r"[.,，。]", line, maxsplit=1)[0].strip()  # SNS-Bench cuts at the first . or ,
    return line or None


def _parse_levels(text: str) -> tuple[str, str, str] | None:
    parts = [p.strip() for p in _first_line(text).split("|")]
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _parse_items(text: str) -> list[str] | None:
    items = [item.strip() for item in _first_line(text).split(",")]
    items = [item for item in items if item]
    return items or None


def _parse_spans(text: str) -> str | None:
    spans = parse_list(text)
    return None if spans is None else "\n".join(spans).strip()


def _parse_text(text: str) -> str | None:
    return _clean_output(text) or None


def _parse_query(text: str) -> str | None:
    return _first_line(text) or None


# ---------------------------------------------------------------------------------------------------------------
# Task metrics: each gets (parsed predictions, parsed golds, examples) for the examples whose prediction parsed
# ---------------------------------------------------------------------------------------------------------------


def _answer(example: Any) -> str:
    return example["answer"] if isinstance(example, Mapping) else example.answer


def _meta(example: Any) -> dict[str, Any]:
    meta = example.get("meta", ()) if isinstance(example, Mapping) else getattr(example, "meta", ())
    return dict(meta) if meta else {}


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return precision, recall, _f1(tp, n_pred, n_gold)


def _per_label_f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label in labels:
        tp = sum(p == g == label for p, g in zip(preds, golds, strict=True))
        p, r, f = _prf(tp, sum(p == label for p in preds), sum(g == label for g in golds))
        out[f"precision/{label}"], out[f"recall/{label}"], out[f"f1/{label}"] = p, r, f
    return out


def _moderation(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    labels = [label for label in HARM_LABELS if label in set(preds) | set(golds)]
    out = _per_label_f1(preds, golds, labels)
    out["accuracy"] = _accuracy(preds, golds)
    out["macro_f1"] = float(np.mean([out[f"f1/{label}"] for label in labels])) if labels else 0.0
    out["metric"] = out["macro_f1"]
    return out


def _querycorr(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    out = _per_label_f1(preds, golds, GRADES)  # all five grades, as upstream, whether present or not
    out["accuracy"] = _accuracy(preds, golds)
    out["macro_f1"] = float(np.mean([out[f"f1/{g}"] for g in GRADES]))
    out["metric"] = out["macro_f1"]
    return out


def _accuracy(preds: Sequence[Any], golds: Sequence[Any]) -> float:
    return float(np.mean([p == g for p, g in zip(preds, golds, strict=True)])) if preds else 0.0


def _exact(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    accuracy = _accuracy([_norm(p) for p in preds], [_norm(g) for g in golds])
    return {"accuracy": accuracy, "metric": accuracy}


def _taxonomy_multiple(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, level in enumerate(("primary", "secondary", "tertiary")):
        out[f"accuracy/{level}"] = _accuracy([_norm(p[i]) for p in preds], [_norm(g[i]) for g in golds])
    out["exact_match"] = _accuracy([tuple(map(_norm, p)) for p in preds], [tuple(map(_norm, g)) for g in golds])
    out["metric"] = out["exact_match"]
    return out


def _set_f1(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    """Micro P/R/F1 over items (counts summed over examples), as upstream's CHLW evaluator."""
    tp = n_pred = n_gold = 0
    for pred, gold in zip(preds, golds, strict=True):
        p, g = {_norm(x) for x in pred} or {""}, {_norm(x) for x in gold} or {""}
        tp, n_pred, n_gold = tp + len(p & g), n_pred + len(p), n_gold + len(g)
    precision, recall, f1 = _prf(tp, n_pred, n_gold)
    return {"precision": precision, "recall": recall, "f1": f1, "metric": f1}


def _existence(preds: Sequence[bool], golds: Sequence[bool]) -> tuple[int, int, int, float]:
    """(tp, fp, fn, F1) of 'there is an answer'; F1 is 1.0 when neither side ever answers (all true negatives)."""
    tp = sum(p and g for p, g in zip(preds, golds, strict=True))
    fp = sum(p and not g for p, g in zip(preds, golds, strict=True))
    fn = sum(g and not p for p, g in zip(preds, golds, strict=True))
    if tp + fp + fn == 0:
        return tp, fp, fn, 1.0
    return tp, fp, fn, _f1(tp, tp + fp, tp + fn)


def _mrc_simple(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    tp, fp, fn, existence_f1 = _existence([bool(p) for p in preds], [bool(g) for g in golds])
    both = [(tokenize(p), tokenize(g)) for p, g in zip(preds, golds, strict=True) if p and g]
    out = {"existence_f1": existence_f1, "tp": float(tp), "fp": float(fp), "fn": float(fn)}
    if both:
        out["bleu"] = float(np.mean([sentence_bleu(h, r) for h, r in both]))
        out["rouge_1"] = float(np.mean([rouge_n(h, r, 1) for h, r in both]))
        out["rouge_2"] = float(np.mean([rouge_n(h, r, 2) for h, r in both]))
        out["rouge_l"] = float(np.mean([rouge_l(h, r) for h, r in both]))
    else:  # nothing to compare: perfect only when no side ever answered
        fill = float(tp + fp + fn == 0)
        out.update(bleu=fill, rouge_1=fill, rouge_2=fill, rouge_l=fill)
    out["metric"] = float(np.mean([out[k] for k in ("existence_f1", "bleu", "rouge_1", "rouge_2", "rouge_l")]))
    return out


def _mrc_complex(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    tp, fp, fn, existence_f1 = _existence([bool(p) for p in preds], [bool(g) for g in golds])
    option_f1, option_em = [], []
    for pred, gold in zip(preds, golds, strict=True):
        if not pred or not gold:
            same = float(not pred and not gold)
            option_f1.append(same)
            option_em.append(same)
            continue
        gold_options = [option for option, _ in gold]
        # upstream: each predicted option against its best gold option, averaged over the predicted options
        option_f1.append(float(np.mean([max(token_f1(o, g) for g in gold_options) for o, _ in pred])))
        option_em.append(float(np.mean([any(_norm(o) == _norm(g) for g in gold_options) for o, _ in pred])))
    out = {
        "existence_f1": existence_f1,
        "option_f1": float(np.mean(option_f1)) if option_f1 else 0.0,
        "option_em": float(np.mean(option_em)) if option_em else 0.0,
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
    }
    out["metric"] = (out["existence_f1"] + out["option_f1"] + out["option_em"]) / 3
    return out


def _querygen(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
    anls_scores = [anls(p, g) for p, g in zip(preds, golds, strict=True)]
    similarity = [char_ngram_similarity(p, g) for p, g in zip(preds, golds, strict=True)]
    out = {
        "anls": float(np.mean(anls_scores)) if preds else 0.0,
        "char_ngram_similarity": float(np.mean(similarity)) if preds else 0.0,
    }
    out["metric"] = (out["anls"] + out["char_ngram_similarity"]) / 2
    return out


def _translation_tokens(text: str, target: str) -> list[str]:
    if target == "zh":  # char-level for Chinese, as sacreBLEU's `zh` tokenizer (CJK characters split apart)
        return re.findall(rf"[{_CJK}]|[^\s{_CJK}]+", text)
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _translation(target: str) -> Callable[[list[Any], list[Any], list[Any]], dict[str, float]]:
    def metric(preds: list[Any], golds: list[Any], _ex: list[Any]) -> dict[str, float]:
        out = {
            "chrf": chrf(preds, golds) if preds else 0.0,
            "bleu": corpus_bleu(
                [_translation_tokens(p, target) for p in preds], [_translation_tokens(g, target) for g in golds]
            )
            if preds
            else 0.0,
        }
        out["metric"] = out["chrf"]
        return out

    return metric


_Parser = Callable[[str], Any]
_Metric = Callable[[list[Any], list[Any], list[Any]], dict[str, float]]
_TASKS: dict[str, tuple[_Parser, _Metric]] = {
    "moderation": (_parse_label, _moderation),
    "querycorr": (_parse_grade, _querycorr),
    "querycorr_explain": (_parse_yes_no, _exact),
    "gender": (_parse_yes_no, _exact),
    "taxonomy_single": (_parse_choice, _exact),
    "hashtag_single": (_parse_choice, _exact),
    "taxonomy_multiple": (_parse_levels, _taxonomy_multiple),
    "hashtag_multiple": (_parse_items, _set_f1),
    "ner": (_parse_items, _set_f1),
    "chlw": (parse_list, _set_f1),
    "mrc_simple": (_parse_spans, _mrc_simple),
    "mrc_complex": (parse_result, _mrc_complex),
    "querygen": (_parse_query, _querygen),
    "translation_zh_en": (_parse_text, _translation("en")),
    "translation_en_zh": (_parse_text, _translation("zh")),
}


def score_task(task: str, predictions: Sequence[str], examples: Sequence[Any]) -> dict[str, float]:
    """SNS-Bench-style figures of one task: `n`, `parse_rate`, the task's metrics over the outputs that parse,
    `metric` (the headline one) and `score` = metric * parse_rate. All in [0, 1] (SNS-Bench prints x100).

    `examples` are `ChatExample`s (or mappings with an "answer" key, e.g. rows read back from JSONL); the gold
    answer is parsed from `answer` with the task's own parser. Single-choice tasks also accept a prediction that is
    exactly one of the example's candidates (`meta["candidates"]`) even when it contains a `.` or `,`.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_TASKS)}")
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError(f"no examples to score for {task}")
    parse, metric = _TASKS[task]
    preds, golds, kept = [], [], []
    for prediction, example in zip(predictions, examples, strict=True):
        gold_text = _answer(example)
        if parse is _parse_choice:
            known = [gold_text, *_meta(example).get("candidates", ())]
            gold, pred = _parse_choice(gold_text, known), _parse_choice(prediction, known)
        else:
            gold, pred = parse(gold_text), parse(prediction)
        if gold is None:
            raise ValueError(f"{task}: gold answer does not parse: {gold_text[:80]!r}")
        if pred is not None:
            preds.append(pred)
            golds.append(gold)
            kept.append(example)
    parse_rate = len(preds) / len(examples)
    figures = metric(preds, golds, kept) if preds else {"metric": 0.0}
    return {"n": float(len(examples)), "parse_rate": parse_rate, **figures, "score": figures["metric"] * parse_rate}


def _score_of(value: float | Mapping[str, float]) -> float:
    return float(value["score"] if isinstance(value, Mapping) else value)


def family_scores(scores_by_task: Mapping[str, float | Mapping[str, float]]) -> dict[str, float]:
    """One figure per SNS-Bench family present: the mean `score` of its variants that were scored (e.g. taxonomy =
    mean of taxonomy_single and taxonomy_multiple). Accepts floats or `score_task` dicts."""
    out = {}
    for family, variants in SNS_FAMILIES.items():
        present = [_score_of(scores_by_task[v]) for v in variants if v in scores_by_task]
        if present:
            out[family] = float(np.mean(present))
    return out


def average(scores_by_task: Mapping[str, float | Mapping[str, float]]) -> float:
    """The SNS-Bench average: the mean over the 8 families (taxonomy, hashtag, querycorr, mrc, ner, gender, chlw,
    querygen) of each family's mean variant score. Families with no scored variant are left out of the mean, so
    compare averages only over the same task set; moderation and translation never enter it."""
    families = family_scores(scores_by_task)
    if not families:
        raise ValueError("no SNS-Bench task among the scores")
    return float(np.mean(list(families.values())))
