"""The scoring-backend contract and its registry: a backend maps padded token ids to label logits."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

__all__ = ["ScoringBackend", "BackendName"]

BackendName = Literal["auto", "onnx", "torch"]


class ScoringBackend(Protocol):
    """(input_ids, attention_mask) [batch, length] int64, right-padded -> label logits [batch, labels] float32."""

    name: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...
