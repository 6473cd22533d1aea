"""Benchmark of the exposure replay's pass 2 on DuckDB (`--engine duckdb`) against the numpy pass (`python`), on
the same synthetic log, each run in a fresh child process, the two engines alternated.

    .venv/bin/python benchmarks/replay_sql.py                               # 10 M impressions, 2 runs each
    .venv/bin/python benchmarks/replay_sql.py --impressions 1000000 --repeats 1   # a quick look

The log is benchmarks/replay_bench.py's (200 k notes, 1 M users, 28 days; a control and two arms with
precomputed scores, one reviewing after 6 h and one after 1 h). Each child runs `replay_exposure` with 200
bootstrap replicates and reports: the wall time of the whole replay and of pass 2 alone (`pass2_aggregate`:
what the engine changes), its CPU time (all threads), its peak RSS (the child's own, from wait4), and the
result's numbers, which must be the same for both engines (the script fails otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(folder: Path, engine: str, bootstrap: int) -> None:
    """In a fresh process: one replay, JSON on stdout."""
    from datetime import timedelta

    import numpy as np
    import pyarrow.parquet as pq

    from redone_sdk.policy import CategoryRule, Policy
    from redone_sdk.replay import Arm, ExposureSettings, NoteScores, replay_exposure

    ids = pq.read_table(folder / "notes.parquet", columns=["note_id"]).column("note_id").combine_chunks()
    scores = NoteScores(ids, ("offensive", "hate", "sexism"), np.load(folder / "scores.npy"))
    arms = [
        Arm.control("logged"),
        Arm("default", policy=Policy(name="default", default=CategoryRule(review=0.5, block=0.9)), scores=scores),
        Arm(
            "strict",
            policy=Policy(name="strict", default=CategoryRule(review=0.35, block=0.6)),
            scores=scores,
            review_delay=timedelta(hours=1),
        ),
    ]
    started = time.perf_counter()
    result = replay_exposure(
        folder / "impressions.parquet",
        folder / "notes.parquet",
        arms,
        labels=folder / "labels.parquet",
        settings=ExposureSettings(bootstrap=bootstrap, engine=engine),
    )
    seconds = time.perf_counter() - started
    numbers = json.loads(result.model_dump_json(exclude={"timings_s", "settings"}))
    print(
        json.dumps(
            {
                "engine": engine,
                "seconds": round(seconds, 2),
                "timings_s": result.timings_s,
                "impressions": result.logged_exposures,
                "numbers": numbers,
            }
        )
    )


def run_child(folder: Path, engine: str, bootstrap: int) -> dict:
    command = [sys.executable, __file__, "--child", str(folder), "--engine", engine, "--bootstrap", str(bootstrap)]
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, "PYTHONHASHSEED": "0"})
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        err.seek(0)
        if status:
            raise SystemExit(f"{engine} child failed:\n{err.read()[-3000:]}")
        report = json.loads(out.read().strip().splitlines()[-1])
    report["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    report["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=10_000_000)
    parser.add_argument("--notes", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="Runs per engine, alternated.")
    parser.add_argument("--keep", default=None, help="Write the log here and keep it; reused when already there.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="python", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.engine, args.bootstrap)
        return 0
    from redone_sdk.benchmarks.replay_bench import generate

    with tempfile.TemporaryDirectory(prefix="replay-sql-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "impressions.parquet").exists():
            info = generate(folder, args.impressions, args.notes, args.users, args.days, 0, "dictionary")
            print(
                f"generated {args.impressions:,} impressions ({info['bytes'] / 2**20:.0f} MiB)"
                f" in {info['generate_s']} s"
            )
        runs = []
        for _ in range(args.repeats):
            for engine in ("python", "duckdb"):
                report = run_child(folder, engine, args.bootstrap)
                runs.append(report)
                print(
                    f"{engine:7s} total {report['seconds']:7.2f} s  "
                    f"pass 2 {report['timings_s']['pass2_aggregate']:7.2f} s  "
                    f"cpu {report['cpu_seconds']:7.2f} s  peak RSS {report['peak_rss_mib']:8.1f} MiB",
                    flush=True,
                )
    reference = runs[0]["numbers"]
    same = all(r["numbers"] == reference for r in runs)
    print(f"results identical across engines and runs: {same}")
    by = {e: [r for r in runs if r["engine"] == e] for e in ("python", "duckdb")}

    def median(values: list[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    for key in ("seconds", "pass2", "peak_rss_mib"):
        get = (lambda r: r["timings_s"]["pass2_aggregate"]) if key == "pass2" else (lambda r, k=key: r[k])
        python, duck = median([get(r) for r in by["python"]]), median([get(r) for r in by["duckdb"]])
        print(f"median {key}: python {python:.2f}, duckdb {duck:.2f}, duckdb / python {duck / python:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
