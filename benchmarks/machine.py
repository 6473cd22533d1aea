"""What the figures were measured on: CPU, cores, load, library versions, and GEMM ceilings measured in-process."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["describe_machine", "load_average", "gemm_ceilings", "LIBRARIES"]

LIBRARIES = (
    "redone-sdk",
    "numpy",
    "onnxruntime",
    "onnx",
    "torch",
    "transformers",
    "tokenizers",
    "scikit-learn",
    "alt-profanity-check",
    "pydantic",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _blas() -> str:
    try:
        config = np.show_config(mode="dicts")  # numpy >= 1.26
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy prints instead of returning
        return "unknown"


def describe_machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "usable_cores": affinity,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy_blas": _blas(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def _best_rate(fn: Any, flops: float, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "gflops_best": round(flops / min(times) / 1e9, 1),
        "gflops_median": round(flops / float(np.median(times)) / 1e9, 1),
    }


def _numpy_fp32(n: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    rate = _best_rate(lambda: np.matmul(a, b, out=out), 2.0 * n**3, repeats)
    return {"how": f"numpy.matmul {n}x{n} fp32, best of {repeats}", **rate}


def _torch_bf16(n: int, repeats: int, threads: int | None) -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    slowdown = _bf16_slowdown(torch)
    if slowdown > _BF16_MAX_SLOWDOWN:
        # A CPU without native bf16 (no AVX512-BF16 / AMX) runs it by emulation: a 2048² product then takes
        # minutes, and `redone bench --quick` ran past its tests' 10-minute limit on such a VM.
        return {
            "how": f"torch.matmul {n}x{n} bf16",
            "skipped": f"bf16 runs {slowdown:.0f}x slower than fp32 at {_PROBE_N}² here (no native bf16 kernels)",
        }
    a = torch.randn(n, n).to(torch.bfloat16)
    b = torch.randn(n, n).to(torch.bfloat16)

    def run() -> None:
        with torch.inference_mode():
            torch.matmul(a, b)

    return {"how": f"torch.matmul {n}x{n} bf16, best of {repeats}", **_best_rate(run, 2.0 * n**3, repeats)}


_PROBE_N = 256
_BF16_MAX_SLOWDOWN = 4.0  # native bf16 runs at least as fast as fp32; emulated, 60-100x slower here


def _bf16_slowdown(torch: Any) -> float:
    """How many times slower a small bf16 matmul runs than the same in fp32 (best of 5 each)."""

    def best(dtype: Any) -> float:
        a, b = torch.randn(_PROBE_N, _PROBE_N).to(dtype), torch.randn(_PROBE_N, _PROBE_N).to(dtype)
        times = []
        with torch.inference_mode():
            torch.matmul(a, b)
            for _ in range(5):
                start = time.perf_counter()
                torch.matmul(a, b)
                times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


def _ort_int8(n: int, repeats: int, threads: int | None) -> dict[str, Any] | None:
    """ONNX Runtime's MatMulInteger (u8 x s8 -> i32), the kernel under the dynamic-int8 graph's MatMuls."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 127, size=(n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "gemm_int8",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, size=(n, n), dtype=np.uint8)
    return {
        "how": f"onnxruntime MatMulInteger {n}x{n} u8*s8, best of {repeats} (int8 ops counted as FLOPs)",
        **_best_rate(lambda: session.run(None, {"a": a}), 2.0 * n**3, repeats),
    }


def gemm_ceilings(n: int = 2048, repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Dense GEMM rates on this machine now. `fp32_numpy` is the reference ceiling the shares are taken of."""
    out: dict[str, Any] = {"fp32_numpy": _numpy_fp32(n, repeats)}
    for name, fn in (("bf16_torch", _torch_bf16), ("int8_onnxruntime", _ort_int8)):
        try:
            value = fn(n, repeats, threads)
        except Exception as exc:  # an optional ceiling must not sink the run
            value = {"error": f"{type(exc).__name__}: {exc}"}
        if value is not None:
            out[name] = value
    out["reference"] = "fp32_numpy"
    return out
