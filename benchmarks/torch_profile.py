"""Where PyTorch eager spends a bulk pass: `torch.profiler` self-CPU time per aten operator, and its threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["torch_operator_profile", "torch_threads"]


def torch_threads() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {}
    return {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
        "onednn": bool(torch.backends.mkldnn.is_available()),
        "parallel_info": torch.__config__.parallel_info().splitlines()[:4],
    }


def torch_operator_profile(backend: Callable, bulk: Sequence[tuple[np.ndarray, ...]], top: int = 10) -> dict[str, Any]:
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep libkineto's start/stop lines off stderr
    from torch.profiler import ProfilerActivity, profile

    for ids, mask in bulk[:2]:
        backend(ids, mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for ids, mask in bulk:
            backend(ids, mask)
    rows = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    ranked = sorted(rows, key=lambda e: -e.self_cpu_time_total)
    shares = {e.key: round(e.self_cpu_time_total / total, 4) for e in ranked[:top]}
    shares["(other)"] = round(sum(e.self_cpu_time_total for e in ranked[top:]) / total, 4)
    return {"aten_self_cpu_ms": round(total / 1e3, 2), "share_by_operator": shares}
