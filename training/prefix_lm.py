"""RedOne on the pretrained BERT backbone as a prefix-LM (issue #16, part 2; a first vertical slice): the
tokenizer with role markers and answer tokens in BERT's `[unused]` slots, a `BertLMHeadModel` with the
prefix-LM mask (bidirectional over the prompt, causal over the answer), its one-token-answer scoring graph
exported to ONNX as a bundle the SDK loads, and a small one-token-answer fine-tuning loop.

Why no attention code of our own: `BertLMHeadModel` (`is_decoder=True`) takes a (batch, T, T) mask, so the
prefix-LM is only a mask. The scoring graph reads the first answer token's distribution at the last prompt
position (`<|assistant|>`), which under that mask sees the whole prompt both ways; it is therefore the plain
bidirectional encoder over the right-padded prompt. The stages that train it: training/prefix_lm_sft.py (SFT) and
training/prefix_lm_dpo.py (DPO); CPT is not built for it.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redone_sdk.bundle import Bundle
from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.inference.scoring_head import build_prefix_lm_scoring_head
from redone_sdk.training.tasks import answer_tokens, build_task_specs

__all__ = [
    "ASSISTANT",
    "END",
    "FOLDS",
    "MATCHING_TEMPLATE",
    "MODERATION_TEMPLATE",
    "PREFIX_LM_TOKENS",
    "ROLE_MARKERS",
    "USER",
    "FinetuneConfig",
    "PrefixLMError",
    "build_prefix_lm",
    "build_prefix_lm_scorer",
    "export_prefix_lm_bundle",
    "export_prefix_lm_graph",
    "finetune_scoring",
    "prefix_lm_batch",
    "prefix_lm_mask",
    "prefix_lm_special_tokens",
    "prefix_lm_task_specs",
    "prefix_lm_tokenizer",
    "score_prompts",
]

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
ROLE_MARKERS = (USER, ASSISTANT, END)
# Every new token, in slot order: token i takes `[unused{i + 1}]` (ids 1.. in BERT-Chinese's vocabulary).
PREFIX_LM_TOKENS: tuple[str, ...] = (*ROLE_MARKERS, *answer_tokens())

# Characters BERT-Chinese's vocabulary lacks, folded to ASCII before NFKC and lower-casing
# (benchmarks/results/tokenization.md: they make most of COLD's and SWSR's [UNK]s; NFKC turns `…` into `...`).
FOLDS: tuple[tuple[str, str], ...] = (
    ("\u201c", '"'),  # “
    ("\u201d", '"'),  # ”
    ("\u2018", "'"),  # ‘
    ("\u2019", "'"),  # ’
    ("\u2014", "-"),  # —
    ("\u2013", "-"),  # –
    ("\u2015", "-"),  # ―
    ("\u2026", "..."),  # …
)

# The prompt starts with [CLS] (position 0 as in pretraining) and ends with the assistant marker, where the
# first answer token is read. WordPiece splits at the markers and at punctuation, so encoding the template's
# pieces one by one (as `PromptEncoder` does) gives the ids of the whole rendered prompt.
MODERATION_TEMPLATE = f"[CLS]{USER}审核这条笔记，回答 safe / offensive / hate / sexism：{{text}}{END}{ASSISTANT}"
MATCHING_TEMPLATE = (
    f"[CLS]{USER}Rate the note's relevance to the query (-1 to 3).\nQuery: {{query}}\nNote: {{note}}{END}{ASSISTANT}"
)


class PrefixLMError(RuntimeError):
    """A converted checkpoint or tokenizer the prefix-LM cannot be built on; the message says why."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field with its help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class FinetuneConfig:
    """One-token-answer fine-tuning of the scoring position (`finetune_scoring`)."""

    steps: int = _f(200, "Optimizer steps.")
    batch_size: int = _f(16, "Prompts per step (sampled with replacement from the examples).")
    learning_rate: float = _f(5e-5, "AdamW learning rate (constant after warm-up).")
    warmup_steps: int = _f(10, "Linear warm-up steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    seed: int = _f(0, "Seed of the batch sampling and dropout.")


# --- tokenizer ------------------------------------------------------------------------------------------------


def _tokenizer_json(converted_dir: Path) -> dict[str, Any]:
    """The converted checkpoint's tokenizer.json, edited: normalizer (folds, NFKC, lower-case), no
    post-processor, and `PREFIX_LM_TOKENS` renamed into the `[unused]` slots and added as special tokens."""
    data = json.loads((Path(converted_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "WordPiece":
        raise PrefixLMError(f"{converted_dir}: expected a WordPiece tokenizer, got {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            *({"type": "Replace", "pattern": {"String": a}, "content": b} for a, b in FOLDS),
            {"type": "NFKC"},
            # strip_accents None follows lowercase (accents stripped), as the tokenization study measured
            {
                "type": "BertNormalizer",
                "clean_text": True,
                "handle_chinese_chars": True,
                "strip_accents": None,
                "lowercase": True,
            },
        ],
    }
    data["post_processor"] = None  # the template carries [CLS]; encode() adds nothing of its own
    added = list(data.get("added_tokens", []))
    for slot, token in enumerate(PREFIX_LM_TOKENS, start=1):
        unused = f"[unused{slot}]"
        if unused not in vocab:
            raise PrefixLMError(f"{converted_dir}: no {unused} slot in the vocabulary for {token}")
        if token in vocab:
            raise PrefixLMError(f"{converted_dir}: {token} is already in the vocabulary")
        token_id = vocab.pop(unused)
        vocab[token] = token_id
        added.append(
            {
                "id": token_id,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    data["added_tokens"] = sorted(added, key=lambda t: t["id"])
    model["vocab"] = dict(sorted(vocab.items(), key=lambda item: item[1]))
    return data


def prefix_lm_tokenizer(converted_dir: str | Path) -> Any:
    """The converted checkpoint's tokenizer for the prefix-LM (a `tokenizers.Tokenizer`): folds curly quotes,
    dashes and `…` to ASCII, NFKC, lower-cases (no [UNK] in English, tokenization.md); has no post-processor (so
    `encode` gives exactly the ids `PromptEncoder` gives); and maps `PREFIX_LM_TOKENS` onto `[unused1]`… ids,
    with no change of vocabulary size (the model is not resized)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(_tokenizer_json(Path(converted_dir)), ensure_ascii=False))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def prefix_lm_special_tokens() -> list[str]:
    """Control strings removed from user text (a note cannot forge a marker, [CLS] or an answer token)."""
    return ["[PAD]", "[CLS]", "[SEP]", "[MASK]", *PREFIX_LM_TOKENS]


def prefix_lm_task_specs(
    tokenizer: Any, *, moderation_max_length: int = 256, matching_max_length: int = 256
) -> dict[str, TaskSpec]:
    """The moderation and matching tasks with the prefix-LM templates; label columns in `answer_tokens()` order
    (the scoring graph's output), as `training.tasks.build_task_specs` lays them out."""
    token_ids = {}
    for token in answer_tokens():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise PrefixLMError(f"the tokenizer lacks the answer token {token}")
        token_ids[token] = token_id
    return build_task_specs(
        token_ids,
        moderation_max_length=moderation_max_length,
        matching_max_length=matching_max_length,
        moderation_template=MODERATION_TEMPLATE,
        matching_template=MATCHING_TEMPLATE,
    )


def build_prefix_lm(converted_dir: str | Path, *, head_init: Literal["identity", "default"] = "identity") -> Any:
    """A `BertLMHeadModel` (is_decoder, no cross-attention) on the converted `BertModel` weights, its LM head's
    decoder tied to the word embeddings (decoder bias zero). The MLM transform (dense + GELU + LayerNorm) is new:
    `identity` sets dense to the identity (LayerNorm 1/0), so the untrained head scores a label by its
    embedding's match with the normalised last state, deterministically; `default` keeps BERT's random init."""
    import torch
    from transformers import BertConfig, BertLMHeadModel

    converted_dir = Path(converted_dir)
    config = BertConfig.from_pretrained(str(converted_dir), local_files_only=True)
    if config.model_type != "bert":
        raise PrefixLMError(f"{converted_dir} is a {config.model_type!r} checkpoint, not BERT")
    config.is_decoder = True
    config.add_cross_attention = False
    config.tie_word_embeddings = True
    config.use_cache = False
    config.architectures = ["BertLMHeadModel"]
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head's "newly initialized" warning is expected: it is set below
    try:
        model = BertLMHeadModel.from_pretrained(
            str(converted_dir), config=config, local_files_only=True, use_safetensors=True, attn_implementation="sdpa"
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    predictions = model.cls.predictions
    with torch.no_grad():
        if head_init == "identity":
            predictions.transform.dense.weight.copy_(torch.eye(config.hidden_size))
            predictions.transform.dense.bias.zero_()
            predictions.transform.LayerNorm.weight.fill_(1.0)
            predictions.transform.LayerNorm.bias.zero_()
        elif head_init != "default":
            raise PrefixLMError(f"head_init must be 'identity' or 'default', got {head_init!r}")
        predictions.bias.zero_()
    if predictions.decoder.weight is not model.bert.embeddings.word_embeddings.weight:
        raise PrefixLMError("the LM head's decoder is not tied to the word embeddings")
    return model.eval()


def prefix_lm_mask(prompt_lengths: Sequence[int] | Any, lengths: Sequence[int] | Any, width: int) -> Any:
    """The (batch, T, T) attention mask (1 = may attend), int64: every real position sees the whole prompt (the
    first `prompt_lengths[b]` tokens), an answer position also sees the answer up to itself, a prompt position
    no answer; padding (from `lengths[b]` on) is zero both ways."""
    import torch

    prompt = torch.as_tensor(prompt_lengths, dtype=torch.long).view(-1, 1, 1)
    length = torch.as_tensor(lengths, dtype=torch.long).view(-1, 1, 1)
    if bool((prompt > length).any()) or bool((length > width).any()):
        raise PrefixLMError("every prompt length must be at most its length, and every length at most T")
    rows = torch.arange(width).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    visible = (cols < prompt) | (cols <= rows)
    return (visible & (rows < length) & (cols < length)).long()


def prefix_lm_batch(
    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], pad_id: int = 0
) -> dict[str, Any]:
    """Right-padded prompt + answer ids with the prefix-LM mask and segment ids (0 prompt, 1 answer): the inputs
    of `BertLMHeadModel` for teacher-forced answers (the logits at position t predict token t + 1)."""
    import torch

    lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    segments = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids[row, : lengths[row]] = torch.tensor([*prompt, *answer], dtype=torch.long)
        segments[row, len(prompt) : lengths[row]] = 1
    mask = prefix_lm_mask([len(p) for p in prompts], lengths, width)
    return {"input_ids": ids, "token_type_ids": segments, "attention_mask": mask}


# --- scoring --------------------------------------------------------------------------------------------------


def build_prefix_lm_scorer(
    model: Any, label_token_ids: Sequence[int], *, attention: Literal["prefix", "causal"] = "prefix"
) -> Any:
    """(input_ids, attention_mask) right-padded -> logits of the label tokens at the last real token: the
    prefix-LM's first answer distribution for a one-token answer (the SDK's `build_prefix_lm_scoring_head`, so
    the PyTorch backend and the export compute the same function). `attention="causal"` reads the same position
    under a lower-triangular mask (the backbone ablation's decoder-only variant; never exported)."""
    if attention not in ("prefix", "causal"):
        raise PrefixLMError(f"attention must be 'prefix' or 'causal', got {attention!r}")
    return build_prefix_lm_scoring_head(model, label_token_ids, causal=attention == "causal")


def score_prompts(model: Any, prompts: Sequence[Sequence[int]], label_token_ids: Sequence[int]) -> Any:
    """Label logits (numpy, [n, labels]) of encoded prompts with the torch scorer (the export's reference)."""
    import numpy as np
    import torch

    from redone_sdk.inference.encoding import pad_batch

    scorer = build_prefix_lm_scorer(model, label_token_ids).eval()
    ids, mask = pad_batch(prompts, 0)
    with torch.no_grad():
        return scorer(torch.from_numpy(ids), torch.from_numpy(mask)).numpy().astype(np.float32)


def export_prefix_lm_graph(model: Any, label_token_ids: Sequence[int], out_file: Path, *, opset: int = 18) -> Path:
    """The scorer as ONNX through `torch.onnx.export` (dynamo): inputs input_ids, attention_mask (int64,
    dynamic batch and length), output label_logits. The fused Qwen2 graph builder does not apply to BERT."""

    from redone_sdk.training.export import torch_export_scorer

    scorer = build_prefix_lm_scorer(model, label_token_ids).eval()
    return torch_export_scorer(scorer, Path(out_file), opset=opset, example_token_id=672)


def export_prefix_lm_bundle(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    name: str = "redone-bert-prefix-lm",
    version: str = "0.0.0-dev",
    precisions: Sequence[Literal["fp32", "int8"]] = ("fp32", "int8"),
    opset: int = 17,
    int8_keep_fp32: Sequence[str] = (),
    moderation_max_length: int = 256,
    matching_max_length: int = 256,
    base_model: str = "",
    license: str = "MIT (bge-small-zh-v1.5 weights; untrained prefix-LM head)",
    metrics: Mapping[str, dict[str, float]] | None = None,
) -> Bundle:
    """Export the scoring graph and write a bundle the SDK loads (`redone_sdk.Moderator.load(out_dir)`), through
    `training.export.write_bundle`. The graph is `training.bert_graph`'s: fused by ONNX Runtime's BERT optimizer
    (fp32), and its dynamic int8 with an int8 word embedding (`quantize_bert_int8`; `int8_keep_fp32`: node names
    left float32, a rung of `bert_int8_fallbacks`)."""
    from redone_sdk.training.bert_graph import export_bert_scoring_graph, quantize_bert_int8
    from redone_sdk.training.export import graph_opset, write_bundle

    tasks = prefix_lm_task_specs(
        tokenizer, moderation_max_length=moderation_max_length, matching_max_length=matching_max_length
    )
    label_ids = [tokenizer.token_to_id(t) for t in answer_tokens()]
    pad_id = tokenizer.token_to_id("[PAD]")
    with tempfile.TemporaryDirectory(prefix="prefix-lm-export.") as work:
        work_dir = Path(work)
        tokenizer_file = work_dir / "tokenizer.json"
        tokenizer.save(str(tokenizer_file))
        fp32 = export_bert_scoring_graph(model, label_ids, work_dir / "scoring.fp32.onnx", opset=opset)
        graphs: dict[str, tuple[Path, int]] = {}
        if "fp32" in precisions:
            graphs["fp32"] = (fp32, graph_opset(fp32))
        if "int8" in precisions:
            int8 = quantize_bert_int8(fp32, work_dir / "scoring.int8.onnx", keep_fp32=int8_keep_fp32)
            graphs["int8"] = (int8, graph_opset(int8))
        lineage = getattr(model.config, "_name_or_path", "")
        return write_bundle(
            Path(out_dir),
            name=name,
            version=version,
            description="bge-small-zh-v1.5 (BERT) as a prefix-LM: harm taxonomy and query-note relevance by one "
            "bidirectional pass over the prompt, read at the assistant marker (issue #16, part 2; in progress).",
            license=license,
            tokenizer_file=tokenizer_file,
            pad_token_id=pad_id,
            special_tokens=prefix_lm_special_tokens(),
            tasks=tasks,
            graphs=graphs,
            label_token_ids=label_ids,
            data_sources=(),
            training_config={
                "prefix_lm": True,
                "source": str(lineage),
                "scoring_graph": "training.bert_graph (ORT-fused BERT, last layer on the last token)",
                "int8_keep_fp32": list(int8_keep_fp32),
            },
            architecture="BertLMHeadModel (prefix-LM)",
            parameters=sum(p.numel() for p in model.parameters()),
            metrics=dict(metrics or {}),
            base_model=base_model or f"pretrained:{lineage}",
        )


# --- fine-tuning ----------------------------------------------------------------------------------------------


def finetune_scoring(
    model: Any,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[int],
    label_token_ids: Sequence[int],
    config: FinetuneConfig = FinetuneConfig(),
) -> list[float]:
    """Train the one-token answer: cross-entropy over the label tokens' logits at the last prompt position
    (exactly what the scoring graph reads), `answers` being each prompt's label token id. Returns the loss of
    every step; leaves the model in eval mode. Not part of the pipeline stages."""
    import torch

    columns = {token_id: i for i, token_id in enumerate(label_token_ids)}
    targets = [columns[a] for a in answers]
    if len(prompts) != len(targets) or not prompts:
        raise PrefixLMError("need as many answers as prompts, and at least one")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    scorer = build_prefix_lm_scorer(model, label_token_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, config.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    from redone_sdk.inference.encoding import pad_batch

    model.train()
    losses = []
    for _ in range(config.steps):
        batch = [rng.randrange(len(prompts)) for _ in range(config.batch_size)]
        ids, mask = pad_batch([prompts[i] for i in batch], 0)
        logits = scorer(torch.from_numpy(ids), torch.from_numpy(mask))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([targets[i] for i in batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
