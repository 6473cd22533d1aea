"""Resident memory of a loaded `Moderator` and its peak while classifying, each in a fresh subprocess, and the
bundles' size on disk.

The probe reads RSS from /proc/self/status (VmRSS) after `import redone_sdk`, after `Moderator.load`, and after
a warm-up of 8 notes; a thread samples VmRSS every millisecond while `classify_batch` runs on the notes, and
VmHWM (the kernel's peak RSS of the process) is read at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from redone_sdk.bundle import Bundle

__all__ = ["moderator_memory", "bundle_sizes", "graph_weights", "PROBE"]

PROBE = r"""
import json, sys, threading, time

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")

args = json.loads(sys.argv[1])
out = {"python_baseline_mb": status("VmRSS")}
import redone_sdk
from redone_sdk import Moderator
out["after_import_mb"] = status("VmRSS")
t0 = time.perf_counter()
moderator = Moderator.load(args["bundle"], **args["load"])
out["load_seconds"] = round(time.perf_counter() - t0, 3)
out["loaded_mb"] = status("VmRSS")
texts = json.load(open(args["notes"], encoding="utf-8"))
moderator.classify_batch(texts[:8])
out["after_warmup_mb"] = status("VmRSS")
peak = [0.0]
done = threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], status("VmRSS"))
        time.sleep(0.001)
watcher = threading.Thread(target=watch)
watcher.start()
t0 = time.perf_counter()
moderator.classify_batch(texts)
out["classify_seconds"] = round(time.perf_counter() - t0, 3)
done.set()
watcher.join()
out["peak_while_classifying_mb"] = peak[0]
out["after_classify_mb"] = status("VmRSS")
out["process_peak_vmhwm_mb"] = status("VmHWM")
out["notes"] = len(texts)
print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}))
"""


def moderator_memory(bundle: Path, texts: list[str], load: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run the probe in a fresh interpreter; returns its figures, or {"error": …}."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8", delete=False) as handle:
        json.dump(texts, handle, ensure_ascii=False)
        notes = handle.name
    try:
        args = json.dumps({"bundle": str(bundle), "notes": notes, "load": load})
        done = subprocess.run(
            [sys.executable, "-c", PROBE, args], capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        Path(notes).unlink(missing_ok=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["model_mb"] = round(result["loaded_mb"] - result["after_import_mb"], 1)
    result["classify_extra_mb"] = round(result["peak_while_classifying_mb"] - result["after_warmup_mb"], 1)
    return {"bundle": str(bundle), "load": load, **result}


def _mb(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**20, 3)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 3)


def bundle_sizes(bundle: Path) -> dict[str, Any]:
    """MB on disk: the whole directory and each graph / checkpoint / tokenizer."""
    loaded = Bundle.load(bundle, verify=False)
    out: dict[str, Any] = {"path": str(loaded.path), "total_mb": _mb(loaded.path)}
    for precision, graph in sorted(loaded.manifest.graphs.items()):
        out[f"graph_{precision}_mb"] = _mb(loaded.path / graph.file)
        out[f"graph_{precision}_weights"] = graph_weights(loaded.path / graph.file)
    if loaded.manifest.checkpoint:
        out["checkpoint_mb"] = _mb(loaded.path / loaded.manifest.checkpoint)
    generation = getattr(loaded.manifest, "generation", None)
    if generation:
        out["generation_graph_mb"] = _mb(loaded.path / generation)
    out["tokenizer_mb"] = _mb(loaded.path / loaded.manifest.tokenizer.file)
    return out


def graph_weights(graph: Path) -> dict[str, Any]:
    """MB of the graph's initializers by element type, and the largest one (what int8 left in float)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return {"error": "onnx is not installed"}
    model = onnx.load(str(graph))
    by_type: dict[str, float] = {}
    largest = ("", 0, ())
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        by_type[str(array.dtype)] = by_type.get(str(array.dtype), 0.0) + array.nbytes / 2**20
        if array.nbytes > largest[1]:
            largest = (tensor.name, array.nbytes, tuple(array.shape))
    return {
        "initializer_mb_by_dtype": {k: round(v, 3) for k, v in sorted(by_type.items())},
        "largest": {"name": largest[0], "mb": round(largest[1] / 2**20, 3), "shape": list(largest[2])},
    }
