"""Read the shared labeled data sets and map them onto the SDK's tasks with deterministic dev splits.

Pure standard library, so both training (`redone_sdk.training.datasets`) and the replay's synthetic logs
(`redone replay synth`) read the same rows and the same dev parts without the training extra.

Harm taxonomy (one label per text):
- `safe`      — COLD label 0, SWSR label 0, Davidson class 2 (neither)
- `offensive` — COLD label 1 (offensive speech about race, region or gender), Davidson class 1
- `hate`      — Davidson class 0 (hate speech)
- `sexism`    — SWSR label 1 (any of its sexism categories)

With `cold_topics=True` (the pretrained recipe's `data.cold_topic_labels`), COLD's offensive comments take the
category their topic names: `race` → `hate` (attacks on a group by race or ethnicity, Davidson's sense of hate
speech), `gender` → `sexism`; `region` stays `offensive`. COLD has no finer label in its train split, so this is
a mapping by topic, not an annotation: a rude comment on a race topic that attacks one person becomes `hate`.

Dev parts: COLD ships `dev.csv` (used whole; texts also in train are dropped from train). SWSR, Davidson and
SNS-Bench have no split: a row is dev when the SHA-256 of its text falls in the lowest 20 % (stable across
runs, machines and row order).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "HARM_LABELS",
    "QUERYCORR_GRADES",
    "Split",
    "Example",
    "default_data_dir",
    "harm_examples",
    "querycorr_examples",
    "is_dev",
    "COLD_TOPIC_LABELS",
    "DATA_SOURCES",
]

HARM_LABELS = ("safe", "offensive", "hate", "sexism")
QUERYCORR_GRADES = ("-1", "0", "1", "2", "3")
Split = Literal["train", "dev"]
COLD_TOPIC_LABELS = {"race": "hate", "gender": "sexism", "region": "offensive"}

DATA_SOURCES = {
    "cold": ("COLD (thu-coai/COLDataset)", "Apache-2.0"),
    "swsr": ("SWSR (aggiejiang/SWSR)", "MIT"),
    "davidson": ("Davidson hate/offensive (t-davidson)", "MIT; tweet text is platform content"),
    "sns-bench": ("SNS-Bench QueryCorr (HC-Guo/SNS-Bench)", "CC BY-NC-SA 4.0"),
    "sns-transbench": ("SNS-TransBench (HC-Guo/RedTrans)", "CC BY-NC-SA 4.0"),
}


@dataclass(frozen=True)
class Example:
    """One labeled record: the task's fields, the gold label, and where it came from."""

    task: Literal["moderation", "matching"]
    fields: tuple[tuple[str, str], ...]
    label: str
    source: str

    @property
    def record(self) -> dict[str, str]:
        return dict(self.fields)


def default_data_dir() -> Path:
    """`$REDONE_DATA_DIR`, else `../shared/data` beside the repository (the tests set it to tests/fixtures/data)."""
    env = os.environ.get("REDONE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def is_dev(text: str, share: float = 0.2) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; set REDONE_DATA_DIR to the shared data folder")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _harm(text: str, label: str, source: str) -> Example:
    return Example(task="moderation", fields=(("text", text),), label=label, source=source)


def harm_examples(data_dir: Path, source: str, split: Split, *, cold_topics: bool = False) -> list[Example]:
    """Harm-taxonomy examples of one source (`cold`, `swsr`, `davidson`) and split; `cold_topics` labels COLD's
    offensive comments by topic (`COLD_TOPIC_LABELS`) instead of `offensive`."""
    if source == "cold":
        dev_rows = _csv_rows(data_dir / "cold" / "dev.csv")
        dev_texts = {r["TEXT"] for r in dev_rows}
        if split == "dev":
            rows = dev_rows
        else:
            rows = [r for r in _csv_rows(data_dir / "cold" / "train.csv") if r["TEXT"] not in dev_texts]

        def cold_label(row: dict[str, str]) -> str:
            if row["label"] != "1":
                return "safe"
            return COLD_TOPIC_LABELS.get(row.get("topic", ""), "offensive") if cold_topics else "offensive"

        return [_harm(r["TEXT"], cold_label(r), "cold") for r in rows if r["TEXT"].strip()]
    if source == "swsr":
        rows = _csv_rows(data_dir / "swsr" / "comments.csv")
        pick = [r for r in rows if r["comment_text"].strip() and is_dev(r["comment_text"]) == (split == "dev")]
        return [_harm(r["comment_text"], "sexism" if r["label"] == "1" else "safe", "swsr") for r in pick]
    if source == "davidson":
        rows = _csv_rows(data_dir / "davidson" / "labeled_data.csv")
        names = {"0": "hate", "1": "offensive", "2": "safe"}
        pick = [r for r in rows if r["tweet"].strip() and is_dev(r["tweet"]) == (split == "dev")]
        return [_harm(r["tweet"], names[r["class"]], "davidson") for r in pick]
    raise ValueError(f"unknown harm source {source!r}; expected cold, swsr or davidson")


_QUERYCORR = re.compile(r"Query:\s*(.*?)\s+Notes?:\s*(.*)", re.DOTALL)


def _split_querycorr(content: str) -> tuple[str, str]:
    match = _QUERYCORR.search(content)
    if match is None:
        raise ValueError(f"QueryCorr record is not 'Query: … Note(s): …': {content[:80]!r}")
    return match.group(1).strip(), match.group(2).strip().rstrip("`").strip()


def querycorr_examples(data_dir: Path, split: Split) -> list[Example]:
    """SNS-Bench QueryCorr (topic): query, note and a relevance grade in -1 … 3."""
    path = data_dir / "sns-bench" / "Note-QueryCorr-topic.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for record in records:
        query, note = _split_querycorr(record["content"])
        grade = str(record["answer"]).strip()
        if grade not in QUERYCORR_GRADES or is_dev(query + "\n" + note) != (split == "dev"):
            continue
        out.append(Example(task="matching", fields=(("query", query), ("note", note)), label=grade, source="sns-bench"))
    return out
