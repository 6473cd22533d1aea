"""Notes/s and per-note latency of every contender on the same notes, interleaved round by round.

Modes, all through the public API (`Moderator.classify_batch`, or a peer's `predict`):
- `batch1`: one note per call; a note's latency is its call.
- `batched`: calls of `batch_size` notes in arrival order (one padded batch each); a note's latency is its call.
- `bulk`: the whole sample in one call (the SDK sorts it into length buckets of `batch_size`); throughput only.
Each round runs every contender once per mode, in turn, so slow drifts of the shared machine hit all of them
alike. notes/s is the median over rounds; latency percentiles pool every round.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .contenders import REFERENCE, Contender

__all__ = ["MODES", "CEILING_OF", "measure_speed", "agreement_with_reference", "add_ceiling_shares"]

# which measured GEMM ceiling matches each SDK backend's arithmetic
CEILING_OF = {"torch-eager-fp32": "fp32_numpy", "torch-bf16": "bf16_torch", "onnx-fp32": "fp32_numpy"}

MODES = ("batch1", "batched", "bulk")


def _time(call: Any, texts: Sequence[str]) -> float:
    start = time.perf_counter()
    call(texts)
    return time.perf_counter() - start


def _one_round(contender: Contender, texts: list[str], batch1_notes: int, batch_size: int) -> dict[str, Any]:
    call = contender.classify
    single = [_time(call, [t]) for t in texts[:batch1_notes]]
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    chunk_times = [_time(call, chunk) for chunk in chunks]
    per_note = [t for t, chunk in zip(chunk_times, chunks, strict=True) for _ in chunk]
    return {
        "batch1": {"seconds": sum(single), "latencies": single, "notes": len(single)},
        "batched": {"seconds": sum(chunk_times), "latencies": per_note, "notes": len(texts)},
        "bulk": {"seconds": _time(call, texts), "latencies": [], "notes": len(texts)},
    }


def _summary(rounds: list[dict[str, Any]], flops: float | None) -> dict[str, Any]:
    rates = [r["notes"] / r["seconds"] for r in rounds]
    pooled = np.array([x for r in rounds for x in r["latencies"]]) * 1e3
    median_seconds = float(np.median([r["seconds"] for r in rounds]))
    out: dict[str, Any] = {
        "notes": rounds[0]["notes"],
        "notes_per_s": round(float(np.median(rates)), 1),
        "notes_per_s_rounds": [round(x, 1) for x in rates],
    }
    if pooled.size:
        out["latency_ms"] = {
            "p50": round(float(np.percentile(pooled, 50)), 3),
            "p99": round(float(np.percentile(pooled, 99)), 3),
            "mean": round(float(pooled.mean()), 3),
        }
    if flops is not None:
        gflops = flops / median_seconds / 1e9
        out["useful_gflops"] = round(gflops, 2)
    return out


def measure_speed(
    contenders: Sequence[Contender],
    texts: list[str],
    *,
    batch_size: int,
    batch1_notes: int,
    rounds: int,
    flops_of: Any = None,
) -> dict[str, Any]:
    """{contender: {mode: summary}, "_ratios": {contender: {mode: x vs REFERENCE}}}."""
    for contender in contenders:  # warm-up: one untimed round (every shape, thread pools, arenas, lazy init)
        _one_round(contender, texts, batch1_notes, batch_size)
        time.sleep(0.2)
    raw: dict[str, list[dict[str, Any]]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            raw[contender.name].append(_one_round(contender, texts, batch1_notes, batch_size))
            time.sleep(0.2)  # let ONNX Runtime's spinning workers go idle before the next contender
    flops = {
        "batch1": flops_of(texts[:batch1_notes]) if flops_of else None,
        "batched": flops_of(texts) if flops_of else None,
        "bulk": flops_of(texts) if flops_of else None,
    }
    out: dict[str, Any] = {}
    for contender in contenders:
        uses_model = contender.kind == "redone"
        out[contender.name] = {
            mode: _summary([r[mode] for r in raw[contender.name]], flops[mode] if uses_model else None)
            for mode in MODES
        }
    reference = out.get(REFERENCE)
    out["_ratios"] = {
        name: {
            mode: round(values[mode]["notes_per_s"] / reference[mode]["notes_per_s"], 2) if reference else None
            for mode in MODES
        }
        for name, values in out.items()
        if not name.startswith("_")
    }
    return out


def agreement_with_reference(contenders: Sequence[Contender], texts: list[str]) -> dict[str, Any]:
    """Top label (safe included) and largest probability difference of each SDK backend vs eager fp32."""
    tables = {}
    for contender in contenders:
        if contender.kind != "redone":
            continue
        results = contender.classify(texts)
        rows = []
        for r in results:
            scores = dict(r.scores)
            scores["safe"] = max(0.0, 1.0 - sum(r.scores.values()))
            rows.append([scores[k] for k in sorted(scores)])
        tables[contender.name] = np.array(rows)
    if REFERENCE not in tables:
        return {}
    ref = tables[REFERENCE]
    return {
        name: {
            "top_label_agreement": round(float((probs.argmax(1) == ref.argmax(1)).mean()), 4),
            "max_abs_prob_diff": round(float(np.abs(probs - ref).max()), 5),
        }
        for name, probs in tables.items()
        if name != REFERENCE
    }


def add_ceiling_shares(speed: dict[str, Any], *ceilings: dict[str, Any]) -> dict[str, float]:
    """Add `share_of_fp32_ceiling` and `share_of_own_ceiling` (int8 → ORT MatMulInteger, bf16 → torch bf16,
    fp32 → numpy) to every SDK row. The ceiling of each kind is the best of the measurements passed (before and
    after the speed section): a ceiling is what the machine can do, and noise only ever lowers it."""
    best: dict[str, float] = {}
    for measured in ceilings:
        for kind, value in (measured or {}).items():
            if isinstance(value, dict) and "gflops_best" in value:
                best[kind] = max(best.get(kind, 0.0), float(value["gflops_best"]))
    fp32 = best.get("fp32_numpy")
    for name, modes in speed.get("results", {}).items():
        own = best.get(CEILING_OF.get(name, "int8_onnxruntime" if "int8" in name else "fp32_numpy"))
        for row in modes.values():
            if "useful_gflops" not in row:
                continue
            if fp32:
                row["share_of_fp32_ceiling"] = round(row["useful_gflops"] / fp32, 4)
            if own:
                row["share_of_own_ceiling"] = round(row["useful_gflops"] / own, 4)
    speed["ceilings_used_gflops"] = best
    return best
