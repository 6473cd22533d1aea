"""The thin training path on the tiny preset: real data, real model, real export (built once per session)."""

import dataclasses
import json
from pathlib import Path

import pytest

from redone_sdk import Bundle
from redone_sdk.training.config import PRESETS_DIR, PipelineConfig
from redone_sdk.training.datasets import harm_examples, is_dev, querycorr_examples


def test_loss_goes_down(tiny_run: Path) -> None:
    losses = json.loads((tiny_run / "train_log.json").read_text())["loss"]
    assert len(losses) >= 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first * 0.8, (first, last)


def test_bundle_round_trips_with_metrics_and_lineage(tiny_run: Path) -> None:
    bundle = Bundle.load(tiny_run / "bundle")
    manifest = bundle.manifest
    assert set(manifest.graphs) == {"int8"} and manifest.default_graph == "int8"
    assert manifest.lineage.parameters and manifest.lineage.training_config["vocab_size"] == 600
    assert {s.name.split(" ")[0] for s in manifest.lineage.data_sources} == {"COLD", "SWSR", "Davidson", "SNS-Bench"}
    assert "non-commercial" in manifest.license
    for precision in ("fp32", "int8"):
        cold = manifest.metrics[f"{precision}/cold_dev"]
        assert 0.0 <= cold["macro_f1"] <= 1.0 and cold["n"] == 64
    full = Bundle.load(tiny_run / "bundle-full")
    assert set(full.manifest.graphs) == {"fp32", "int8"} and full.manifest.checkpoint == "checkpoint"


def test_dev_parts_stay_out_of_training(data_dir: Path) -> None:
    for source in ("swsr", "davidson"):
        train = {e.record["text"] for e in harm_examples(data_dir, source, "train")}
        dev = {e.record["text"] for e in harm_examples(data_dir, source, "dev")}
        assert dev and not train & dev
        assert all(is_dev(t) for t in dev)
    cold_train = {e.record["text"] for e in harm_examples(data_dir, "cold", "train")}
    cold_dev = {e.record["text"] for e in harm_examples(data_dir, "cold", "dev")}
    assert not cold_train & cold_dev
    qc_train = {e.record["query"] + e.record["note"] for e in querycorr_examples(data_dir, "train")}
    qc_dev = {e.record["query"] + e.record["note"] for e in querycorr_examples(data_dir, "dev")}
    assert qc_dev and not qc_train & qc_dev


def test_config_files_and_overrides() -> None:
    config = PipelineConfig.from_file(PRESETS_DIR / "tiny.json", epochs=0.5, harm_sources="cold,swsr")
    assert config.epochs == 0.5 and config.harm_sources == ("cold", "swsr")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


def test_unknown_config_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"epochs": 1, "epoch": 2}')
    with pytest.raises(ValueError, match=r"unknown config fields \['epoch'\]"):
        PipelineConfig.from_file(tmp_path / "c.json")
