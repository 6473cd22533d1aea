"""`redone moderate`'s input: JSON errors point at the right column, plain text is read with --text or as a
JSON string, and every command takes the same inference flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redone_sdk.cli import build_parser, main


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_truncated_json_line_reports_its_own_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The error sits at the end of the line, not at "column 1" of a next line made of its newline."""
    line = '{"note_id": "n1", "title": "t", "content": '
    source = _write(tmp_path / "notes.jsonl", [line, '{"note_id": "n2", "content": "ok"}'])
    assert main(["moderate", str(source)]) == 1
    captured = capsys.readouterr()
    assert f"{source}:1: not JSON: Expecting value at column {len(line) + 1}\n" in captured.err
    assert [json.loads(x)["note_id"] for x in captured.out.splitlines()] == ["n2"]


def test_text_flag_moderates_plain_lines_with_line_numbers_as_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = _write(tmp_path / "comments.txt", ["周末去哪儿玩", "", '{"not": "parsed as JSON"}', "x" * 100_001])
    assert main(["moderate", "--text", str(source)]) == 1
    captured = capsys.readouterr()
    results = [json.loads(x) for x in captured.out.splitlines()]
    assert [r["note_id"] for r in results] == ["1", "3"]
    assert f"{source}:4:" in captured.err and "100000" in captured.err.replace(",", "")


def test_json_string_lines_are_note_texts_and_plain_text_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    note = json.dumps({"note_id": "a", "content": "x"})
    lines = [json.dumps("一条笔记", ensure_ascii=False), "just some words", note]
    source = _write(tmp_path / "notes.jsonl", lines)
    assert main(["moderate", str(source)]) == 1
    captured = capsys.readouterr()
    assert [json.loads(x)["note_id"] for x in captured.out.splitlines()] == ["1", "a"]
    assert f"{source}:2: not JSON: Expecting value at column 1 (plain-text lines: use --text)" in captured.err


def test_help_documents_text_and_the_inference_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["moderate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--text", "--precision", "--workers", "--inter-op-threads", "--providers", "--torch-dtype"):
        assert flag in out


def test_bad_inference_flag_values_are_usage_errors(capsys: pytest.CaptureFixture) -> None:
    for argv in (["--workers", "0"], ["--batch-size", "x"], ["--precision", "fp16"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["moderate", *argv])
        assert exit_info.value.code == 2
