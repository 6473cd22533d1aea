"""Stage 1b — the starting model: a tokenizer trained on the corpus and a fresh Qwen2, an existing checkpoint, or a
pretrained BERT from a registry (`model.pretrained`) built as a prefix-LM (`training/prefix_lm_sft.py`).

An existing checkpoint (e.g. Qwen2.5 or RedOne, downloaded beforehand) gets the ChatML and answer tokens added
to its tokenizer when it lacks them, with its embeddings resized to match.
"""

from __future__ import annotations

from pathlib import Path

from redone_sdk.training.config import PipelineConfig
from redone_sdk.training.model import build_model, load_model, save_model
from redone_sdk.training.stages.common import configure_torch, is_main_process, log, mark_done, read_jsonl, stage_dir
from redone_sdk.training.tasks import END_TOKEN, PAD_TOKEN
from redone_sdk.training.tokenizer import special_tokens, to_hf_tokenizer, train_tokenizer

__all__ = ["check_supported", "run"]


def check_supported(config: PipelineConfig) -> None:
    """Refuse what the pipeline cannot build, before any stage runs: the Qwen2 models continue pretraining as
    causal LMs only (`cpt.objective` prefix and span_mlm need the bidirectional BERT prefix-LM)."""
    if config.model.pretrained or not config.cpt.enabled or config.cpt.objective == "causal":
        return
    raise ValueError(
        f"cpt.objective {config.cpt.objective!r} needs a pretrained BERT prefix-LM (model.pretrained); the Qwen2 "
        "models continue pretraining as causal LMs (cpt.objective causal)"
    )


def run(config: PipelineConfig) -> Path:
    check_supported(config)
    configure_torch(config)
    out = stage_dir(config, "init")
    model_dir = out / "model"
    if config.model.pretrained:
        from redone_sdk.training.prefix_lm_sft import init_prefix_lm

        model, tokenizer = init_prefix_lm(config, model_dir)
        parameters = sum(p.numel() for p in model.parameters())
        log.info("init: prefix-LM on %s, %d parameters", config.model.pretrained, parameters)
        mark_done(config, "init", {"parameters": parameters, "vocab": tokenizer.get_vocab_size()})
        return model_dir
    if config.model.init_from:
        from transformers import AutoTokenizer

        source = Path(config.model.init_from)
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True, trust_remote_code=False)
        missing = [t for t in special_tokens() if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
        model = load_model(source)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        log.info("init: %s with %d added tokens", source, len(missing))
    else:
        # The tokenizer learns from a bounded sample: 20 M characters are plenty for an 8k-64k vocabulary.
        sample, size = [], 0
        for row in read_jsonl(stage_dir(config, "data") / "cpt.jsonl"):
            sample.append(row["text"])
            size += len(row["text"])
            if size > 20_000_000:
                break
        train_tokenizer(sample, config.model.vocab_size, out / "tokenizer.json")
        tokenizer = to_hf_tokenizer(out / "tokenizer.json")
        model = build_model(
            config.model,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
            eos_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
            seed=config.seed,
        )
    if is_main_process():
        save_model(model, tokenizer, model_dir)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("init: %s, %d parameters, vocabulary %d", type(model).__name__, parameters, len(tokenizer))
    mark_done(config, "init", {"parameters": parameters, "vocab": len(tokenizer)})
    return model_dir
