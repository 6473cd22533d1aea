import json
import subprocess
import sys
from pathlib import Path

import pytest

from redone_sdk.cli import main

NOTES = [
    {"note_id": "a", "title": "周末去哪儿", "content": "推荐几个好去处"},
    {"note_id": "b", "content": "this is fine"},
]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_moderate_writes_one_result_per_note(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = _write_lines(tmp_path / "notes.jsonl", [json.dumps(n, ensure_ascii=False) for n in NOTES])
    assert main(["moderate", str(source), "--bundle", str(default_bundle)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["note_id"] for r in out] == ["a", "b"]
    assert all(r["action"] in ("allow", "review", "block") for r in out)


def test_bad_lines_are_reported_with_numbers_and_others_kept(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = [
        json.dumps(NOTES[0], ensure_ascii=False),
        "{not json",
        json.dumps({"note_id": "c"}),
        "[1, 2]",
        json.dumps({"note_id": "d", "content": "x", "extra": 1}),
        "",
        json.dumps(NOTES[1]),
    ]
    source = _write_lines(tmp_path / "notes.jsonl", lines)
    assert main(["moderate", str(source), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert [json.loads(x)["note_id"] for x in captured.out.splitlines()] == ["a", "b"]
    err = captured.err
    assert f"{source}:2: not JSON" in err
    assert f"{source}:3:" in err and "non-empty title or content" in err
    assert f"{source}:4: expected a JSON object, got list" in err
    assert f"{source}:5:" in err and "extra: Extra inputs are not permitted" in err
    assert ":6:" not in err


def test_match_reads_pairs(default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [
        json.dumps({"query": "waffle", "note": {"note_id": "n1", "content": "egg waffle recipe"}}),
        json.dumps({"query": "waffle"}),
    ]
    source = _write_lines(tmp_path / "pairs.jsonl", lines)
    assert main(["match", str(source), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    (result,) = [json.loads(x) for x in captured.out.splitlines()]
    assert result["note_id"] == "n1" and 0 <= result["score"] <= 1
    assert ":2:" in captured.err


def test_bad_bundle_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _write_lines(tmp_path / "notes.jsonl", [json.dumps(NOTES[0])])
    assert main(["moderate", str(source), "--bundle", str(tmp_path / "missing")]) == 2
    assert "redone: error: bundle directory" in capsys.readouterr().err


def test_stdin_and_help_via_the_installed_script(default_bundle: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redone_sdk", "moderate", "-", "--bundle", str(default_bundle)],
        input=json.dumps(NOTES[1]) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["note_id"] == "b"
    for args in (
        ["--help"],
        ["moderate", "--help"],
        ["match", "--help"],
        ["bundle", "--help"],
        ["train", "all", "--help"],
    ):
        shown = subprocess.run([sys.executable, "-m", "redone_sdk", *args], capture_output=True, text=True)
        assert shown.returncode == 0 and "usage:" in shown.stdout


def test_bundle_command_verifies(default_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bundle", str(default_bundle)]) == 0
    manifest = json.loads((default_bundle / "manifest.json").read_text())
    assert manifest["name"] in capsys.readouterr().out
