"""Query-term coverage: the share of a search query's terms that occur in a note, over the whole note.

It is the lexical evidence a bundle's matching task may fuse with the model's grades (`LexicalFusion` in the
manifest): the model reads only a note's first tokens, the coverage reads all of it. Terms are lower-cased words
of letters and digits, and character bigrams of CJK runs (a one-character run is its own term), so a Chinese
query needs no word segmenter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from redone_sdk.bundle.manifest import LexicalFusion

__all__ = ["query_terms", "query_coverage", "fused_relevance"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")


def query_terms(text: str) -> frozenset[str]:
    """The distinct terms of `text`: words (letters and digits, lower-cased) and CJK character bigrams."""
    terms: set[str] = set()
    for run in _RUNS.findall(text.lower()):
        if _IS_CJK.match(run) and len(run) > 1:
            terms.update(run[i : i + 2] for i in range(len(run) - 1))
        else:
            terms.add(run)
    return frozenset(terms)


def query_coverage(query: str, text: str) -> float:
    """The share of the query's distinct terms found among the note's, in [0, 1]; 0 for a query without terms."""
    wanted = query_terms(query)
    if not wanted:
        return 0.0
    return len(wanted & query_terms(text)) / len(wanted)


def fused_relevance(
    expected: np.ndarray, queries: Sequence[str], texts: Sequence[str], fusion: LexicalFusion
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relevance, grade index, coverage) per pair: the model's expected grade value mixed with the query's
    coverage of the whole note by `fusion.weight`, graded by `fusion.grade_cuts`."""
    coverage = np.array([query_coverage(q, t) for q, t in zip(queries, texts, strict=True)], dtype=np.float64)
    relevance = (1.0 - fusion.weight) * np.asarray(expected, dtype=np.float64) + fusion.weight * coverage
    grades = np.searchsorted(np.asarray(fusion.grade_cuts, dtype=np.float64), relevance, side="right")
    return relevance, grades, coverage
