"""`redone moderate` / `match` under hostile input (issue #20, point 9): a bad line is `FILE:LINE: reason` and the
rest is processed (exit 1), bad flags and inputs are one-line usage errors (exit 2), no traceback; `moderate -`
streams verdicts while its input is still open."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from redone_sdk import cli
from redone_sdk.cli import main

GOOD = json.dumps({"note_id": "good1", "content": "周末去哪儿玩"}, ensure_ascii=False).encode()
GOOD2 = json.dumps({"note_id": "good2", "content": "this is fine"}).encode()


def _ids(out: str) -> list[str]:
    return [json.loads(line)["note_id"] for line in out.splitlines()]


def test_invalid_utf8_and_deep_nesting_are_reported_by_line_and_the_rest_processed(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = [
        GOOD,
        b'{"note_id": "x", "content": "caf\xe9"}',  # Latin-1, not UTF-8
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
        b'{"note_id": "s", "content": "\\ud800"}',  # a lone surrogate, escaped in JSON
        GOOD2,
    ]
    source = tmp_path / "notes.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["moderate", str(source), "--summary", "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["good1", "good2"]
    err = captured.err
    assert f"{source}:2: not UTF-8 at byte 32: invalid continuation byte" in err
    assert f"{source}:3: JSON nested too deeply" in err
    assert f"{source}:4: JSON nested too deeply" in err
    assert f"{source}:5:" in err and "content" in err
    assert "Traceback" not in err and "RecursionError" not in err
    assert "2 notes moderated, 4 bad lines" in err


def test_text_mode_reports_invalid_utf8_by_line(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "comments.txt"
    source.write_bytes("第一条\n".encode() + b"\xff\xfe broken\n" + "第三条\n".encode())
    assert main(["moderate", "--text", str(source), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["1", "3"]
    assert f"{source}:2: not UTF-8 at byte 0" in captured.err


def test_an_overlong_line_is_skipped_unread(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_LINE_BYTES", 1_000)
    long = json.dumps({"note_id": "long", "content": "x" * 5_000}).encode()
    source = tmp_path / "notes.jsonl"
    source.write_bytes(b"\n".join([GOOD, long, GOOD2]) + b"\n")
    assert main(["moderate", str(source), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["good1", "good2"]
    assert f"{source}:2: line longer than 1000 bytes; skipped" in captured.err


def test_match_reports_a_surrogate_query_by_line(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    note = {"note_id": "n1", "content": "egg waffle recipe"}
    lines = [
        json.dumps({"query": "waffle", "note": note}),
        '{"query": "\\ud800", "note": {"note_id": "n2", "content": "x"}}',
        json.dumps({"query": "waffle", "note": {**note, "note_id": "n3"}}),
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["match", str(source), "--bundle", str(default_bundle)]) == 1
    captured = capsys.readouterr()
    assert _ids(captured.out) == ["n1", "n3"]
    assert f"{source}:2: the query is not valid Unicode: a lone surrogate U+D800" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["match", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["match", "--workers", "-1"], "argument --workers: must be at least 1, got -1"),
        (["moderate", "--workers", "two"], "argument --workers: not an integer: 'two'"),
        (["moderate", "{dir}"], "is a directory; give a JSON-lines file or - for stdin"),
        (["match", "{dir}"], "is a directory"),
        (["moderate", "{dir}/missing.jsonl"], "no such file: "),
    ],
)
def test_bad_flags_and_inputs_are_one_line_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(dir=tmp_path) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith(f"redone {argv[0]}: error: ") and err.rstrip().endswith("--help)")


def test_a_non_finite_model_output_stops_with_a_one_line_error(
    default_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: the CLI writes no verdict for a note the model cannot score, and exits 2 (not 0 or 1)."""
    import redone_sdk.inference.engine as engine

    real = engine.label_probabilities
    monkeypatch.setattr(engine, "label_probabilities", lambda logits, *a: real(logits * np.nan, *a))
    source = tmp_path / "notes.jsonl"
    source.write_bytes(GOOD + b"\n")
    assert main(["moderate", str(source), "--bundle", str(default_bundle)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("redone: error: the model's output for note at index 0 (note_id 'good1')")
    assert captured.err.count("\n") == 1


def _first_line_within(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    """What the process wrote until its first newline (read from the pipe itself, unbuffered), or b"" when
    nothing came within `seconds`; may hold more lines after the first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + seconds
    while b"\n" not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, "the process closed its output early"
            got += chunk
    return got if b"\n" in got else b""


def test_moderate_stdin_streams_verdicts_before_the_input_ends(default_bundle: Path) -> None:
    """With stdin still open, the first chunk's verdicts come out (chunk: 4 passes x batch 2 x 1 worker = 8)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redone_sdk",
            "moderate",
            "-",
            "--batch-size",
            "2",
            "--workers",
            "1",
            "--bundle",
            str(default_bundle),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        for i in range(8):
            proc.stdin.write(json.dumps({"note_id": f"n{i}", "content": f"note {i}"}).encode() + b"\n")
        proc.stdin.write(b"\xff not utf-8\n")
        proc.stdin.flush()
        early = _first_line_within(proc, 60)
        assert early, "no verdict while the input is open: the CLI waited for the end of its input"
        assert json.loads(early.split(b"\n")[0])["note_id"] == "n0"
        proc.stdin.write(json.dumps({"note_id": "last", "content": "the end"}).encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert _ids((early + out).decode()) == [f"n{i}" for i in range(8)] + ["last"]
    assert err.decode() == "<stdin>:9: not UTF-8 at byte 0: invalid start byte\n"
