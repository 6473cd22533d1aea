"""Everything the speed table times, behind one interface: `classify(texts)` plus what was measured."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redone_sdk.bundle import Bundle

__all__ = ["Contender", "SDK_BACKENDS", "REFERENCE", "load_sdk_contenders", "peer_contender"]

REFERENCE = "torch-eager-fp32"

# name -> (Moderator.load keyword arguments, bundle files it reads besides tokenizer/policy/manifest)
SDK_BACKENDS: dict[str, tuple[dict[str, Any], str]] = {
    "torch-eager-fp32": ({"backend": "torch", "torch_dtype": "float32"}, "checkpoint/model.safetensors"),
    "torch-bf16": ({"backend": "torch", "torch_dtype": "bfloat16"}, "checkpoint/model.safetensors"),
    "onnx-fp32": ({"backend": "onnx", "precision": "fp32"}, "scoring.fp32.onnx"),
    "onnx-int8": ({"backend": "onnx", "precision": "int8"}, "scoring.int8.onnx"),
}


@dataclass
class Contender:
    name: str
    # "redone" (the SDK, through Moderator.classify_batch), "peer", or "redone (shipped bundle)": the shipped model
    # timed beside a stand-in bundle-full's rows (no FLOPs, ratio or agreement: another model than the reference)
    kind: str
    classify: Callable[[Sequence[str]], Any]
    files: list[str]
    detail: dict[str, Any] = field(default_factory=dict)
    moderator: Any = None  # the Moderator, for SDK contenders

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "files": self.files, **self.detail}


def load_sdk_contenders(
    bundle_full: Path, *, batch_size: int, threads: int | None, tuned_batch_size: int | None = None
) -> tuple[list[Contender], dict[str, str]]:
    """The four backends of one bundle-full, loaded the way users load them; (loaded, {name: why not}).

    `threads` cores each: PyTorch as intra-op threads, ONNX Runtime as that many passes at once (the SDK's
    default on CPU). `onnx-int8 (one pass at a time)` is the same graph run the other way (one pass on
    `threads` intra-op threads, the SDK default before passes ran in parallel), and `tuned_batch_size` adds
    `onnx-int8 (batch_size=N)`: the same graph with a different `Moderator.load` option."""
    from redone_sdk import Moderator

    bundle = Bundle.load(bundle_full)
    plans = {name: (kwargs, file, batch_size) for name, (kwargs, file) in SDK_BACKENDS.items()}
    int8_kwargs, int8_file = SDK_BACKENDS["onnx-int8"]
    if threads and threads > 1:
        plans["onnx-int8 (one pass at a time)"] = ({**int8_kwargs, "workers": 1}, int8_file, batch_size)
    if tuned_batch_size and tuned_batch_size != batch_size:
        plans[f"onnx-int8 (batch_size={tuned_batch_size})"] = (int8_kwargs, int8_file, tuned_batch_size)
    loaded, missing = [], {}
    for name, (kwargs, file, size) in plans.items():
        started = time.perf_counter()
        kwargs = {**kwargs, "batch_size": size}
        if kwargs["backend"] == "torch" or "workers" in kwargs:
            kwargs["intra_op_threads"] = threads
        else:
            kwargs["workers"] = threads
        try:
            moderator = Moderator.load(bundle, **kwargs)
        except Exception as exc:  # a missing extra or graph: shown as unavailable, not dropped
            missing[name] = f"{type(exc).__name__}: {exc}"
            continue
        detail = {
            "bundle": str(bundle.path),
            "load_kwargs": kwargs,
            "load_seconds": round(time.perf_counter() - started, 2),
        }
        loaded.append(
            Contender(
                name=name,
                kind="redone",
                classify=moderator.classify_batch,
                files=[str(bundle.path / file)],
                detail=detail,
                moderator=moderator,
            )
        )
    return loaded, missing


def peer_contender(peer: Any, files: list[str] | None = None) -> Contender:
    return Contender(
        name=peer.name,
        kind="peer",
        classify=peer.predict,
        files=files or [],
        detail={"languages": list(peer.languages) if peer.languages else "any"},
    )
