"""Build a small Qwen2-architecture causal LM from a config (no download)."""

from __future__ import annotations

from typing import Any

from redone_sdk.training.config import PipelineConfig

__all__ = ["build_model"]


def build_model(config: PipelineConfig, vocab_size: int, pad_token_id: int) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(config.seed)
    model_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=max(config.moderation_max_length, config.matching_max_length) * 2,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=pad_token_id,
        eos_token_id=pad_token_id,
        use_sliding_window=False,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(model_config)
