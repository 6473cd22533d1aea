"""`python -m benchmarks --quick` as on a fresh clone: no pipeline run's bundle-full, only the shipped bundle
(int8 graph, no checkpoint); the tiny preset stands in for the speed table and every row says what it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redone_sdk.benchmarks import cli
from redone_sdk.benchmarks.report import failed_sections
from redone_sdk.benchmarks.settings import BUNDLE_FULL_ENV

ROOT = Path(__file__).resolve().parents[2]
SDK_BACKENDS = ("torch-eager-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
MODES = ("batch1", "batched", "bulk")


@pytest.mark.slow
def test_quick_runs_without_a_pipeline_run(
    data_dir: Path, default_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redone_sdk.benchmarks.stand_in import tiny_bundle_full
    from redone_sdk.training import pipeline

    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, BUNDLE_FULL_ENV: str(tmp_path / "no-run" / "bundle-full"), "REDONE_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--output-dir", str(out), "--name", "t"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((out / "t.json").read_text(encoding="utf-8"))
    assert failed_sections(r) == []
    speed_bundle = r["bundles"]["speed (--bundle-full)"]
    assert speed_bundle["stand_in"] is True and speed_bundle["chosen_because"].startswith("STAND-IN")
    assert Path(speed_bundle["path"]).is_relative_to(cache) and speed_bundle["name"] == "redone-tiny"
    assert Path(r["bundles"]["quality and memory (--bundle)"]["path"]) == default_bundle.resolve()
    speed = r["speed"]
    assert speed["unavailable"] == {}
    shipped = "onnx-int8 (shipped bundle)"
    assert set(SDK_BACKENDS) | {shipped} <= set(speed["results"])
    for name in SDK_BACKENDS:
        assert speed["contenders"][name]["bundle"] == speed_bundle["path"]
        assert all(speed["results"][name][mode]["notes_per_s"] > 0 for mode in MODES)
    assert speed["contenders"][shipped]["bundle"] == str(default_bundle.resolve())
    assert speed["results"][shipped]["bulk"]["notes_per_s"] > 0
    assert speed["ratio_vs_reference"][shipped] == dict.fromkeys(MODES)  # another model than the reference
    assert shipped not in speed["agreement_with_reference"]
    # quality is the shipped model's only: the tiny model's graphs must not pass for it
    systems = r["quality"]["datasets"]["cold_dev"]["systems"]
    assert "redone-int8" in systems and "redone-fp32" not in systems
    assert all("bundle-full" not in name for name in r["memory"]["moderator"])
    md = (out / "t.md").read_text(encoding="utf-8")
    assert "**Stand-in model.**" in md and "| onnx-int8 | tiny stand-in |" in md
    assert f"| {shipped} | shipped (--bundle) |" in md
    # trained without the eval stage, and reused as it is by the next run: no stage runs again
    run = Path(speed_bundle["path"]).parent
    assert not (run / "eval" / "metrics.json").exists()

    def no_training(*_args: Any, **_kwargs: Any) -> Path:
        raise AssertionError("the stand-in was trained again")

    monkeypatch.setattr(pipeline, "run_all", no_training)
    assert tiny_bundle_full(data_dir, cache / "bench") == Path(speed_bundle["path"])


def test_full_run_without_a_bundle_full_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    monkeypatch.setenv(BUNDLE_FULL_ENV, str(tmp_path / "missing"))
    assert cli.main(["--quiet", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "redone train all" in err and "--quick" in err
    assert not (tmp_path / "missing").exists()


def test_quick_falls_back_to_the_fixture_data_only_for_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from redone_sdk.training import datasets

    monkeypatch.delenv("REDONE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "default_data_dir", lambda: tmp_path / "shared" / "data")
    folder, why = cli._data_dir(None, quick=True) or (None, "")
    assert folder == ROOT / "tests" / "fixtures" / "data" and "tests/fixtures/data" in why
    assert cli._data_dir(None, quick=False) is None  # a full run never measures on the test set
    assert "REDONE_DATA_DIR" in capsys.readouterr().err
    assert cli._data_dir(tmp_path / "empty", quick=True) is None  # an explicit folder must hold the data
