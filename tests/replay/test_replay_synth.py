import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from redone_sdk.replay import Arm, SynthConfig, replay_exposure, synthesize
from redone_sdk.replay.labels import read_labels
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.sessions import read_judgments, read_sessions

SMALL = {"users": 300, "notes": 400, "impressions": 20_000, "days": 3, "search_sessions": 300}


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("impressions", "notes", "labels", "sessions", "judgments"):
        digest.update(str(pq.read_table(folder / f"{name}.parquet").to_pylist()).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(seed=7, bad_rows=10, **SMALL), data_dir=data_dir)
    return out


def test_seeded_and_reproducible(synth_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    again = tmp_path / "again"
    synthesize(again, SynthConfig(seed=7, bad_rows=10, **SMALL), data_dir=data_dir)
    assert _digest(again) == _digest(synth_dir)
    other = tmp_path / "other"
    synthesize(other, SynthConfig(seed=8, bad_rows=10, **SMALL), data_dir=data_dir)
    assert _digest(other) != _digest(synth_dir)


def test_tables_pass_validation_except_the_injected_bad_rows(synth_dir: Path) -> None:
    manifest = json.loads((synth_dir / "synth.json").read_text())
    assert manifest["rows"]["impressions"] == SMALL["impressions"] + 10
    assert "CC BY-NC-SA" in manifest["license"]
    notes = read_notes(synth_dir / "notes.parquet")
    assert notes.issues.bad_rows == 0
    labels = read_labels(synth_dir / "labels.parquet", notes=notes)
    assert labels.issues.bad_rows == 0 and len(labels) == manifest["rows"]["feed_notes"]
    sessions = read_sessions(synth_dir / "sessions.parquet", notes=notes)
    assert sessions.issues.bad_rows == 0 and len(sessions) == SMALL["search_sessions"]
    assert {len(n) for n in sessions.notes} == {10}
    grades, issues = read_judgments(synth_dir / "judgments.parquet")
    assert issues.bad_rows == 0
    assert all((q, n) in grades for q, shown in zip(sessions.queries, sessions.notes, strict=True) for n in shown)
    result = replay_exposure(
        synth_dir / "impressions.parquet",
        synth_dir / "notes.parquet",
        [Arm.control()],
        labels=synth_dir / "labels.parquet",
    )
    issues = result.inputs["impressions"]
    assert issues.bad_rows == 10
    assert set(issues.reasons.values()) == {2}  # five kinds of malformed rows, two of each
    assert result.logged_exposures == SMALL["impressions"]
    assert len(result.days) == SMALL["days"]
    # The harmful base rate is an exposure share: about 5 % by default.
    assert 0.02 < result.arm("control").harmful_exposure_rate.value < 0.09
    # Power-law popularity: the top 1 % of notes get far more than 1 % of exposures.
    counts = pq.read_table(synth_dir / "impressions.parquet", columns=["note"]).column("note").value_counts()
    top = sorted((c.as_py()["counts"] for c in counts), reverse=True)
    assert sum(top[: max(1, len(top) // 100)]) / sum(top) > 0.05


def test_position_bias_in_search_clicks(synth_dir: Path) -> None:
    sessions = pq.read_table(synth_dir / "sessions.parquet").to_pylist()
    first = sum(s["clicks"][0] for s in sessions)
    last = sum(s["clicks"][-1] for s in sessions)
    assert first > 2 * last
