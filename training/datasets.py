"""The shared labeled data sets for training: the readers live in the core (`redone_sdk.labeled_data`), so the
replay's synthetic logs use the same rows and dev parts without torch; this module adds the tokenizer's corpus."""

from __future__ import annotations

import json
from pathlib import Path

from redone_sdk import labeled_data
from redone_sdk.labeled_data import *  # noqa: F403 (the readers, re-exported for the training code)
from redone_sdk.labeled_data import harm_examples, is_dev, querycorr_examples

__all__ = [*labeled_data.__all__, "platform_texts"]


def platform_texts(data_dir: Path) -> list[str]:
    """Training-side text of every set (no dev rows), for the tokenizer."""
    texts = [e.record["text"] for s in ("cold", "swsr", "davidson") for e in harm_examples(data_dir, s, "train")]
    texts += [e.record["query"] + "\n" + e.record["note"] for e in querycorr_examples(data_dir, "train")]
    for path in sorted((data_dir / "sns-bench").glob("Note-*.json")):
        if "QueryCorr" in path.name:
            continue
        for record in json.loads(path.read_text(encoding="utf-8")):
            text = record.get("content") or record.get("sentence1", "")
            if text and not is_dev(text):
                texts.append(text)
    trans = data_dir / "sns-transbench" / "RedTrans-Bench.json"
    if trans.is_file():
        for record in json.loads(trans.read_text(encoding="utf-8")):
            if not is_dev(record["zh"]):
                texts += [record["zh"], record["en"]]
    return texts
