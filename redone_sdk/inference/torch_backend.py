"""PyTorch backend: scores with a Hugging Face checkpoint directly, for models not yet exported to ONNX.

It runs `build_scoring_head` (`scoring_head.py`), the module the training pipeline exports to ONNX, so both
backends compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from redone_sdk.errors import BackendUnavailableError
from redone_sdk.inference.backend import BackendInfo
from redone_sdk.inference.scoring_head import build_scoring_head

__all__ = ["TorchScorer"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "the PyTorch backend needs torch and transformers: pip install 'redone-sdk[train]'"
        ) from exc
    return torch


class TorchScorer:
    """Loads `checkpoint/` of a bundle with transformers (safetensors only, no remote code). One pass at a time."""

    name = "torch"
    workers = 1

    def __init__(
        self,
        checkpoint: Path,
        label_token_ids: Sequence[int],
        *,
        dtype: Literal["float32", "bfloat16"] = "float32",
        threads: int | None = None,
    ) -> None:
        torch = _torch()
        try:
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise BackendUnavailableError(
                "the PyTorch backend needs transformers: pip install 'redone-sdk[train]'"
            ) from exc
        if threads:
            torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint),
            dtype=getattr(torch, dtype),
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
        )
        model.eval()
        self.info = BackendInfo(name=self.name, precision=dtype, providers=("cpu",))
        self._torch = torch
        self._head = build_scoring_head(model, label_token_ids).eval()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self._head(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return logits.float().numpy()

    def executor(self) -> Executor | None:
        """None: passes run one at a time (PyTorch already spreads one pass over its threads)."""
        return None
