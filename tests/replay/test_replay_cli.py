import argparse
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from redone_sdk.replay.cli import main, parse_duration, register


def test_parse_duration() -> None:
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("3600") == timedelta(hours=1)
    for bad in ("", "soon", "6x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_register_adds_replay_to_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="redone")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "report", "somewhere"])
    assert args.handler.__name__ == "run" and args.out == "somewhere"


def test_import_boundaries() -> None:
    code = (
        "import sys, redone_sdk; assert 'redone_sdk.replay' not in sys.modules;"
        "import redone_sdk.replay; bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-m", "redone_sdk.replay", "--help"], check=True, capture_output=True, text=True
    )
    for command in ("synth", "exposure", "search", "report", "demo"):
        assert command in out.stdout


def test_end_to_end(tiny_bundle: Path, data_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("REDONE_CACHE_DIR", str(tmp_path / "cache"))  # the score cache shared by runs
    data, out = tmp_path / "data", tmp_path / "out"
    small = ["--users", "200", "--notes", "150", "--impressions", "5000", "--days", "2", "--sessions", "150"]
    assert main(["synth", "--out", str(data), "--data-dir", str(data_dir), "--bad-rows", "5", *small]) == 0
    policy = tmp_path / "strict.json"
    policy.write_text(json.dumps({"name": "strict", "default": {"review": 0.2, "block": 0.3}}))
    common = ["--notes", str(data / "notes.parquet"), "--out", str(out), "--bootstrap", "50"]
    exposure = [
        "exposure",
        "--impressions", str(data / "impressions.parquet"),
        "--labels", str(data / "labels.parquet"),
        "--arm", f"redone={tiny_bundle}",
        "--arm", f"strict={tiny_bundle}",
        "--policy", f"strict={policy}",
        "--review-delay", "3h",
        "--sweep-points", "5",
        *common,
    ]  # fmt: skip
    assert main(exposure) == 1  # the 5 malformed rows are reported, and the exit status says so
    captured = capsys.readouterr()
    assert "5 bad" in captured.err and "strict: harmful exposure rate" in captured.out
    assert main([*exposure, "--allow-bad-rows"]) == 0
    result = json.loads((out / "exposure.json").read_text())
    assert [a["name"] for a in result["arms"]] == ["logged", "redone", "strict"]
    assert result["settings"]["review_delay"] == "PT3H"
    (scoring,) = result["scoring"].values()
    assert scoring["notes_scored_by_model"] == 0  # the first run's scores, from the shared cache
    search = ["search", "--sessions", str(data / "sessions.parquet"), "--bundle", str(tiny_bundle), *common]
    assert main(search) == 0
    assert "click page rate" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert "Exposure-rate replay" in html and "Click-page-rate replay" in html
    assert main(["report", str(out)]) == 0
    # A clear error, not a traceback, for a bad input.
    assert main(["exposure", "--impressions", str(tmp_path / "nope.parquet"), *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["exposure", "--impressions", str(data / "impressions.parquet"), "--policy", "x=y.json", *common]) == 2
