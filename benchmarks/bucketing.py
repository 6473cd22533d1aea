"""How a call's notes are cut into forward passes: least-cost cuts against one batch per worker, same process.

    python -m benchmarks.bucketing [--bundle NAME|DIR] [--notes 1024] [--calls 64,1024] [--rounds 3]

`classify_batch` cuts its notes, sorted by length, into passes. Before 2026-12-07 a call of fewer than
workers x batch_size notes was cut into exactly one pass per worker (equal work), so long and short notes
shared a pass and the short ones were padded to the longest; now the cuts minimize padding plus a fixed cost
per pass (`redone_sdk.inference.encoding.CALL_COST`). Both run here on the same notes, interleaved round by
round (A B A B ...) so a shared machine's drift hits both alike; the figure is their ratio of notes/s and of
CPU seconds per note (this process, all threads). Real COLD dev texts when ../shared/data is there.

Measured figures, each with its command: benchmarks/results/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from redone_sdk import Moderator, Note
from redone_sdk.inference import encoding, engine

from .kafka_e2e import load_texts
from .machine import load_average

_PER_WORKER = 1e12  # a pass costs so much that the fewest passes win: one per worker, as before


def _use(call_cost: float) -> Callable[..., list[list[int]]]:
    def cut(lengths: list[int], batch_size: int, *, min_batches: int = 1) -> list[list[int]]:
        return encoding.length_buckets(lengths, batch_size, min_batches=min_batches, call_cost=call_cost)

    return cut


def measure(moderator: Moderator, notes: list[Note], call: int) -> tuple[float, float]:
    """(notes/s, CPU ms per note) of classify_batch over `notes` in calls of `call` notes."""
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(notes), call):
        moderator.classify_batch(notes[i : i + call])
    return len(notes) / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / len(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bucketing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=None, help="bundle name or folder (default: the shipped default)")
    parser.add_argument("--notes", type=int, default=1024, help="notes per measurement")
    parser.add_argument("--calls", default="64,1024", help="comma-separated classify_batch call sizes")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per call size")
    args = parser.parse_args(argv)
    moderator = Moderator.load(args.bundle) if args.bundle else Moderator.load()
    notes = [Note(note_id=str(i), content=t) for i, t in enumerate(load_texts(args.notes))]
    moderator.classify_batch(notes[:64])
    manifest = moderator.bundle.manifest
    print(f"bundle {manifest.name} {manifest.version} ({moderator.backend_info}); {len(notes)} notes per measurement")
    print(f"load average before {load_average()}")
    print("| call | per-worker notes/s | least-cost notes/s | ratio | CPU ms/note per-worker | least-cost | ratio |")
    print("|---|---|---|---|---|---|---|")
    original = engine.length_buckets
    try:
        for call in (int(c) for c in args.calls.split(",")):
            old: list[tuple[float, float]] = []
            new: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                engine.length_buckets = _use(_PER_WORKER)
                old.append(measure(moderator, notes, call))
                engine.length_buckets = _use(encoding.CALL_COST)
                new.append(measure(moderator, notes, call))
            rate_old, rate_new = (statistics.median(r for r, _ in runs) for runs in (old, new))
            cpu_old, cpu_new = (statistics.median(c for _, c in runs) for runs in (old, new))
            print(
                f"| {call} | {rate_old:.0f} | {rate_new:.0f} | **{rate_new / rate_old:.2f}** | {cpu_old:.2f} | "
                f"{cpu_new:.2f} | **{cpu_new / cpu_old:.2f}** |"
            )
    finally:
        engine.length_buckets = original
    print(f"load average after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
