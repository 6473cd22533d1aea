"""The fixed sample of dev notes every speed measurement runs on: mixed sources, languages and lengths."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.training.datasets import harm_examples

__all__ = ["NoteSample", "speed_sample", "SOURCE_SHARES"]

# COLD (zh, short), SWSR (zh Weibo comments, the long ones), Davidson (en tweets).
SOURCE_SHARES = {"cold": 0.4, "swsr": 0.3, "davidson": 0.3}


@dataclass(frozen=True)
class NoteSample:
    texts: list[str]
    sources: list[str]
    seed: int

    def describe(self, token_counts: list[int] | None = None) -> dict[str, Any]:
        chars = np.array([len(t) for t in self.texts])
        out: dict[str, Any] = {
            "notes": len(self.texts),
            "seed": self.seed,
            "sources": {s: self.sources.count(s) for s in SOURCE_SHARES},
            "how": "seeded random draw from the dev parts (COLD 40 %, SWSR 30 %, Davidson 30 %), shuffled; "
            "the same notes in the same order for every system",
            "chars": _spread(chars),
        }
        if token_counts is not None:
            out["prompt_tokens"] = _spread(np.array(token_counts))
        return out


def _spread(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(values.mean()), 1),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p90": round(float(np.percentile(values, 90)), 1),
        "max": float(values.max()),
    }


def speed_sample(data_dir: Path, notes: int, seed: int = 2026) -> NoteSample:
    """`notes` dev texts drawn with a fixed seed; the order is the arrival order used by every backend."""
    rng = random.Random(seed)
    picked: list[tuple[str, str]] = []
    for source, share in SOURCE_SHARES.items():
        texts = sorted({e.record["text"] for e in harm_examples(data_dir, source, "dev")})
        count = round(notes * share) if source != "davidson" else notes - len(picked)
        picked += [(t, source) for t in rng.sample(texts, count)]
    rng.shuffle(picked)
    return NoteSample(texts=[t for t, _ in picked], sources=[s for _, s in picked], seed=seed)
