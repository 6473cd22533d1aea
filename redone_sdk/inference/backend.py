"""The scoring-backend contract: a backend maps padded token ids to label logits and says what it runs."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

__all__ = ["BackendInfo", "BackendName", "ScoringBackend"]

BackendName = Literal["auto", "onnx", "torch"]


@dataclass(frozen=True)
class BackendInfo:
    """What actually scores (after `backend="auto"` and the default graph are resolved); the same info gives the
    same scores, so it keys score caches. Threads and workers are left out: they do not change scores."""

    name: str  # "onnx" or "torch"
    precision: str  # the ONNX graph's precision ("int8", "fp32") or the PyTorch dtype ("float32", "bfloat16")
    providers: tuple[str, ...]  # ONNX Runtime's execution providers in use; ("cpu",) for PyTorch


class ScoringBackend(Protocol):
    """(input_ids, attention_mask) [batch, length] int64, right-padded -> label logits [batch, labels] float32."""

    name: str
    info: BackendInfo
    workers: int  # passes the backend runs well at once, from the threads of `executor()`

    def executor(self) -> Executor | None:
        """A pool of `workers` threads for passes side by side (shared by every engine on this backend), or None."""
        ...

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...
