"""Keep a benchmark's long-lived children (a stream, a service) from outliving it.

A benchmark killed by its caller's timeout (SIGKILL) runs no `finally`, so a child it started would keep running,
and keep a core busy, with nothing to stop it. `die_with_parent` is a `preexec_fn` that asks Linux to send the
child SIGTERM when the benchmark dies (prctl PR_SET_DEATHSIG; a no-op elsewhere); `exit_on_sigterm` turns the
benchmark's own SIGTERM into SystemExit, so its `finally` blocks stop children and delete topics as on an error.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from types import FrameType

__all__ = ["die_with_parent", "exit_on_sigterm"]

_PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: between fork and exec the child should only call it (no dlopen, no imports).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """`subprocess.Popen(..., preexec_fn=die_with_parent)`: the child gets SIGTERM when the thread that started
    it exits, however it exits. Linux only; elsewhere the child is stopped by `finally` alone."""
    if _prctl is not None and _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit(143) in the main thread, so `finally` blocks run before the benchmark exits."""
    signal.signal(signal.SIGTERM, _raise_exit)
