"""`redone stream` / `python -m redone_sdk.adapters.kafka`: flags, environment and exit codes (no broker needed)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from redone_sdk.adapters.kafka.cli import EXIT_USAGE, add_arguments, register, run, settings_from_args


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_register_adds_the_stream_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="redone")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "stream",
            "--bootstrap",
            "h:1",
            "--input",
            "i",
            "--output",
            "o",
            "--review",
            "r",
            "--dlq",
            "d",
            "--group",
            "g",
            "--bundle",
            "/b",
        ]
    )
    assert args.handler is run and args.bundle == "/b"
    s = settings_from_args(args)
    assert (s.bootstrap, s.input_topic, s.output_topic, s.review_topic, s.dlq_topic, s.group_id) == (
        "h:1",
        "i",
        "o",
        "r",
        "d",
        "g",
    )


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDONE_KAFKA_BOOTSTRAP", "env:9092")
    monkeypatch.setenv("REDONE_KAFKA_BATCH_SIZE", "10")
    s = settings_from_args(_parse("--batch-size", "20", "--guarantee", "exactly-once", "--no-create-topics"))
    assert (s.bootstrap, s.batch_size, s.guarantee, s.create_topics) == ("env:9092", 20, "exactly-once", False)


def test_bad_settings_exit_with_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # run() installs its JSON handler; undo it after
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(logging.getLogger("kafka"), "level", logging.getLogger("kafka").level)
    assert run(_parse("--guarantee", "sometimes")) == EXIT_USAGE
    assert "guarantee" in capsys.readouterr().err


def test_module_entry_point_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "redone_sdk.adapters.kafka", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ},
    ).stdout
    for flag in ("--bootstrap", "--input", "--output", "--review", "--dlq", "--group", "--bundle", "--guarantee"):
        assert flag in out
    assert "REDONE_KAFKA_BOOTSTRAP" in out


def test_redone_stream_is_registered_in_the_core_cli() -> None:
    installed = {e.name for e in entry_points(group="redone_sdk.cli")}
    assert "stream" in installed, "reinstall the package (pip install -e .)"
    from redone_sdk.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["stream", "--help"])
    assert exit_info.value.code == 0


def test_spinning_flag_reaches_the_model(default_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from redone_sdk import Moderator
    from redone_sdk.adapters.kafka import ModerationStream

    assert _parse().spinning is None
    assert _parse("--no-spinning").spinning is False and _parse("--spinning").spinning is True
    loaded: list[Moderator] = []
    load = Moderator.load

    def spy(*args, **kwargs) -> Moderator:
        loaded.append(load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(Moderator, "load", spy)
    ModerationStream.from_bundle(default_bundle, allow_spinning=False)
    (moderator,) = loaded
    assert moderator.options.allow_spinning is False


def test_a_bundle_digest_mismatch_exits_with_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--bundle-digest pins the bundle (docs/bundles.md): refused before any broker is contacted."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(logging.getLogger("kafka"), "level", logging.getLogger("kafka").level)
    flags = ["--bootstrap", "127.0.0.1:1", "--input", "i", "--output", "o", "--review", "r", "--dlq", "d"]
    assert run(_parse(*flags, "--group", "g", "--bundle-digest", "0" * 64)) == EXIT_USAGE
    assert f"expected {'0' * 64}" in capsys.readouterr().err


def test_the_cli_exits_with_the_shutdown_code_when_a_stop_overruns_its_timeout() -> None:
    """The process-level guarantee behind `--shutdown-timeout`: a stream stuck past it (a client call that ignores
    its deadline) is ended with exit code 4 about 3 s later, and every thread's stack is printed to show where."""
    import time

    script = (
        "import threading, time\n"
        "from redone_sdk.adapters.kafka.cli import _hard_stop_after_shutdown_timeout\n"
        "class Stuck:\n"
        "    stopping = False\n"
        "stream = Stuck()\n"
        "_hard_stop_after_shutdown_timeout(stream, 0.5)\n"
        "time.sleep(1.0)\n"
        "stream.stopping = True\n"  # a stop was asked for ...
        "threading.Event().wait(60)\n"  # ... and the main thread never returns
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 4, done.stderr
    assert 1.0 + 0.5 + 3.0 <= took < 20, took
    assert "still stopping: exiting now" in done.stderr
    assert "Thread" in done.stderr and "in <module>" in done.stderr  # the stacks, main thread included
