"""A note's verdict does not depend on what else was in its batch (issue #20 point 11): the shipped int8 graph
quantizes each token's activations with its own scale, so alone, in any batch and in any order a note gets the
same scores."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import Moderator


@pytest.fixture(scope="module")
def notes(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "cold" / "dev.csv").open(encoding="utf-8-sig", newline="") as handle:
        texts = [row["TEXT"] for row in csv.DictReader(handle) if row["TEXT"].strip()]
    return [{"note_id": f"n{i}", "content": text} for i, text in enumerate(texts[:96])]


def _scores(results) -> np.ndarray:
    return np.array([[r.scores[label] for label in sorted(r.scores)] for r in results])


@pytest.mark.parametrize("batch_size", [1, 5, 32])
def test_scores_and_actions_do_not_depend_on_batch_mates(notes: list[dict[str, str]], batch_size: int) -> None:
    moderator = Moderator.load(batch_size=batch_size)
    assert moderator.backend_info.precision == "int8"
    reference = Moderator.load(batch_size=64).classify_batch(notes)
    shuffled = notes[:]
    random.Random(batch_size).shuffle(shuffled)
    by_id = {r.note_id: r for r in moderator.classify_batch(shuffled)}
    got = [by_id[n["note_id"]] for n in notes]
    alone = [moderator.classify(n) for n in notes[:24]]
    assert np.abs(_scores(got) - _scores(reference)).max() < 1e-5
    assert np.abs(_scores(alone) - _scores(reference[:24])).max() < 1e-5
    assert [r.action for r in got] == [r.action for r in reference]
    assert [r.action for r in alone] == [r.action for r in reference[:24]]
