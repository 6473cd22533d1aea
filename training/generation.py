"""Batched greedy answers and one-pass label predictions of a torch model, for DPO mining and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redone_sdk.training.chat import ChatCodec
from redone_sdk.training.tasks import answer_token

__all__ = ["generate_answers", "predict_labels"]


def generate_answers(
    model: Any, codec: ChatCodec, prompts: Sequence[str], *, max_new_tokens: int = 64, batch_size: int | None = None
) -> list[str]:
    """Greedy decoding until `<|im_end|>`; prompts are left-padded so every row ends where its answer starts.
    Runs where the model is; `batch_size` defaults to 16 on CPU and 128 on a GPU (decoding is launch-bound)."""
    import torch
    from tqdm.auto import tqdm

    device = model.device
    batch_size = batch_size or (128 if device.type == "cuda" else 16)

    encoded = codec.chat_prompts(list(prompts), reserve=max_new_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="generate", unit="batch", mininterval=10):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), codec.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = encoded[i]
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        with torch.inference_mode():
            output = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=codec.end_id,
                pad_token_id=codec.pad_id,
            )
        for row, i in enumerate(batch):
            answers[i] = codec.decode(output[row, width:].cpu().tolist())
    return answers


def predict_labels(
    model: Any, codec: ChatCodec, task: str, records: Sequence[dict[str, str]], *, batch_size: int = 64
) -> list[str]:
    """The most likely label of a scoring task (moderation / matching), one forward pass per prompt."""
    import torch

    from redone_sdk.inference.encoding import length_buckets, pad_batch
    from redone_sdk.inference.scoring_head import build_scoring_head

    spec = codec.tasks[task]
    token_ids = [codec.token_ids[answer_token(label.name)] for label in spec.labels]
    head = build_scoring_head(model, token_ids).eval()
    device = model.device
    prompts = codec.scoring_prompts(task, list(records))
    predicted: list[str] = [""] * len(prompts)
    for batch in length_buckets([len(p) for p in prompts], batch_size):
        ids, mask = pad_batch([prompts[i] for i in batch], codec.pad_id)
        with torch.inference_mode():
            logits = head(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).float().cpu()
        for row, i in enumerate(batch):
            predicted[i] = spec.labels[int(logits[row].argmax())].name
    return predicted
