"""ONNX Runtime knobs, graph time only: threads, spinning, graph optimization level, IO binding, and a per-operator
profile. Each variant is its own `InferenceSession` on the same graph and the same pre-padded batches (the bulk
length buckets, and batch-1 inputs). "one_pass" runs one pass at a time on the requested intra-op threads
(ORT_ENABLE_ALL, everything else ONNX Runtime's default: the SDK with `intra_op_threads` set);
"parallel_passes" is the SDK's default on CPU: a one-thread session, as many passes at once as threads."""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "session_variants",
    "operator_profile",
    "optimized_op_counts",
    "padded_batches",
    "batching_choices",
    "two_sessions",
]


def padded_batches(encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> list[tuple[np.ndarray, ...]]:
    from redone_sdk.inference.encoding import length_buckets, pad_batch

    return [pad_batch([encoded[i] for i in b], pad_id) for b in length_buckets([len(e) for e in encoded], batch_size)]


def _session(graph: Path, threads: int | None, **kw: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = kw.get("level", "ORT_ENABLE_ALL")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads:
        options.intra_op_num_threads = threads
    if kw.get("spinning") is False:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if kw.get("profile"):
        options.enable_profiling = True
        options.profile_file_prefix = kw["profile"]
    if kw.get("save_to"):
        options.optimized_model_filepath = kw["save_to"]
        options.log_severity_level = 3  # the "hardware-specific optimizations" warning is expected here
    return ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=8)
def _feeds(graph: Path) -> Any:
    """The SDK's feeds for `graph`; a bundle's graphs all take the prompt-prefix cache beside them, if any."""
    from redone_sdk.inference.onnx_backend import OnnxScorer

    cache = graph.parent / "prefix_cache.npz"
    return OnnxScorer(graph, intra_op_threads=1, prefix_cache=cache if cache.is_file() else None).feeds


def _runner(session: Any, io_binding: bool, graph: Path) -> Any:
    import onnxruntime as ort

    output = session.get_outputs()[0].name
    feeds = _feeds(graph)
    if not io_binding:
        return lambda ids, mask: session.run([output], feeds(ids, mask))[0]

    binding = session.io_binding()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        for name, value in feeds(ids, mask).items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        binding.bind_output(output, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return run


def _seconds(run: Any, batches: Sequence[tuple[np.ndarray, ...]], pool: Any = None) -> float:
    start = time.perf_counter()
    if pool is not None and len(batches) > 1:
        list(pool.map(lambda batch: run(*batch), batches))
    else:
        for ids, mask in batches:
            run(ids, mask)
    return time.perf_counter() - start


VARIANTS: dict[str, dict[str, Any]] = {
    "one_pass": {},
    "parallel_passes": {"threads": 1, "parallel": True},
    "threads=1": {"threads": 1},
    "no_spinning": {"spinning": False},
    "opt=DISABLE_ALL": {"level": "ORT_DISABLE_ALL"},
    "opt=BASIC": {"level": "ORT_ENABLE_BASIC"},
    "opt=EXTENDED": {"level": "ORT_ENABLE_EXTENDED"},
    "io_binding": {"io_binding": True},
}


def session_variants(
    graph: Path,
    bulk: list[tuple[np.ndarray, ...]],
    single: list[tuple[np.ndarray, ...]],
    notes: int,
    *,
    threads: int | None,
    rounds: int,
) -> dict[str, Any]:
    """Graph-only notes/s per variant (median over interleaved rounds) and the ratio to the `one_pass` variant.
    Batch-1 inputs run one after another in every variant (a single note is one pass)."""
    from concurrent.futures import ThreadPoolExecutor

    runners = {}
    pool = ThreadPoolExecutor(max(1, threads or 1))
    for name, kw in VARIANTS.items():
        settings = {k: v for k, v in kw.items() if k not in ("threads", "io_binding", "parallel")}
        session = _session(graph, kw.get("threads", threads), **settings)
        runners[name] = _runner(session, kw.get("io_binding", False), graph)
        _seconds(runners[name], bulk[:2] + single[:4])  # warm-up
    times: dict[str, dict[str, list[float]]] = {n: {"bulk": [], "batch1": []} for n in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name]["bulk"].append(_seconds(run, bulk, pool if VARIANTS[name].get("parallel") else None))
            times[name]["batch1"].append(_seconds(run, single))
    pool.shutdown()
    out: dict[str, Any] = {}
    for name, t in times.items():
        out[name] = {
            "settings": {k: v for k, v in {"threads": threads, **VARIANTS[name]}.items()},
            "bulk_graph_notes_per_s": round(notes / float(np.median(t["bulk"])), 1),
            "batch1_graph_ms_per_note": round(float(np.median(t["batch1"])) / len(single) * 1e3, 3),
        }
    base = out["one_pass"]
    for row in out.values():
        row["bulk_vs_one_pass"] = round(row["bulk_graph_notes_per_s"] / base["bulk_graph_notes_per_s"], 3)
        row["batch1_vs_one_pass"] = round(base["batch1_graph_ms_per_note"] / row["batch1_graph_ms_per_note"], 3)
    return out


def operator_profile(graph: Path, bulk: list[tuple[np.ndarray, ...]], *, threads: int | None, top: int = 12):
    """ONNX Runtime's own profiler over one bulk pass: share of kernel time per operator type."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(graph, threads, profile=os.path.join(tmp, "ort"))
        run = _runner(session, False, graph)
        _seconds(run, bulk)
        trace = session.end_profiling()
        events = json.loads(Path(trace).read_text(encoding="utf-8"))
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_op[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    total = sum(by_op.values()) or 1.0
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    shares = {op: round(us / total, 4) for op, us in ranked[:top]}
    shares["(other)"] = round(sum(us for _, us in ranked[top:]) / total, 4)
    return {"kernel_ms": round(total / 1e3, 2), "share_by_operator": shares}


def optimized_op_counts(graph: Path, levels: Sequence[str] = ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL")) -> dict[str, Any]:
    """Operator counts of the graph as ONNX Runtime runs it, per optimization level (what got fused)."""
    try:
        import onnx
    except ImportError:
        return {"error": "onnx is not installed"}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            target = os.path.join(tmp, f"{level}.onnx")
            _session(graph, 1, level=level, save_to=target)
            counts = Counter(node.op_type for node in onnx.load(target).graph.node)
            out[level] = {"nodes": sum(counts.values()), "ops": dict(counts.most_common())}
    return out


def batching_choices(
    graph: Path, encoded: Sequence[Sequence[int]], pad_id: int, *, batch_size: int, threads: int | None, rounds: int
) -> dict[str, Any]:
    """Graph notes/s for other ways to batch the same notes, with the requested intra-op threads and with 1:
    - `bulk_batch_size=N`: the whole sample in length buckets of N (the `batch_size` option);
    - `arrival_chunks_split_by_length=N`: calls of `batch_size` notes in arrival order (what a stream consumer
      sends), each split into sorted sub-batches of N — N = batch_size is today's behaviour (one padded batch).
    Returns {"threads=T": {plan: notes/s}}."""
    from redone_sdk.inference.encoding import length_buckets, pad_batch

    plans: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for size in sorted({1, 4, 8, 16, batch_size, 2 * batch_size}):
        plans[f"bulk_batch_size={size}"] = padded_batches(encoded, pad_id, size)
    chunks = [list(range(i, min(i + batch_size, len(encoded)))) for i in range(0, len(encoded), batch_size)]
    for sub in sorted({4, 8, 16, batch_size}):
        batches = []
        for chunk in chunks:
            for part in length_buckets([len(encoded[i]) for i in chunk], sub):
                batches.append(pad_batch([encoded[chunk[j]] for j in part], pad_id))
        plans[f"arrival_chunks_split_by_length={sub}"] = batches
    runners = {
        f"threads={t}": _runner(_session(graph, t), False, graph) for t in sorted({threads or 0, 1}, reverse=True)
    }
    for run in runners.values():
        for batches in plans.values():
            _seconds(run, batches[:2])
    times: dict[tuple[str, str], list[float]] = {(r, p): [] for r in runners for p in plans}
    for _ in range(rounds):
        for (runner, plan), values in times.items():
            values.append(_seconds(runners[runner], plans[plan]))
    out: dict[str, Any] = {runner: {} for runner in runners}
    for (runner, plan), values in times.items():
        out[runner][plan] = round(len(encoded) / float(np.median(values)), 1)
    return out


def two_sessions(
    graph: Path, bulk: list[tuple[np.ndarray, ...]], notes: int, *, threads: int | None, rounds: int
) -> dict[str, Any]:
    """Two sessions in one process (a Moderator and a NoteQueryMatcher, or two Moderators, each open their own),
    taking turns batch by batch, against one session doing all the batches; with ONNX Runtime's default thread
    spinning and with it off. Graph notes/s (median of rounds)."""
    plans: dict[str, list[Any]] = {}
    for spinning in (True, False):
        a = _runner(_session(graph, threads, spinning=spinning), False, graph)
        b = _runner(_session(graph, threads, spinning=spinning), False, graph)
        suffix = "" if spinning else ", spinning off"
        plans[f"one session{suffix}"] = [a] * len(bulk)
        plans[f"two sessions taking turns{suffix}"] = [a if i % 2 == 0 else b for i in range(len(bulk))]
    for runs in plans.values():
        for run, (ids, mask) in zip(runs[:2], bulk[:2], strict=False):
            run(ids, mask)
        for run, (ids, mask) in zip(runs[1:3], bulk[:2], strict=False):
            run(ids, mask)
    times: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(rounds):
        for name, runs in plans.items():
            start = time.perf_counter()
            for run, (ids, mask) in zip(runs, bulk, strict=True):
                run(ids, mask)
            times[name].append(time.perf_counter() - start)
    return {name: round(notes / float(np.median(t)), 1) for name, t in times.items()}
