"""Where a `classify_batch` call spends its time: note validation, tokenization, padding, graph, softmax, results.

The SDK's own pieces (`PromptEncoder`, `length_buckets`, `pad_batch`, the backend callable, `label_probabilities`)
are run one by one with a timer around each, in the order `TaskEngine.score` runs them; "results" (policy
decision and `ModerationResult` objects) is `Moderator.results`, the second half of `classify_batch`.
`classify_batch_itself` times the real call on the same notes right after, as a check that the stages add up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from redone_sdk.bundle import Bundle
from redone_sdk.bundle.tokenizer import load_tokenizer
from redone_sdk.inference.encoding import PromptEncoder, length_buckets, pad_batch
from redone_sdk.inference.engine import label_probabilities
from redone_sdk.schemas import coerce_note

__all__ = ["stage_breakdown", "padding_waste", "prompt_token_counts"]


def _encoder(bundle: Bundle) -> tuple[PromptEncoder, int]:
    found = bundle.manifest.task_of_kind("moderation")
    if found is None:
        raise ValueError(f"bundle {bundle.name} has no moderation task")
    tokenizer = load_tokenizer(bundle.file(bundle.manifest.tokenizer.file))
    encoder = PromptEncoder(tokenizer, found[1], bundle.manifest.tokenizer.special_tokens)
    return encoder, bundle.manifest.tokenizer.pad_token_id


def prompt_token_counts(bundle: Bundle, texts: Sequence[str]) -> list[int]:
    """Real prompt lengths (template + note, after truncation) as the model sees them."""
    encoder, _ = _encoder(bundle)
    return [len(e.ids) for e in encoder.encode_batch([{"text": t} for t in texts])]


def cached_prefix_length(bundle: Bundle) -> int:
    """Tokens of the moderation prompt that the bundle's default graph takes from its prefix cache (0: none)."""
    manifest = bundle.manifest
    spec = manifest.graphs.get(manifest.default_graph or "") if manifest.graphs else None
    if spec is None or spec.prefix_cache is None:
        return 0
    encoder, _ = _encoder(bundle)
    return len(encoder.prefix_ids)


def padding_waste(lengths: Sequence[int], batch_size: int) -> dict[str, Any]:
    """Share of the token positions the graph computes that are padding, per way of batching."""

    def waste(batches: list[list[int]]) -> float:
        real = sum(lengths[i] for b in batches for i in b)
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        return round(1 - real / padded, 4)

    arrival = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    return {
        "batch1": 0.0,
        "batched_arrival_order": waste(arrival),
        "bulk_length_buckets": waste(length_buckets(lengths, batch_size)),
    }


def _stages(
    moderator: Any,
    encoder: PromptEncoder,
    pad_id: int,
    backend: Callable,
    calls: list[list[str]],
    batch_size: int,
) -> dict[str, float]:
    """One pass of `Moderator.classify_batch`'s work, stage by stage (same code path, timers between)."""
    columns = np.array([label.column for label in encoder.task.labels])
    t = dict.fromkeys(STAGES, 0.0)
    for texts in calls:
        s = time.perf_counter()
        notes = [coerce_note(x, index=i) for i, x in enumerate(texts)]
        records = [{"text": n.text} for n in notes]
        t["validate_notes"] += time.perf_counter() - s
        s = time.perf_counter()
        encoded = encoder.encode_batch(records)
        t["tokenize"] += time.perf_counter() - s
        probs = np.empty((len(records), len(columns)), dtype=np.float32)
        for batch in length_buckets([len(e.ids) for e in encoded], batch_size):
            s = time.perf_counter()
            ids, mask = pad_batch([encoded[i].ids for i in batch], pad_id)
            t["bucket_and_pad"] += time.perf_counter() - s
            s = time.perf_counter()
            logits = backend(ids, mask)
            t["graph"] += time.perf_counter() - s
            s = time.perf_counter()
            probs[batch] = label_probabilities(logits, columns)
            t["softmax"] += time.perf_counter() - s
        s = time.perf_counter()
        moderator.results(notes, probs, [e.truncated for e in encoded])
        t["results_and_policy"] += time.perf_counter() - s
    s = time.perf_counter()
    for texts in calls:
        moderator.classify_batch(texts)
    t["classify_batch_itself"] = time.perf_counter() - s
    return t


STAGES = ("validate_notes", "tokenize", "bucket_and_pad", "graph", "softmax", "results_and_policy")


def stage_breakdown(
    bundle: Bundle,
    moderator: Any,
    backend: Callable,
    texts: list[str],
    *,
    batch_size: int,
    batch1_notes: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """Per mode: seconds per 1,000 notes in each stage (best of `repeats`) and each stage's share of the total."""
    encoder, pad_id = _encoder(bundle)
    plans = {
        "batch1": [[t] for t in texts[:batch1_notes]],
        "batched": [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)],
        "bulk": [texts],
    }
    out: dict[str, Any] = {}
    for mode, calls in plans.items():
        notes = sum(len(c) for c in calls)
        _stages(moderator, encoder, pad_id, backend, calls, batch_size)  # warm-up: new shapes, lazy init
        runs = [_stages(moderator, encoder, pad_id, backend, calls, batch_size) for _ in range(repeats)]
        best = min(runs, key=lambda r: sum(r[k] for k in STAGES))
        total = sum(best[k] for k in STAGES)
        out[mode] = {
            "notes": notes,
            "ms_per_1000_notes": {
                **{k: round(best[k] / notes * 1e6, 2) for k in STAGES},
                "sum_of_stages": round(total / notes * 1e6, 2),
                "classify_batch_itself": round(best["classify_batch_itself"] / notes * 1e6, 2),
            },
            "share": {k: round(best[k] / total, 4) for k in STAGES},
        }
    return out
