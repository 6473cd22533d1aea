"""PyTorch backend: scores with a Hugging Face checkpoint directly, for models not yet exported to ONNX.

`build_scoring_head` also builds the module the training pipeline exports to ONNX, so both backends compute the
same function: the last layer's hidden state at the last real token times the label rows of the LM head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from redone_sdk.errors import BackendUnavailableError

__all__ = ["TorchScorer", "build_scoring_head"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "the PyTorch backend needs torch and transformers: pip install 'redone-sdk[train]'"
        ) from exc
    return torch


def build_scoring_head(model: Any, label_token_ids: Sequence[int]) -> Any:
    """Wrap a causal LM as (input_ids, attention_mask) -> logits of the label tokens at the last real token."""
    torch = _torch()

    class LabelScoringHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
            rows = model.get_output_embeddings().weight.detach()[list(label_token_ids)].clone()
            self.label_rows = torch.nn.Parameter(rows, requires_grad=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            states = hidden.last_hidden_state
            last = attention_mask.sum(dim=1) - 1
            picked = states[torch.arange(states.shape[0], device=states.device), last]
            return picked @ self.label_rows.T

    return LabelScoringHead()


class TorchScorer:
    """Loads `checkpoint/` of a bundle with transformers (safetensors only, no remote code)."""

    name = "torch"

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
        self._torch = torch
        self._head = build_scoring_head(model, label_token_ids).eval()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self._head(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return logits.float().numpy()
