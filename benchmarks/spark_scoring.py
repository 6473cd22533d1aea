"""Benchmark of scoring on Spark: notes/s of Spark `local[2]` against `classify_batch` in the same run, and the
exposure replay reading a precomputed scores table (`--scores`) instead of scoring.

    .venv/bin/python benchmarks/spark_scoring.py                      # 10,000 notes; 10 M impressions
    .venv/bin/python benchmarks/spark_scoring.py --notes 2000 --impressions 1000000   # a quick look

Scoring: the same notes (fixture COLD texts cycled under distinct ids, two Parquet files) are scored by
`Moderator.classify_batch` (default options: a pass per core) before and after Spark, and by Spark on
`local[2]` twice: cold (Python workers start, load and verify the shipped bundle) and warm (workers reused,
model cached). The ratio is Spark's warm notes/s over the mean of the two `classify_batch` runs (target ≥ 0.8).

Replay: a log of `--impressions` impressions over `--replay-notes` notes (benchmarks/replay_bench.py's
generator), its notes scored into a scores table by Spark, then `redone replay exposure` in a child process
twice: the arm scoring its notes itself (no cache), and the arm reading the table (`--scores`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_COLD = ROOT / "tests" / "fixtures" / "data" / "cold" / "dev.csv"


def write_notes(folder: Path, count: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(FIXTURE_COLD, encoding="utf-8-sig") as handle:
        texts = [row["TEXT"] for row in csv.DictReader(handle)]
    rows = [{"note_id": f"n{i:07d}", "content": texts[i % len(texts)]} for i in range(count)]
    notes = folder / "notes"
    notes.mkdir(parents=True)
    half = count // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(chunk), notes / f"part-{part}.parquet")
    return notes


def bench_scoring(folder: Path, count: int, spark_master: str) -> dict:
    from redone_sdk.adapters.spark.job import get_session, score_with_spec, ship_bundle
    from redone_sdk.inference.options import InferenceOptions
    from redone_sdk.moderator import Moderator

    notes_path = write_notes(folder, count)
    import pyarrow.parquet as pq

    notes = pq.read_table(notes_path).to_pylist()
    moderator = Moderator.load()

    def local() -> float:
        started = time.perf_counter()
        moderator.classify_batch(notes)
        return count / (time.perf_counter() - started)

    local_before = local()
    started = time.perf_counter()
    spark = get_session(spark_master)
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - started
    spec = ship_bundle(spark, moderator, InferenceOptions())
    runs = []
    for name in ("cold", "warm"):
        started = time.perf_counter()
        written = score_with_spec(spark, notes_path, folder / f"scores-{name}", spec, partitions=2)
        seconds = time.perf_counter() - started
        assert written == count, (written, count)
        runs.append({"run": name, "seconds": round(seconds, 2), "notes_per_s": round(count / seconds)})
    local_after = local()
    local_mean = (local_before + local_after) / 2
    warm = runs[1]["notes_per_s"]
    return {
        "notes": count,
        "spark_master": spark_master,
        "session_start_s": round(session_s, 1),
        "classify_batch_notes_per_s": [round(local_before), round(local_after)],
        "spark": runs,
        "ratio_warm": round(warm / local_mean, 3),
        "ratio_cold": round(runs[0]["notes_per_s"] / local_mean, 3),
        "load_average": list(os.getloadavg()),
    }


# `redone replay exposure` that prints its own peak RSS (KiB) last on stderr
_CHILD = (
    "import resource, sys; from redone_sdk.replay.cli import main; code = main(sys.argv[1:]); "
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def strict_policy(table: Path, target: Path) -> Path:
    """A policy whose review threshold is each category's median score in the table and whose block threshold
    is its 90th percentile: many notes are actioned whatever texts the log has."""
    import numpy as np
    import pyarrow.parquet as pq

    from redone_sdk.policy import CategoryRule, Policy
    from redone_sdk.scores_table import categories_of

    data = pq.read_table(table)
    rules = {}
    for category in categories_of(data.column_names):
        values = data.column(f"score_{category}").to_numpy()
        rules[category] = CategoryRule(review=float(np.median(values)), block=float(np.quantile(values, 0.9)))
    target.write_text(Policy(name="bench-median", rules=rules).to_json(), encoding="utf-8")
    return target


def _exposure(folder: Path, out: Path, extra: list[str]) -> dict:
    """`redone replay exposure` in a child process: wall seconds and the child's peak RSS."""
    command = [sys.executable, "-c", _CHILD, "exposure"]
    command += ["--impressions", str(folder / "impressions.parquet"), "--notes", str(folder / "notes.parquet")]
    command += ["--labels", str(folder / "labels.parquet"), "--arm", "redone=default", "--out", str(out)]
    command += ["--bootstrap", "200", "--no-cache", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"exposure failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = int(done.stderr.rsplit("PEAK_KIB ", 1)[1].split()[0])
    result = json.loads((out / "exposure.json").read_text(encoding="utf-8"))
    arm = next(a for a in result["arms"] if a["name"] == "redone")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak / 1024, 1),
        "notes_actioned": arm["notes_actioned"],
        "harmful_exposure_rate": arm["harmful_exposure_rate"]["value"],
    }


