"""Scale of the search replay: wall time and peak memory of `replay_search` on a synthetic log of N page views.

Writes N page views (10 notes each, 20,000 queries with Zipf traffic, clicks from a PBM) to Parquet, then
replays them in a fresh process per setting with a cheap scorer (the model's cost is not measured here) and
reports the wall time of each step and the child's peak resident memory (`ru_maxrss`). Run:
`python -m benchmarks.replay_search_bench [--page-views 1000000] [--bootstrap 200]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
from redone_sdk.replay import SearchSettings, replay_search
folder, settings = sys.argv[1], json.loads(sys.argv[2])
score = lambda pairs: [int(n.note_id[1:]) % 97 / 97.0 for _, n in pairs]
t = time.perf_counter()
r = replay_search(folder + "/sessions.parquet", folder + "/notes.parquet", score, settings=SearchSettings(**settings))
print(json.dumps({"wall_s": time.perf_counter() - t, "timings": r.timings_s, "refit": r.bootstrap_refit,
                  "sessions": r.sessions, "pairs": r.pairs, "change": r.change.fmt(percent=True),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_log(folder: Path, page_views: int, queries: int = 20_000, page: int = 10, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    candidates = rng.integers(0, 200_000, size=(queries, page + 4))  # each query's candidate notes
    weights = np.arange(1, queries + 1, dtype=np.float64) ** -1.0
    theta = 1.0 / np.arange(1, page + 1) ** 0.8
    notes_written = np.unique(candidates)
    pq.write_table(
        pa.table({"note_id": [f"n{i}" for i in notes_written], "content": [f"note {i}" for i in notes_written]}),
        folder / "notes.parquet",
    )
    writer = None
    for start in range(0, page_views, 100_000):
        n = min(100_000, page_views - start)
        q = rng.choice(queries, size=n, p=weights / weights.sum())
        order = np.argsort(rng.random((n, page + 4)), axis=1)[:, :page]
        shown = np.take_along_axis(candidates[q], order, axis=1)
        clicks = (rng.random((n, page)) < theta * 0.2).astype(np.int8)
        table = pa.table(
            {
                "session_id": [f"s{start + i}" for i in range(n)],
                "query": [f"query {x}" for x in q],
                "notes": [[f"n{v}" for v in row] for row in shown.tolist()],
                "clicks": clicks.tolist(),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(folder / "sessions.parquet", table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-views", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_log(Path(tmp), args.page_views)
        print(f"wrote {args.page_views:,} page views in {time.perf_counter() - t:.0f} s", flush=True)
        print("| setting | wall s | peak RSS MiB | steps (s) |")
        print("|---|---|---|---|")
        for name, settings in (
            ("click model held fixed", {"bootstrap": args.bootstrap, "refit_model": False}),
            ("refitted (auto: linearized past one chunk)", {"bootstrap": args.bootstrap}),
        ):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, json.dumps(settings)], capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            steps = ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items() if k != "total")
            print(f"| {name} | {result['wall_s']:.1f} | {result['peak_mib']:.0f} | {steps} |", flush=True)


if __name__ == "__main__":
    main()
