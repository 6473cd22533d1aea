"""Coverage of the search replay's intervals on simulated logs with a known click model.

Each trial simulates a search log from a PBM (examination 1/(k+1)^0.8, attractiveness by grade), replays it
with a scorer whose scores are known (so the true change of its ranking is known), and records whether
each interval holds the true change: the click model's with the model refitted per bootstrap replicate (the
default), the same with the model held fixed (the old interval), and the model-free replay (IPS).

Logs: "dense" (50 queries, even traffic) with a matcher that knows the grades or errs by about a grade,
and "sparse long tail" (600 queries, Zipf traffic: most queries have one or two page views) with the erring
matcher, whose bins then mislead the attractiveness prior of rarely seen pairs.
Run: `python -m benchmarks.replay_search_coverage [--trials 40]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from redone_sdk.replay import SearchSettings, replay_search

THETA = 1.0 / np.arange(1, 7) ** 0.8
ALPHA = np.array([0.03, 0.15, 0.4, 0.7])
CONFIGS = {
    "dense, exact matcher": {"queries": 50, "sessions": 3000, "zipf": 0.0, "noise": 1.5, "matcher_noise": 0.0},
    "dense, noisy matcher": {"queries": 50, "sessions": 3000, "zipf": 0.0, "noise": 1.5, "matcher_noise": 1.0},
    "sparse long tail, noisy matcher": {
        "queries": 600,
        "sessions": 1500,
        "zipf": 1.1,
        "noise": 1.5,
        "matcher_noise": 1.0,
    },
}


def simulate(folder: Path, seed: int, queries: int, sessions: int, zipf: float, noise: float, matcher_noise: float):
    rng = np.random.default_rng(seed)
    page = len(THETA)
    grades = rng.integers(0, 4, size=(queries, page))
    # The matcher's score: the grade plus its own error (in grades), fixed per pair; the new ranking sorts by it.
    score = (grades + rng.normal(0, matcher_noise, size=grades.shape)) / 3 - np.arange(page) * 1e-6
    weights = np.arange(1, queries + 1, dtype=np.float64) ** -zipf
    picks = rng.choice(queries, size=sessions, p=weights / weights.sum())
    rows, logged, new = [], [], []
    for s, q in enumerate(picks):
        order = np.argsort(-(grades[q] + rng.normal(0, noise, page)), kind="stable")
        attract = ALPHA[grades[q, order]]
        clicks = (rng.random(page) < THETA * attract).astype(int)
        rows.append(
            {"session_id": f"s{s}", "query": f"q{q}", "notes": [f"q{q}n{k}" for k in order], "clicks": clicks.tolist()}
        )
        logged.append(1 - np.prod(1 - THETA * attract))
        new.append(1 - np.prod(1 - THETA * ALPHA[grades[q, np.argsort(-score[q], kind="stable")]]))
    notes = [{"note_id": f"q{q}n{k}", "content": f"note {k} of query {q}"} for q in range(queries) for k in range(page)]
    (folder / "sessions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in notes))

    def scorer(pairs):
        return [score[int(q[1:]), int(n.note_id.rsplit("n", 1)[1])] for q, n in pairs]

    return scorer, float(np.mean(new) / np.mean(logged) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    print(f"trials {args.trials}, bootstrap {args.bootstrap}, 95 % intervals")
    print("| log | interval | coverage | mean width | mean bias |")
    print("|---|---|---|---|---|")
    for name, config in CONFIGS.items():
        hits = {"click model, refitted": [], "click model, fixed": [], "replay (IPS)": []}
        widths = {k: [] for k in hits}
        errors = {k: [] for k in hits}
        started = time.perf_counter()
        for trial in range(args.trials):
            with tempfile.TemporaryDirectory() as tmp:
                scorer, truth = simulate(Path(tmp), trial, **config)
                r = replay_search(
                    Path(tmp) / "sessions.jsonl",
                    Path(tmp) / "notes.jsonl",
                    scorer,
                    settings=SearchSettings(bootstrap=args.bootstrap, seed=trial),
                )
            for key, est in (
                ("click model, refitted", r.change),
                ("click model, fixed", r.change_model_fixed),
                ("replay (IPS)", r.ips.change),
            ):
                if est.lo is None or est.hi is None:
                    continue
                hits[key].append(est.lo <= truth <= est.hi)
                widths[key].append(est.hi - est.lo)
                errors[key].append(est.value - truth)
        for key in hits:
            n = len(hits[key])
            print(
                f"| {name} | {key} | {np.mean(hits[key]):.0%} ({sum(hits[key])}/{n}) | "
                f"{np.mean(widths[key]) * 100:.2f} pp | {np.mean(errors[key]) * 100:+.2f} pp |"
            )
        print(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->")


if __name__ == "__main__":
    main()
