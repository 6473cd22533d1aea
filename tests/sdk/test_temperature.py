"""A task's temperature (`TaskSpec.temperature`): optional in the manifest (1.0), must be > 0, and the SDK divides
the label logits by it before the softmax, so that what `Moderator` and `NoteQueryMatcher` return is calibrated."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from redone_sdk import Bundle, BundleFormatError, InferenceOptions, Moderator, NoteQueryMatcher
from redone_sdk.bundle import MANIFEST_FILE, dump_manifest
from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.inference.engine import TaskEngine, label_probabilities, open_backend

TEXTS = ["你好，今天天气不错", "河南人都是骗子", "women should stay in the kitchen", "Egg waffles: the recipe"]


def _with_temperatures(source: Path, target: Path, temperatures: dict[str, object]) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    for task, value in temperatures.items():
        manifest["tasks"][task]["temperature"] = value
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def plain_bundle(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle as a manifest written before the field existed: no `temperature` in its tasks (nor
    `label_offsets`, which the temperature is not about: test_manifest_label_offsets.py)."""
    target = tmp_path_factory.mktemp("t-none") / "bundle"
    shutil.copytree(default_bundle, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    for task in manifest["tasks"].values():
        task.pop("temperature", None)
        task.pop("label_offsets", None)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def warm_bundle(plain_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle with both tasks at temperature 2 (no label offsets)."""
    return _with_temperatures(plain_bundle, tmp_path_factory.mktemp("t2") / "bundle", {"moderation": 2, "matching": 2})


def _engine_probs(bundle_dir: Path, task: str, records: list[dict[str, str]]) -> np.ndarray:
    bundle = Bundle.load(bundle_dir)
    options = InferenceOptions(workers=1)
    probs, _ = TaskEngine(bundle, task, open_backend(bundle, options), options.batch_size).score(records)
    return probs.astype(np.float64)


def _at_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from p = softmax(z): p^(1/T), normalised."""
    powered = probs ** (1.0 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def test_manifest_without_temperature_loads_as_one(plain_bundle: Path) -> None:
    raw = json.loads((plain_bundle / MANIFEST_FILE).read_text())
    assert all("temperature" not in task for task in raw["tasks"].values())
    bundle = Bundle.load(plain_bundle)
    assert {name: task.temperature for name, task in bundle.manifest.tasks.items()} == {
        "moderation": 1.0,
        "matching": 1.0,
    }


def test_temperature_flattens_known_logits_and_keeps_the_argmax() -> None:
    logits = np.array([[2.0, 0.0, -1.0, 9.0, 0.5], [0.0, 3.0, 1.0, 2.0, -4.0]], dtype=np.float32)
    columns = np.array([0, 1, 2, 4])  # a task reads some of the backend's columns
    cold, warm = label_probabilities(logits, columns), label_probabilities(logits, columns, 2.0)
    z = logits[:, columns].astype(np.float64) / 2.0
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(warm, expected, rtol=1e-12)
    np.testing.assert_allclose(label_probabilities(logits, columns, 1.0), cold, rtol=0, atol=0)
    assert (warm.argmax(axis=1) == cold.argmax(axis=1)).all()
    assert (warm.max(axis=1) < cold.max(axis=1)).all() and (warm.min(axis=1) > cold.min(axis=1)).all()

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(p)).sum(axis=1)

    assert (entropy(warm) > entropy(cold)).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        label_probabilities(logits, columns, 0.0)


def test_bundle_temperature_is_applied_by_engine_moderator_and_matcher(plain_bundle: Path, warm_bundle: Path) -> None:
    assert Bundle.load(warm_bundle).manifest.tasks["moderation"].temperature == 2.0
    records = [{"text": text} for text in TEXTS]
    cold = _engine_probs(plain_bundle, "moderation", records)
    warm = _engine_probs(warm_bundle, "moderation", records)
    np.testing.assert_allclose(warm, _at_temperature(cold, 2.0), rtol=1e-4, atol=1e-6)
    assert (warm.argmax(axis=1) == cold.argmax(axis=1)).all()
    assert (warm.max(axis=1) < cold.max(axis=1)).all()

    moderator = Moderator.load(warm_bundle, workers=1)  # the same passes as the engine's (int8: batch-dependent)
    for result, row in zip(moderator.classify_batch(TEXTS), warm, strict=True):
        scores = result.scores
        assert list(scores) == ["offensive", "hate", "sexism"]
        np.testing.assert_allclose(list(scores.values()), row[1:], rtol=1e-4, atol=1e-6)

    query, note = "egg waffle recipe", {"note_id": "n", "title": "Egg waffles", "content": "Mix flour and eggs"}
    cold_match = NoteQueryMatcher.load(plain_bundle, workers=1).score(query, note)
    warm_match = NoteQueryMatcher.load(warm_bundle, workers=1).score(query, note)
    p_cold = np.array([list(cold_match.grade_probabilities.values())], dtype=np.float64)
    p_warm = np.array(list(warm_match.grade_probabilities.values()), dtype=np.float64)
    np.testing.assert_allclose(p_warm, _at_temperature(p_cold, 2.0)[0], rtol=1e-4, atol=1e-6)
    assert warm_match.grade == cold_match.grade


@pytest.mark.parametrize("value", [0, -1.5])
def test_temperature_must_be_positive(default_bundle: Path, tmp_path: Path, value: float) -> None:
    bundle_dir = _with_temperatures(default_bundle, tmp_path / "bundle", {"moderation": value})
    with pytest.raises(BundleFormatError, match=r"tasks\.moderation\.temperature: Input should be greater than 0"):
        Bundle.load(bundle_dir)


def test_temperature_must_be_finite(default_bundle: Path) -> None:
    task = Bundle.load(default_bundle).manifest.tasks["moderation"].model_dump()
    for value in (math.inf, math.nan):
        with pytest.raises(ValidationError, match="temperature"):
            TaskSpec.model_validate({**task, "temperature": value})


def test_temperature_round_trips_through_the_manifest(warm_bundle: Path) -> None:
    manifest = Bundle.load(warm_bundle).manifest
    written = json.loads(dump_manifest(manifest))
    assert written["tasks"]["moderation"]["temperature"] == 2.0
    assert type(manifest).model_validate(written).tasks["matching"].temperature == 2.0
