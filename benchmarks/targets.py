"""The issue's speed targets, checked against the figures of this run."""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS", "check_targets"]

SUBJECT = "onnx-int8"
# (what, figure: ratio vs eager fp32 | share of the fp32 GEMM ceiling | notes/s, threshold, modes checked). The
# ceiling share is a throughput figure: one note's single short pass cannot fill a GEMM, so batch 1 is not held to it.
TARGETS = (
    ("int8 ONNX ≥ 4× eager fp32", "ratio", 4.0, ("batch1", "batched", "bulk")),
    ("int8 ONNX ≥ 40 % of the fp32 GEMM ceiling", "share", 0.40, ("batched", "bulk")),
    ("int8 ONNX ≥ 300 notes/s", "rate", 300.0, ("batch1", "batched", "bulk")),
)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    speed = results.get("speed")
    if not isinstance(speed, dict) or SUBJECT not in speed.get("results", {}):
        return []
    row = speed["results"][SUBJECT]
    ratios = speed.get("ratio_vs_reference", {}).get(SUBJECT, {})
    out = []
    for name, kind, threshold, modes in TARGETS:
        for mode in modes:
            if kind == "ratio":
                value = ratios.get(mode)
            elif kind == "share":
                value = row[mode].get("share_of_fp32_ceiling")
            else:
                value = row[mode]["notes_per_s"]
            out.append(
                {
                    "target": name,
                    "mode": mode,
                    "threshold": threshold,
                    "value": value,
                    "met": bool(value is not None and value >= threshold),
                }
            )
    return out
