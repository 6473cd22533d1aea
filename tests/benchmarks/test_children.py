"""A benchmark's children do not outlive it: killed with -9, its stream goes too; terminated, its `finally` runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (init here) has yet to reap it


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _parent(tmp_path: Path, preexec: bool) -> tuple[subprocess.Popen[str], int]:
    """A process standing for a benchmark: starts a long child the way the benchmarks do, prints its pid, waits."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys, time
            from redone_sdk.benchmarks.children import die_with_parent
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(120)"],
                preexec_fn=die_with_parent if {preexec} else None,
            )
            print(child.pid, flush=True)
            time.sleep(120)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def test_a_child_started_with_die_with_parent_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent, child = _parent(tmp_path, preexec=True)
    assert _alive(child)
    parent.kill()  # SIGKILL: no finally, no atexit
    parent.wait()
    assert _wait_gone(child, 10), "the child outlived its killed parent"


def test_without_it_the_child_is_orphaned(tmp_path: Path) -> None:
    """The control: what the benchmarks did before (and why a stream once ran on for 100 minutes)."""
    parent, child = _parent(tmp_path, preexec=False)
    try:
        parent.kill()
        parent.wait()
        assert not _wait_gone(child, 1.5), "the control child died with its parent: the test above proves nothing"
    finally:
        os.kill(child, signal.SIGKILL)


def test_exit_on_sigterm_runs_finally_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    script = tmp_path / "bench.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from redone_sdk.benchmarks.children import exit_on_sigterm
            exit_on_sigterm()
            try:
                print("ready", flush=True)
                time.sleep(120)
            finally:
                open({str(marker)!r}, "w").write("topics deleted")
            """
        )
    )
    bench = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert bench.stdout is not None and bench.stdout.readline().strip() == "ready"
    bench.terminate()
    assert bench.wait(30) == 128 + signal.SIGTERM
    assert marker.read_text() == "topics deleted"
