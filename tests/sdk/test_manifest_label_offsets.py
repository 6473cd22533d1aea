"""A task's label offsets (`TaskSpec.label_offsets`): optional in the manifest ({}), keyed by the task's own labels,
finite, and added by the SDK to the temperature-scaled logits before the softmax, so every consumer of the engine
(`Moderator`, the evaluation, the bench) sees the shifted prior."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from redone_sdk import Bundle, BundleFormatError, InferenceOptions, Moderator
from redone_sdk.bundle import MANIFEST_FILE, dump_manifest
from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.inference.engine import TaskEngine, label_offset_vector, label_probabilities, open_backend

TEXTS = ["你好，今天天气不错", "河南人都是骗子", "women should stay in the kitchen", "Egg waffles: the recipe"]


def _with_offsets(source: Path, target: Path, offsets: object, *, task: str = "moderation") -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["tasks"][task]["label_offsets"] = offsets
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def bare_bundle(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle as a manifest written before the field existed: no `label_offsets` in its tasks."""
    target = tmp_path_factory.mktemp("o-none") / "bundle"
    shutil.copytree(default_bundle, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    for task in manifest["tasks"].values():
        task.pop("label_offsets", None)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


def _engine_probs(bundle_dir: Path, records: list[dict[str, str]]) -> np.ndarray:
    bundle = Bundle.load(bundle_dir)
    options = InferenceOptions(workers=1)
    engine = TaskEngine(bundle, "moderation", open_backend(bundle, options), options.batch_size)
    return engine.score(records)[0].astype(np.float64)


def test_manifest_without_label_offsets_loads_as_none(bare_bundle: Path) -> None:
    bundle = Bundle.load(bare_bundle)
    assert all(task.label_offsets == {} for task in bundle.manifest.tasks.values())
    assert label_offset_vector(bundle.manifest.tasks["moderation"]) is None


def test_offsets_are_added_to_the_scaled_logits() -> None:
    logits = np.array([[2.0, 0.0, -1.0, 9.0, 0.5], [0.0, 3.0, 1.0, 2.0, -4.0]], dtype=np.float32)
    columns = np.array([0, 1, 2, 4])
    offsets = np.array([0.0, -1.0, 0.5, 2.0])
    shifted = label_probabilities(logits, columns, 2.0, offsets)
    z = logits[:, columns].astype(np.float64) / 2.0 + offsets
    np.testing.assert_allclose(shifted, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    # a shift common to every label is no shift
    np.testing.assert_allclose(
        label_probabilities(logits, columns, 2.0, offsets + 3.0), shifted, rtol=1e-12, atol=1e-15
    )


def test_offsets_are_applied_by_engine_and_moderator(bare_bundle: Path, tmp_path: Path) -> None:
    shifted_dir = _with_offsets(bare_bundle, tmp_path / "bundle", {"hate": 1.5, "safe": -0.5})
    task = Bundle.load(shifted_dir).manifest.tasks["moderation"]
    assert task.label_names == ("safe", "offensive", "hate", "sexism")
    np.testing.assert_array_equal(label_offset_vector(task), [-0.5, 0.0, 1.5, 0.0])

    records = [{"text": text} for text in TEXTS]
    plain, shifted = _engine_probs(bare_bundle, records), _engine_probs(shifted_dir, records)
    expected = plain * np.exp([-0.5, 0.0, 1.5, 0.0])  # softmax(z + b) from p = softmax(z): p·e^b, normalised
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shifted, expected, rtol=1e-4, atol=1e-6)
    assert (shifted[:, 2] > plain[:, 2]).all() and (shifted[:, 0] < plain[:, 0]).all()

    moderator = Moderator.load(shifted_dir, workers=1)
    for result, row in zip(moderator.classify_batch(TEXTS), shifted, strict=True):
        np.testing.assert_allclose(list(result.scores.values()), row[1:], rtol=1e-4, atol=1e-6)


def test_offsets_must_name_the_tasks_labels(default_bundle: Path, tmp_path: Path) -> None:
    bundle_dir = _with_offsets(default_bundle, tmp_path / "bundle", {"hate": 0.5, "spam": 1.0})
    with pytest.raises(BundleFormatError, match=r"label_offsets name labels the task does not have: \['spam'\]"):
        Bundle.load(bundle_dir)


def test_offsets_must_be_finite_numbers(default_bundle: Path) -> None:
    task = Bundle.load(default_bundle).manifest.tasks["moderation"].model_dump()
    for value in (math.inf, math.nan, "high"):
        with pytest.raises(ValidationError, match="label_offsets"):
            TaskSpec.model_validate({**task, "label_offsets": {"hate": value}})


def test_offsets_round_trip_through_the_manifest(default_bundle: Path, tmp_path: Path) -> None:
    manifest = Bundle.load(_with_offsets(default_bundle, tmp_path / "bundle", {"hate": 0.25})).manifest
    written = json.loads(dump_manifest(manifest))
    assert written["tasks"]["moderation"]["label_offsets"] == {"hate": 0.25}
    assert type(manifest).model_validate(written).tasks["moderation"].label_offsets == {"hate": 0.25}
