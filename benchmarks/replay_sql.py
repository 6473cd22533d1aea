"""Pass 2 of the exposure replay in SQL (DuckDB) against the numpy pass, on the same synthetic log: measured
slower, so the replay keeps the numpy pass and the SQL version lives here, as the measured alternative.

    pip install 'redone-sdk[replay,bench]'   # bench: duckdb
    .venv/bin/python benchmarks/replay_sql.py                               # 10 M impressions, 2 runs each
    .venv/bin/python benchmarks/replay_sql.py --impressions 1000000 --repeats 1   # a quick look

`count_cells_duckdb` computes the same mergeable sums as `exposure_passes.count_cells` (issue #19 point 4:
"the aggregation stays mergeable sums, so it can also run as Spark SQL / DuckDB over the same tables"). Pass 1
stays in Python: it validates the log and hashes users (FNV-1a + splitmix64, which SQL has no cheap form of)
into the spilled columns; those are mapped from disk as Arrow arrays (no copy) and joined in SQL with a
per-note table (note bucket, ground truth, review clock, label weight, each arm's removal rule, segment
codes); one GROUPING SETS aggregate gives the (user bucket, note bucket, day, truth) cells, the per-note
exposures after each review delay and the segment cells in one scan. Counts equal the numpy pass's exactly,
label-weighted sums to float rounding (tests/benchmarks/test_replay_sql.py).

The log is benchmarks/replay_bench.py's (200 k notes, 1 M users, 28 days; a control and two arms with
precomputed scores, one reviewing after 6 h and one after 1 h). Each run is a fresh child process, the two
passes alternated; the DuckDB child swaps `count_cells` for `count_cells_duckdb`. Each reports the wall time of
the whole replay (200 bootstrap replicates) and of pass 2 alone (`pass2_aggregate`), its CPU time (all
threads), its peak RSS (the child's own, from wait4), and the result's numbers, which must be the same for
both (the script fails otherwise). Results: benchmarks/results/replay-sql.md.
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

import numpy as np
import pyarrow as pa

from redone_sdk.replay.exposure_passes import DAY_S, Cells, LoggedExposures, Removal, SegmentCodes, Spill
from redone_sdk.replay.exposure_results import ExposureSettings

_ARROW = {np.int16: pa.int16(), np.int32: pa.int32(), np.int64: pa.int64()}


def _spilled_table(spill: Spill) -> pa.Table:
    """The spilled columns as an Arrow table over memory-mapped files (pages are read as DuckDB scans them)."""
    columns = {}
    for name, dtype in spill.columns:
        if spill.rows:
            mapped = np.memmap(spill.paths[name], dtype=dtype, mode="r", shape=(spill.rows,))
            buffer = pa.py_buffer(mapped)
        else:
            buffer = pa.py_buffer(b"")
        columns[name] = pa.Array.from_buffers(_ARROW[dtype], spill.rows, [None, buffer])
    return pa.table(columns)


def count_cells_duckdb(
    spill: Spill,
    logged: LoggedExposures,
    truth: np.ndarray,
    removal: Removal,
    settings: ExposureSettings,
    note_bucket: np.ndarray,
    segments: SegmentCodes | None = None,
    label_weight: np.ndarray | None = None,
) -> Cells:
    """`count_cells` (same arguments, same result) computed by one DuckDB query over the spilled columns."""
    import duckdb

    segments = segments or SegmentCodes()
    n_notes = len(truth)
    arms = list(removal.block_mask)
    delays = removal.distinct_delays
    start = np.where(removal.review_start == np.iinfo(np.int64).max, 0, removal.review_start)
    note_columns: dict[str, object] = {
        "note": np.arange(n_notes, dtype=np.int32),
        "nb": note_bucket.astype(np.int64),
        "truth": truth.astype(np.int8),
        "start": start.astype(np.int64),
        "w": label_weight.astype(np.float64) if label_weight is not None else np.ones(n_notes, np.float64),
    }
    for i, name in enumerate(arms):
        note_columns[f"block_{i}"] = removal.block_mask[name]
        note_columns[f"review_{i}"] = removal.review_mask[name]

    # segment dimensions: name -> (SQL expression of the level code, number of levels)
    levels: dict[str, tuple[str, int]] = {}
    for k, (dim, (codes, n)) in enumerate(segments.notes.items()):
        note_columns[f"seg_{k}"] = codes.astype(np.int64)
        levels[dim] = (f"n.seg_{k}", n)
    if segments.cohorts or segments.user_cohorts:
        n = segments.user_cohorts or segments.cohorts
        levels["cohort"] = ("s.cohort" if segments.user_cohorts else f"s.bucket % {n}", n)
    tables = {"spill": _spilled_table(spill), "notes": pa.table(note_columns)}
    if segments.surfaces is not None:
        tables["surfaces"] = pa.table(
            {"code": np.arange(len(segments.surfaces), dtype=np.int16), "level": segments.surfaces.astype(np.int64)}
        )
        levels["surface"] = ("sf.level", len(segments.surfaces))

    n_nb, day0, n_days = settings.note_buckets, logged.day0, logged.n_days
    keys = ["pair", "day", "truth", "note"] + [f"lv_{k}" for k in range(len(levels))]
    gone = [
        f"(n.block_{i} OR (n.review_{i} AND s.timestamp >= n.start + {removal.delays[a]}))" for i, a in enumerate(arms)
    ]
    rows_sql = ",\n".join(
        [
            f"s.bucket::BIGINT * {n_nb} + n.nb AS pair",
            f"(s.timestamp - {day0}) // {DAY_S} AS day",
            "n.truth AS truth",
            "s.note AS note",
            "n.w AS w",
            *(f"{expr}::BIGINT AS lv_{k}" for k, (expr, _) in enumerate(levels.values())),
            *(f"{g} AS gone_{i}" for i, g in enumerate(gone)),
            *(f"s.timestamp >= n.start + {d} AS after_{j}" for j, d in enumerate(delays)),
        ]
    )
    surface_join = "JOIN surfaces sf ON s.surface = sf.code" if segments.surfaces is not None else ""
    sets = ["(pair, day, truth)", "(note)"] + [f"(pair, lv_{k}, truth)" for k in range(len(levels))]
    aggregates = ",\n".join(
        [
            f"GROUPING({', '.join(keys)}) AS gid",
            "count(*) AS n",
            "sum(w) AS w",
            *(f"count(*) FILTER (WHERE gone_{i}) AS r_{i}" for i in range(len(arms))),
            *(f"sum(w) FILTER (WHERE gone_{i}) AS wr_{i}" for i in range(len(arms))),
            *(f"count(*) FILTER (WHERE after_{j}) AS a_{j}" for j in range(len(delays))),
        ]
    )
    query = f"""
        WITH rows AS (
            SELECT {rows_sql}
            FROM spill s JOIN notes n ON s.note = n.note {surface_join}
        )
        SELECT {", ".join(keys)}, {aggregates}
        FROM rows
        GROUP BY GROUPING SETS ({", ".join(sets)})
    """
    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        relation = con.sql(query)
        # duckdb 2 names it to_arrow_table; 1.x fetch_arrow_table
        result = (getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table)()
    finally:
        con.close()
    out = {c: result.column(c).fill_null(0).to_numpy(zero_copy_only=False) for c in result.column_names if c in keys}
    sums = {
        c: result.column(c).fill_null(0).to_numpy(zero_copy_only=False)
        for c in result.column_names
        if c not in keys and c != "gid"
    }
    gid = result.column("gid").to_numpy(zero_copy_only=False)

    def grouped_by(*names: str) -> np.ndarray:
        """Rows of the grouping set of exactly these keys (GROUPING's bit is 0 for a key grouped by)."""
        mask = 0
        for position, key in enumerate(reversed(keys)):
            if key not in names:
                mask |= 1 << position
        return gid == mask

    weighted = label_weight is not None
    buckets = settings.user_buckets
    shape = (buckets, n_nb, n_days, 3)
    main = grouped_by("pair", "day", "truth")
    cell = (out["pair"][main] * n_days + out["day"][main]) * 3 + out["truth"][main]

    def scatter(values: np.ndarray, index: np.ndarray, size: int, dtype) -> np.ndarray:
        full = np.zeros(size, dtype=dtype)
        full[index] = values
        return full

    n_cells = buckets * n_nb * n_days * 3
    counts = scatter(sums["n"][main], cell, n_cells, np.int64).reshape(shape)
    removed = {a: scatter(sums[f"r_{i}"][main], cell, n_cells, np.int64).reshape(shape) for i, a in enumerate(arms)}
    weighted_cells = None
    if weighted:
        weighted_cells = (
            scatter(sums["w"][main], cell, n_cells, np.float64).reshape(shape),
            {a: scatter(sums[f"wr_{i}"][main], cell, n_cells, np.float64).reshape(shape) for i, a in enumerate(arms)},
        )
    per_note = grouped_by("note")
    note_rows = out["note"][per_note]
    after_counts = {d: scatter(sums[f"a_{j}"][per_note], note_rows, n_notes, np.int64) for j, d in enumerate(delays)}

    segment_cells = {}
    seg_type = np.float64 if weighted else np.int64
    total, prefix = ("w", "wr_") if weighted else ("n", "r_")
    for k, (dim, (_, n)) in enumerate(levels.items()):
        rows = grouped_by("pair", f"lv_{k}", "truth")
        index = (out["pair"][rows] * n + out[f"lv_{k}"][rows]) * 3 + out["truth"][rows]
        size = buckets * n_nb * n * 3
        seg_shape = (buckets, n_nb, n, 3)
        segment_cells[dim] = (
            scatter(sums[total][rows], index, size, seg_type).reshape(seg_shape),
            {
                a: scatter(sums[f"{prefix}{i}"][rows], index, size, seg_type).reshape(seg_shape)
                for i, a in enumerate(arms)
            },
        )
    return Cells(counts, removed, after_counts, segment_cells, weighted_cells)


def child(folder: Path, engine: str, bootstrap: int) -> None:
    """In a fresh process: one replay, JSON on stdout."""
    from datetime import timedelta

    import pyarrow.parquet as pq

    from redone_sdk.policy import CategoryRule, Policy
    from redone_sdk.replay import Arm, NoteScores, replay_exposure
    from redone_sdk.replay import exposure as exposure_module

    if engine == "duckdb":
        exposure_module.count_cells = count_cells_duckdb  # the replay's pass 2, in SQL

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
        settings=ExposureSettings(bootstrap=bootstrap),
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
