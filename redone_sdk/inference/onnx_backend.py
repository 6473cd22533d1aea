"""ONNX Runtime scoring backend, with execution providers chosen TensorRT → CUDA → CPU among those present."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.errors import BackendUnavailableError, BundleFormatError
from redone_sdk.inference.backend import BackendInfo

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
    """Runs a bundle's scoring graph. Thread counts default to ONNX Runtime's own choice; `workers` says how many
    passes the caller may run at once from its own threads (the session is thread-safe). `precision` names the
    graph's precision in `info` (default: the graph's file name)."""

    name = "onnx"

    def __init__(
        self,
        graph: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool | None = None,
        prefix_cache: Path | None = None,
        workers: int = 1,
        precision: str | None = None,
        verified: Any = None,
    ) -> None:
        import onnxruntime as ort

        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
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
                verified.prepare(options) if verified is not None else str(graph),
                sess_options=options,
                providers=self.providers,
                provider_options=provider_options,
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors on bad graphs
            raise BundleFormatError(f"ONNX Runtime cannot load {graph.name}: {exc}") from None
        names = [i.name for i in self._session.get_inputs()]
        layers = sum(name.startswith("past_key.") for name in names)
        expected = {"input_ids", "attention_mask"} | {
            f"past_{kv}.{i}" for kv in ("key", "value") for i in range(layers)
        }
        if set(names) != expected or len(names) != len(expected):
            raise BundleFormatError(
                f"{graph.name} takes inputs {names}, expected input_ids, attention_mask and, for a graph with a "
                "prompt-prefix cache, past_key.<i> and past_value.<i> for each layer"
            )
        self._output = self._session.get_outputs()[0].name
        in_use = tuple(self._session.get_providers())
        self.info = BackendInfo(name=self.name, precision=precision or graph.name, providers=in_use)
        self._prefixes: list[_CachedPrefix] = []
        self._no_prefix: dict[str, np.ndarray] = {}
        if layers:
            if prefix_cache is None:
                raise BundleFormatError(f"{graph.name} takes a prompt-prefix cache, but the bundle names none")
            self._prefixes = _load_prefix_cache(prefix_cache, layers)
            first = self._prefixes[0].feeds
            self._no_prefix = {  # a zero-length prefix: the graph then scores whole prompts
                name: np.zeros((*value.shape[:2], 0, value.shape[3]), np.float32) for name, value in first.items()
            }
        elif prefix_cache is not None:
            raise BundleFormatError(f"the bundle has a prompt-prefix cache, but {graph.name} takes none")

    def feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for right-padded prompts: with a prefix cache, a cached prefix that every row
        starts with is cut off the ids and fed as keys and values instead."""
        if not self._no_prefix:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        for prefix in self._prefixes:  # longest first
            n = len(prefix.ids)
            if (
                input_ids.shape[1] > n
                and attention_mask[:, n].all()  # every row has a token after the prefix: its last one is read
                and (input_ids[:, :n] == prefix.ids).all()
            ):
                return {"input_ids": input_ids[:, n:], "attention_mask": attention_mask[:, n:], **prefix.feeds}
        return {"input_ids": input_ids, "attention_mask": attention_mask, **self._no_prefix}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run([self._output], self.feeds(input_ids, attention_mask))
        return np.asarray(logits, dtype=np.float32)

    def executor(self) -> ThreadPoolExecutor:
        """`workers` threads that run passes of this session side by side, for every engine that shares it;
        made on first use (and again in a forked child, which has none of its parent's threads)."""
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="redone-pass")
                self._pool_pid = os.getpid()
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool


@dataclass(frozen=True)
class _CachedPrefix:
    ids: np.ndarray  # (prefix,) int64
    feeds: dict[str, np.ndarray]  # past_key.<i> / past_value.<i>: (1, kv_heads, prefix, head_dim) float32


def _load_prefix_cache(path: Path, layers: int) -> list[_CachedPrefix]:
    """Read and check a prefix cache (`<name>.ids`, `<name>.key.<i>`, `<name>.value.<i>`); longest prefix first."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise BundleFormatError(f"cannot read the prompt-prefix cache {path.name}: {exc}") from None
    prefixes = []
    for name in sorted(key[: -len(".ids")] for key in arrays if key.endswith(".ids")):
        ids = arrays[f"{name}.ids"]
        feeds: dict[str, np.ndarray] = {}
        for i in range(layers):
            for kv in ("key", "value"):
                value = arrays.get(f"{name}.{kv}.{i}")
                if value is None or value.dtype != np.float32 or value.ndim != 4 or value.shape[0] != 1:
                    raise BundleFormatError(
                        f"prompt-prefix cache {path.name}: {name}.{kv}.{i} is missing or not float32 (1, heads, n, dim)"
                    )
                if value.shape[2] != len(ids) or ids.ndim != 1 or ids.dtype != np.int64:
                    raise BundleFormatError(f"prompt-prefix cache {path.name}: {name}.{kv}.{i} does not fit {name}.ids")
                feeds[f"past_{kv}.{i}"] = value
        prefixes.append(_CachedPrefix(ids=ids, feeds=feeds))
    if not prefixes:
        raise BundleFormatError(f"prompt-prefix cache {path.name} holds no prefix")
    return sorted(prefixes, key=lambda p: -len(p.ids))


_SHARED: weakref.WeakValueDictionary[tuple[Any, ...], OnnxScorer] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_scorer(
    graph: Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    allow_spinning: bool | None = None,
    prefix_cache: Path | None = None,
    workers: int = 1,
    precision: str | None = None,
    verified: Any = None,
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
        str(prefix_cache.resolve()) if prefix_cache else None,
        workers,
        precision,
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
                prefix_cache=prefix_cache,
                workers=workers,
                precision=precision,
                verified=verified,
            )
            _SHARED[key] = scorer
        return scorer
