"""ONNX Runtime scoring backend, with execution providers chosen TensorRT → CUDA → CPU among those present."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.errors import BackendUnavailableError, BundleFormatError

__all__ = ["OnnxScorer", "PROVIDER_PREFERENCE", "choose_providers", "shared_scorer"]

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The requested providers (or the preferred order) restricted to those this onnxruntime build has."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailableError("onnxruntime is not installed: pip install redone-sdk") from exc
    available = set(ort.get_available_providers())
    wanted = list(requested) if requested else list(PROVIDER_PREFERENCE)
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise BackendUnavailableError(
            f"none of the providers {wanted} is available; this build has {sorted(available)}"
        )
    return chosen


class OnnxScorer:
    """Runs a bundle's scoring graph. Thread counts default to ONNX Runtime's own choice."""

    name = "onnx"

    def __init__(
        self,
        graph: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads:
            options.inter_op_num_threads = inter_op_threads
        if allow_spinning is not None:
            flag = "1" if allow_spinning else "0"
            options.add_session_config_entry("session.intra_op.allow_spinning", flag)
            options.add_session_config_entry("session.inter_op.allow_spinning", flag)
        self.providers = choose_providers(providers)
        provider_options: list[dict[str, Any]] = []
        for provider in self.providers:
            if provider == "TensorrtExecutionProvider":
                cache = graph.parent / ".trt-cache"
                provider_options.append(
                    {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
                )
            else:
                provider_options.append({})
        try:
            self._session = ort.InferenceSession(
                str(graph), sess_options=options, providers=self.providers, provider_options=provider_options
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors on bad graphs
            raise BundleFormatError(f"ONNX Runtime cannot load {graph.name}: {exc}") from None
        names = [i.name for i in self._session.get_inputs()]
        if sorted(names) != ["attention_mask", "input_ids"]:
            raise BundleFormatError(f"{graph.name} takes inputs {names}, expected input_ids and attention_mask")
        self._output = self._session.get_outputs()[0].name

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run([self._output], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(logits, dtype=np.float32)


_SHARED: weakref.WeakValueDictionary[tuple[Any, ...], OnnxScorer] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_scorer(
    graph: Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    allow_spinning: bool | None = None,
) -> OnnxScorer:
    """One scorer per (graph file, options) in this process, alive while anything uses it.

    ONNX Runtime sessions are safe to run from several threads; two sessions on the same cores instead compete
    for them (each keeps its own spinning thread pool), so a Moderator and a matcher on one bundle share.
    """
    stat = graph.stat()
    key = (
        str(graph.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        tuple(providers) if providers else None,
        intra_op_threads,
        inter_op_threads,
        allow_spinning,
    )
    with _SHARED_LOCK:
        scorer = _SHARED.get(key)
        if scorer is None:
            scorer = OnnxScorer(
                graph,
                providers=providers,
                intra_op_threads=intra_op_threads,
                inter_op_threads=inter_op_threads,
                allow_spinning=allow_spinning,
            )
            _SHARED[key] = scorer
        return scorer
