"""The training pipeline (installed as `redone_sdk.training`): data, tokenizer, model, fine-tuning, export.

Needs the `[train]` extra (torch, transformers, …). Nothing in `redone_sdk`'s core imports it.
"""
