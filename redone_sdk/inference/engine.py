"""One task of a bundle, ready to score: prompt encoding, length-bucketed batches, a backend, a softmax."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.errors import BackendUnavailableError, BundleFormatError
from redone_sdk.inference.backend import BackendInfo, ScoringBackend
from redone_sdk.inference.encoding import PromptEncoder, length_buckets, pad_batch
from redone_sdk.inference.options import InferenceOptions

__all__ = ["TaskEngine", "label_offset_vector", "label_probabilities", "open_backend", "usable_cores"]


def open_backend(bundle: Bundle, options: InferenceOptions) -> ScoringBackend:
    """Pick the backend: ONNX when the bundle has a graph (preferring `default_graph`), else PyTorch."""
    manifest = bundle.manifest
    backend = options.backend
    if backend == "auto":
        backend = "onnx" if manifest.graphs else "torch"
    if backend == "onnx":
        if not manifest.graphs:
            raise BackendUnavailableError(f"bundle {bundle.name} has no ONNX graph; use backend='torch'")
        key = options.precision or manifest.default_graph or sorted(manifest.graphs)[0]
        if key not in manifest.graphs:
            raise BackendUnavailableError(f"bundle {bundle.name} has no {key} graph; it has {sorted(manifest.graphs)}")
        from redone_sdk.inference.onnx_backend import choose_providers, shared_scorer

        spec = manifest.graphs[key]
        workers = options.workers
        if workers is None:  # whole passes in parallel on CPU, unless the caller chose intra-op threads
            on_cpu = choose_providers(options.providers)[0] == "CPUExecutionProvider"
            workers = usable_cores() if on_cpu and options.intra_op_threads is None else 1
        intra_op_threads = options.intra_op_threads or (1 if workers > 1 else None)
        # ONNX Runtime gets the graph's verified bytes (and its external data's), once onnx_backend takes them
        verified = {"verified": bundle.verified_graph(spec.file)} if _takes_verified(shared_scorer) else {}
        return shared_scorer(
            bundle.file(spec.file),
            **verified,
            prefix_cache=bundle.file(spec.prefix_cache) if spec.prefix_cache else None,
            providers=options.providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=options.inter_op_threads,
            allow_spinning=options.allow_spinning,
            workers=workers,
            precision=spec.precision,
        )
    if manifest.checkpoint is None:
        raise BackendUnavailableError(f"bundle {bundle.name} has no checkpoint for the PyTorch backend")
    from redone_sdk.inference.torch_backend import TorchScorer

    token_ids = _label_token_ids(bundle)
    return TorchScorer(
        bundle.path / manifest.checkpoint, token_ids, dtype=options.torch_dtype, threads=options.intra_op_threads
    )


def _takes_verified(scorer_factory: object) -> bool:
    """Whether `shared_scorer` accepts `verified=` (a `VerifiedGraph`) to build its session from memory."""
    import inspect

    return "verified" in inspect.signature(scorer_factory).parameters  # type: ignore[arg-type]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _label_token_ids(bundle: Bundle) -> list[int]:
    """The vocabulary id behind each logit column, shared by every task of the bundle."""
    manifest = bundle.manifest
    if manifest.graphs:
        return list(next(iter(manifest.graphs.values())).label_token_ids)
    columns: dict[int, int] = {}
    for task in manifest.tasks.values():
        for label in task.labels:
            columns[label.column] = label.token_id
    if sorted(columns) != list(range(len(columns))):
        raise BundleFormatError(f"bundle {bundle.name}: label columns are not 0..n-1")
    return [columns[i] for i in range(len(columns))]


def label_probabilities(
    logits: np.ndarray, columns: np.ndarray, temperature: float = 1.0, offsets: np.ndarray | None = None
) -> np.ndarray:
    """Softmax over a task's label columns of the backend's logits [batch, all labels], in float64, of the logits
    divided by `temperature` (the task's `TaskSpec.temperature`; 1.0 leaves them as they are) plus `offsets`, one
    per chosen column (the task's `label_offsets`; None adds nothing)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    chosen = logits[:, columns].astype(np.float64)
    if temperature != 1.0:
        chosen /= temperature
    if offsets is not None:
        chosen += offsets
    with np.errstate(invalid="ignore"):  # non-finite logits give NaN rows, which the callers refuse (fail closed)
        chosen -= chosen.max(axis=1, keepdims=True)
        exp = np.exp(chosen)
        return exp / exp.sum(axis=1, keepdims=True)


def label_offset_vector(task: TaskSpec) -> np.ndarray | None:
    """The task's `label_offsets` in its label order (0 for a label not named); None when it has none."""
    if not task.label_offsets:
        return None
    return np.array([task.label_offsets.get(name, 0.0) for name in task.label_names], dtype=np.float64)


class TaskEngine:
    """Scores records (field name -> text) for one task and returns label probabilities."""

    def __init__(self, bundle: Bundle, task_name: str, backend: ScoringBackend, batch_size: int) -> None:
        self.task: TaskSpec = bundle.manifest.tasks[task_name]
        name = bundle.manifest.tokenizer.file  # built from the verified bytes: a file changed since is never read
        tokenizer = load_tokenizer(bundle.read_verified(name), where=str(bundle.file(name)))
        self.encoder = PromptEncoder(tokenizer, self.task, bundle.manifest.tokenizer.special_tokens)
        self._pad_id = bundle.manifest.tokenizer.pad_token_id
        self.columns = np.array([label.column for label in self.task.labels])
        self.temperature: float = self.task.temperature  # calibration: logits / temperature before the softmax
        self.offsets: np.ndarray | None = label_offset_vector(self.task)
        self._backend = backend
        self._batch_size = batch_size
        self.workers: int = backend.workers  # passes the backend runs well at once

    @property
    def backend_info(self) -> BackendInfo:
        """What scores: the backend that runs, its precision and providers."""
        return self._backend.info

    def score(self, records: Sequence[Mapping[str, str]]) -> tuple[np.ndarray, list[bool]]:
        """(probabilities [n, labels] in the task's label order, truncated flags), in input order; the
        probabilities are the softmax of the label logits divided by the task's temperature (calibrated), plus its
        label offsets."""
        if not records:
            return np.zeros((0, len(self.columns)), dtype=np.float32), []
        encoded = self.encoder.encode_batch(records)
        passes = length_buckets([len(e.ids) for e in encoded], self._batch_size, min_batches=self.workers)

        def run(batch: list[int]) -> np.ndarray:
            return self._backend(*pad_batch([encoded[i].ids for i in batch], self._pad_id))

        # the backend's own pool: engines sharing a session (a Moderator and a matcher) share its workers too
        pool = self._backend.executor() if self.workers > 1 and len(passes) > 1 else None
        if pool is not None:
            # the pool takes passes in order: the biggest first, so the last ones to finish are small
            passes.sort(key=lambda batch: len(batch) * len(encoded[batch[-1]].ids), reverse=True)
        outputs = pool.map(run, passes) if pool is not None else map(run, passes)
        probs = np.empty((len(records), len(self.columns)), dtype=np.float32)
        for batch, logits in zip(passes, outputs, strict=True):
            probs[batch] = label_probabilities(logits, self.columns, self.temperature, self.offsets)
        return probs, [e.truncated for e in encoded]
