"""HTTP service benchmark: notes/s through `redone serve` under 1, 16 and 64 concurrent clients sending one note
per request, with and without dynamic batching, as a ratio to `classify_batch` bulk in the same run; p50/p99.

    apt-get install -y wrk
    python -m benchmarks.serve [--seconds 8] [--connections 1,16,64] [--max-passes 1,2] [--notes 2000] [--json out.json]

1. Baseline: `Moderator.classify_batch` on `--baseline-notes` notes in batches of `--batch-size` (64, the
   service's default largest pass), in this process, before the first HTTP run and after each (the service is
   idle then); a run's reference is the mean of the baselines on either side of it, so that a machine whose
   speed drifts (other work on the same cores) moves both sides of the ratio alike.
2. For batching on and off: `python -m redone_sdk.serve` (a separate process, as deployed, API key required,
   rate limit out of the way, access log off) on a free loopback port, warmed up; then Debian's `wrk` with
   benchmarks/serve.lua POSTs `{"input": "<one note>"}` to /v1/moderations for `--seconds` per connection
   count. wrk's requests/s is the notes/s; its latency distribution gives p50/p99. Any non-2xx answer fails
   the run. wrk itself runs on the same cores (2 threads, or 1 for 1 connection). `--max-passes 1,2` runs the
   batching service once per value (gathered passes in flight at once; 1 is one pass at a time), to compare
   them in one run; without it, batching runs once with the service's default (the model's workers).
3. CPU: the service process's CPU seconds per note over each run (Linux /proc) beside `classify_batch`'s own
   in the baselines, and the cores the service kept busy. Unlike notes/s, CPU per note barely moves when other
   work shares the machine: it shows what HTTP, JSON and batching cost, apart from how many cores were free.

Measured figures, each with its command: benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redone_sdk import Moderator, Note

from .children import die_with_parent, exit_on_sigterm
from .kafka_e2e import baseline, load_texts, process_cpu_seconds
from .machine import load_average

REPO = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("serve.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(output: str) -> dict[str, float]:
    """requests/s, p50/p99 latency (ms) and error counts from `wrk --latency` output."""

    def millis(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * _UNITS[unit]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rate and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "notes_per_s": float(rate.group(1)),
        "p50_ms": millis(p50.group(1)),
        "p99_ms": millis(p99.group(1)),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def start_service(db: str, batching: bool, log: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m redone_sdk.serve` on a free port; returns the process and its base URL once it is ready."""
    command = [
        sys.executable, "-m", "redone_sdk.serve", "--port", "0", "--db", db, "--no-access-log",
        "--rate-limit", "1000000", "--rate-burst", "1000000", "--max-queue", "100000",
        "--batching" if batching else "--no-batching", *extra,
    ]  # fmt: skip
    handle = log.open("w")
    proc = subprocess.Popen(command, stderr=handle, stdout=handle, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 120
    while not (found := re.search(r"listening on (http://\S+)", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return proc, found.group(1)


def warm_up(url: str, key: str, texts: list[str]) -> None:
    for text in texts[:20]:
        request = urllib.request.Request(
            url + "/v1/moderations",
            data=json.dumps({"input": text}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def run_wrk(url: str, connections: int, seconds: float, bodies: Path, key: str) -> dict[str, float]:
    threads = min(2, connections)
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s",
        "-s", str(LUA), url + "/v1/moderations", "--", str(bodies), key,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    figures = parse_wrk(result.stdout)
    if figures["non_2xx"] or figures["socket_errors"]:
        raise RuntimeError(f"wrk saw errors (non-2xx answers or socket errors):\n{result.stdout}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=2000, help="notes for the baseline and the request bodies")
    parser.add_argument("--batch-size", type=int, default=64, help="baseline classify_batch size (default 64)")
    parser.add_argument("--baseline-notes", type=int, default=1000, help="notes per baseline (one between runs)")
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk duration per connection count")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated connection counts")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="the service's --max-wait-ms")
    parser.add_argument(
        "--max-passes",
        default=None,
        help="comma-separated --max-passes values: one batching run each (default: one run, the service's default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    exit_on_sigterm()  # a terminated benchmark still stops its services
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install -y wrk)")
    connections = [int(c) for c in args.connections.split(",")]
    passes: list[int | None] = [int(p) for p in args.max_passes.split(",")] if args.max_passes else [None]
    # (batching, --max-passes): each batching variant, then one pass per request
    modes: list[tuple[bool, int | None]] = [(True, p) for p in passes] + [(False, None)]

    texts = load_texts(args.notes)
    notes = [Note(note_id=f"n{i}", content=t) for i, t in enumerate(texts)]
    moderator = Moderator.load()
    load_before = load_average()
    baseline_notes = notes[: args.baseline_notes]
    first_rate, first_cpu = baseline(moderator, baseline_notes, args.batch_size)
    baselines, baseline_cpu = [first_rate], [first_cpu]
    runs: list[dict[str, Any]] = []
    extra = ["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        db = f"sqlite:///{work / 'keys.sqlite3'}"
        key = subprocess.run(
            [sys.executable, "-m", "redone_sdk.serve", "keys", "add", "bench", "--db", db],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        bodies = work / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"input": t}, ensure_ascii=False) + "\n" for t in texts), "utf-8")
        for batching, max_passes in modes:
            flags = [*extra, "--max-passes", str(max_passes)] if max_passes is not None else extra
            proc, url = start_service(db, batching, work / f"serve-{batching}-{max_passes}.log", flags)
            try:
                warm_up(url, key, texts)
                for count in connections:
                    cpu_before = process_cpu_seconds(proc.pid)
                    figures = run_wrk(url, count, args.seconds, bodies, key)
                    cpu_after = process_cpu_seconds(proc.pid)
                    # the service is idle now: a baseline after every run, so that each run has one on both sides
                    rate, cpu = baseline(moderator, baseline_notes, args.batch_size)
                    baselines.append(rate)
                    baseline_cpu.append(cpu)
                    bulk = statistics.mean(baselines[-2:])
                    figures.update(bulk_notes_per_s=bulk, ratio=figures["notes_per_s"] / bulk)
                    if cpu_before is not None and cpu_after is not None:
                        served = figures["notes_per_s"] * args.seconds
                        figures["server_cpu_ms_per_note"] = 1000 * (cpu_after - cpu_before) / served
                        figures["server_cores"] = (cpu_after - cpu_before) / args.seconds
                        figures["bulk_cpu_ms_per_note"] = 1000 * statistics.mean(baseline_cpu[-2:])
                    runs.append({"batching": batching, "max_passes": max_passes, "connections": count, **figures})
                    print(f"{_mode(runs[-1])} c={count}: {figures}", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(60)

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.serve " + " ".join(argv if argv is not None else sys.argv[1:]),
        "bundle": f"{moderator.bundle.name} {moderator.bundle.version}",
        "backend": str(moderator.backend_info),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "baselines_notes_per_s": baselines,
        "runs": runs,
    }
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def render(report: dict[str, Any]) -> str:
    """The report as a markdown block (what benchmarks/results/serve.md holds)."""
    spread = ", ".join(f"{b:.0f}" for b in report["baselines_notes_per_s"])
    lines = [
        f"Command: `{report['command'].strip()}`  ",
        f"Date: {report['date']}  ",
        f"Bundle: {report['bundle']} ({report['backend']})  ",
        f"Machine: {report['cores']} cores; load average before {report['load_average_before']}, "
        f"after {report['load_average_after']}  ",
        f"`classify_batch` bulk (batches of 64; before the first run and after each): {spread} notes/s",
        "",
        "| batching | connections | notes/s | bulk around it | ratio to bulk | p50 | p99 | service CPU/note "
        "(bulk's) | service cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        cpu = (
            f"{run['server_cpu_ms_per_note']:.2f} ms ({run['bulk_cpu_ms_per_note']:.2f}) | {run['server_cores']:.2f}"
            if "server_cpu_ms_per_note" in run
            else "– | –"
        )
        lines.append(
            f"| {_mode(run)} | {run['connections']} | {run['notes_per_s']:.0f} | "
            f"{run['bulk_notes_per_s']:.0f} | **{run['ratio']:.2f}** | {run['p50_ms']:.1f} ms | "
            f"{run['p99_ms']:.1f} ms | {cpu} |"
        )
    return "\n".join(lines)


def _mode(run: dict[str, Any]) -> str:
    """The batching column: on or off, and the passes in flight when the run set them."""
    if not run["batching"]:
        return "off"
    passes = run.get("max_passes")
    return "on" if passes is None else f"on, {passes} pass{'es' if passes != 1 else ''} at once"


if __name__ == "__main__":
    sys.exit(main())
