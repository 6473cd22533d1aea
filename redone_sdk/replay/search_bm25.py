"""A BM25 rerank, the baseline a search team tries first, for the search replay to compare the matcher with.

Okapi BM25 (k1 = 1.5, b = 0.75) of the note's text (title and content) for the query; document frequencies and the
mean length come from the distinct notes of the pairs scored (the notes the log showed). Words are
lower-cased `\\w+` runs; a run in CJK script is split into its characters and character bigrams (no
segmenter needed). The replay's SDK side has no training dependency, so this is its own small copy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from redone_sdk.schemas import Note

__all__ = ["tokens", "bm25_scorer"]

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            out.extend(word)
            out.extend(word[i : i + 2] for i in range(len(word) - 1))
        else:
            out.append(word)
    return out


def bm25_scorer(k1: float = 1.5, b: float = 0.75):
    """A pair scorer for `replay_search`: [(query, Note)] -> BM25 scores."""

    def bm25(pairs: Sequence[tuple[str, Note]]) -> list[float]:
        docs: dict[str, list[str]] = {}
        for _, note in pairs:
            if note.note_id not in docs:
                docs[note.note_id] = tokens(note.text)
        frequency: Counter[str] = Counter()
        for words in docs.values():
            frequency.update(set(words))
        total = len(docs)
        mean_length = sum(len(w) for w in docs.values()) / max(total, 1) or 1.0
        idf = {w: math.log(1 + (total - df + 0.5) / (df + 0.5)) for w, df in frequency.items()}
        counts = {n: Counter(words) for n, words in docs.items()}
        scores = []
        for query, note in pairs:
            tf, length = counts[note.note_id], len(docs[note.note_id])
            norm = k1 * (1 - b + b * length / mean_length)
            scores.append(sum(idf[w] * tf[w] * (k1 + 1) / (tf[w] + norm) for w in set(tokens(query)) if w in tf))
        return scores

    bm25.__name__ = "bm25"
    return bm25
