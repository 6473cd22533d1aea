"""Models: a small Qwen2-architecture causal LM built from a config (no download), or a checkpoint on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redone_sdk.training.config import ModelConfig

__all__ = ["build_model", "inference_device", "load_model", "save_model"]


def build_model(config: ModelConfig, vocab_size: int, pad_token_id: int, eos_token_id: int, seed: int) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(model_config)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model


def inference_device() -> str:
    """Where evaluation and mining run: this process's GPU when there is one (`LOCAL_RANK` under accelerate)."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def load_model(path: Path, device: str | None = None) -> Any:
    """A causal LM from a local checkpoint: safetensors only, no remote code, no network; on `device` if given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path), trust_remote_code=False, use_safetensors=True, local_files_only=True
    )
    return model.to(device) if device else model


def save_model(model: Any, tokenizer: Any, path: Path) -> Path:
    """Save weights (safetensors), config, and the tokenizer (tokenizer.json + transformers files) together."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path