def bench_replay(folder: Path, impressions: int, notes: int, spark_master: str, *, table_only: bool = False) -> dict:
    sys.path.insert(0, str(ROOT))
    from benchmarks.replay_bench import generate
    from redone_sdk.adapters.spark.job import get_session, score_notes

    log = folder / "log"
    log.mkdir(parents=True)
    info = generate(log, impressions, notes, min(1_000_000, impressions // 10), 28, 0, "dictionary")
    spark = get_session(spark_master)
    started = time.perf_counter()
    summary = score_notes(log / "notes.parquet", log / "scores", spark=spark, partitions=2)
    spark_s = time.perf_counter() - started
    spark.stop()
    policy = ["--policy", f"redone={strict_policy(log / 'scores', folder / 'policy.json')}"]
    scoring = None if table_only else _exposure(log, folder / "scoring", policy)
    table = _exposure(log, folder / "table", [*policy, "--scores", str(log / "scores")])
    assert scoring is None or table["notes_actioned"] == scoring["notes_actioned"], (table, scoring)
    return {
        "impressions": impressions,
        "notes": notes,
        "log_mib": round(info["bytes"] / 2**20),
        "spark_scoring_s": round(spark_s, 1),
        "spark_notes_per_s": round(summary.notes / spark_s),
        "exposure_scoring_itself": scoring,
        "exposure_with_scores_table": table,
        "load_average": list(os.getloadavg()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=10_000, help="Notes scored in the throughput comparison.")
    parser.add_argument("--impressions", type=int, default=10_000_000, help="Impressions of the replay (0: skip).")
    parser.add_argument("--replay-notes", type=int, default=20_000, help="Distinct notes of the replay's log.")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--notes-only", action="store_true", help="Skip the throughput comparison (replay only).")
    parser.add_argument(
        "--table-only", action="store_true", help="Replay only with the scores table (not the arm scoring itself)."
    )
    parser.add_argument("--keep", default=None, help="Work in this folder and keep it (default: a temporary one).")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="spark-bench-"))
    try:
        report = {}
        if not args.notes_only:
            report["scoring"] = bench_scoring(folder / "scoring", args.notes, args.master)
            print(json.dumps(report["scoring"], indent=2), flush=True)
        if args.impressions:
            report["replay"] = bench_replay(
                folder / "replay", args.impressions, args.replay_notes, args.master, table_only=args.table_only
            )
            print(json.dumps(report["replay"], indent=2), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if "scoring" in report:
        ratio = report["scoring"]["ratio_warm"]
        print(f"Spark {args.master} warm / classify_batch: {ratio} ({'meets' if ratio >= 0.8 else 'MISSES'} 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
