"""The DPO stage on the pretrained BERT prefix-LM (issues #16, #18): preference pairs over the one-token answer of
the scoring tasks, trained with the DPO loss read at the assistant marker.

trl's DPOTrainer assumes a causal LM that generates its answer. Here the answer is ONE label token at a known
position, so a pair's log-probabilities are two entries of the task's label-column log-softmax (what the SDK
reads), and the loss is, per pair (x, chosen c, rejected r):

    -log σ(β [(log π(c|x) − log π_ref(c|x)) − (log π(r|x) − log π_ref(r|x))])  +  w · (−log π(c|x))

(the second term, `dpo.sft_weight` = w, is trl's RPO / `rpo_alpha`: it keeps the right answer's probability
from falling while the margin widens). The reference is the SFT checkpoint the stage starts from, frozen: its
log-probabilities are computed once, before training. Dropout is off (as trl's `disable_dropout`), so the first
step's loss is log 2. Pairs: the SFT model's own mistakes on a sample of the training rows (chosen = gold,
rejected = its argmax) and the review console's pairs (`dpo.feedback`, each `dpo.feedback_repeat` times).
Afterwards `dpo.sft_average` moves the weights back toward SFT's (as the Qwen2 stage does); calibration and the
bundle are the export stage's, as after SFT.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.errors import RedOneError
from redone_sdk.inference.encoding import pad_batch
from redone_sdk.training.config import DPOStageConfig, PipelineConfig
from redone_sdk.training.prefix_lm_sft import (
    ScoringItem,
    _batches,
    adamw_warmup_cosine,
    class_weights,
    encode_rows,
    label_token_ids,
)
from redone_sdk.training.stages.common import log

__all__ = [
    "PreferenceConfigError",
    "PreferencePair",
    "feedback_pairs",
    "label_logprobs",
    "mine_pairs",
    "pair_logprobs",
    "preference_loss",
    "run",
    "train_preferences",
]


class PreferenceConfigError(RedOneError, ValueError):
    """The DPO round asks for something the prefix-LM's stage does not take (the CLI prints it in one line)."""


@dataclass(frozen=True)
class PreferencePair:
    """One prompt (its ids and task) with the chosen and rejected label columns; `source` is `mined` or
    `feedback`, `fields` the row's text fields (written to pairs.jsonl)."""

    ids: tuple[int, ...]
    task: str
    chosen: int
    rejected: int
    source: str
    fields: Mapping[str, str] = field(default_factory=dict, compare=False)


# --- the loss -------------------------------------------------------------------------------------------------


def preference_loss(
    logp: Any,
    chosen: Any,
    rejected: Any,
    ref_chosen: Any,
    ref_rejected: Any,
    *,
    beta: float,
    sft_weight: float = 0.0,
) -> tuple[Any, Any]:
    """(mean loss, per-pair margins) of a batch: `logp` [B, labels] is the policy's log-softmax over the task's
    label columns, `chosen` / `rejected` [B] column indices, `ref_chosen` / `ref_rejected` [B] the reference's
    log-probabilities of those columns. Margin = β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]; loss
    = mean(−log σ(margin)) + sft_weight · mean(−log π(c))."""
    import torch
    import torch.nn.functional as F

    rows = torch.arange(logp.shape[0], device=logp.device)
    policy_chosen, policy_rejected = logp[rows, chosen], logp[rows, rejected]
    margins = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    loss = -F.logsigmoid(margins).mean()
    if sft_weight > 0:
        loss = loss + sft_weight * (-policy_chosen).mean()
    return loss, margins.detach()


# --- scoring --------------------------------------------------------------------------------------------------


def label_logprobs(
    model: Any, items: Sequence[ScoringItem | PreferencePair], specs: Mapping[str, TaskSpec], batch_size: int = 64
) -> list[np.ndarray]:
    """Per item, the model's log-softmax over its task's label columns at the assistant marker (no gradient; the
    model's mode is left as it is)."""
    import torch

    from redone_sdk.training.prefix_lm import build_prefix_lm_scorer

    scorer = build_prefix_lm_scorer(model, label_token_ids(specs))
    out: list[np.ndarray | None] = [None] * len(items)
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_task.setdefault(item.task, []).append(i)
    with torch.no_grad():
        for task, indices in by_task.items():
            columns = [label.column for label in specs[task].labels]
            indices = sorted(indices, key=lambda i: len(items[i].ids))
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                ids, mask = pad_batch([items[i].ids for i in batch], 0)
                logits = scorer(torch.from_numpy(ids), torch.from_numpy(mask))[:, columns]
                for i, row in zip(batch, torch.log_softmax(logits.float(), dim=-1).numpy(), strict=True):
                    out[i] = row
    return [row for row in out if row is not None]


def pair_logprobs(model: Any, pairs: Sequence[PreferencePair], specs: Mapping[str, TaskSpec]) -> np.ndarray:
    """[n, 2]: the model's log-probabilities of each pair's chosen and rejected label."""
    rows = label_logprobs(model, pairs, specs)
    return np.array([[row[p.chosen], row[p.rejected]] for p, row in zip(pairs, rows, strict=True)], dtype=np.float32)


# --- pairs ----------------------------------------------------------------------------------------------------


def mine_pairs(
    model: Any,
    tokenizer: Any,
    specs: Mapping[str, TaskSpec],
    rows: Sequence[Mapping[str, Any]],
    cfg: DPOStageConfig,
    *,
    seed: int,
) -> tuple[list[PreferencePair], dict[str, int], list[ScoringItem]]:
    """The model's mistakes on a sample of `cfg.mine_examples` labelled scoring rows: chosen = gold, rejected =
    its argmax; at most `cfg.max_pairs` of them (a seeded sample). Also counts, per task, rows checked and wrong,
    and the checked rows as `ScoringItem`s (the anchor rows of `dpo.anchor_weight`)."""
    rng = random.Random(seed)
    labelled = [r for r in rows if r.get("label") is not None]
    sample = rng.sample(labelled, min(cfg.mine_examples, len(labelled)))
    items = encode_rows(tokenizer, specs, sample)
    stats: Counter = Counter()
    pairs: list[PreferencePair] = []
    for row, item, logp in zip(sample, items, label_logprobs(model, items, specs), strict=True):
        guess = int(np.argmax(logp))
        stats[f"{item.task}/checked"] += 1
        if guess == item.target:
            continue
        stats[f"{item.task}/wrong"] += 1
        pairs.append(PreferencePair(item.ids, item.task, item.target, guess, "mined", dict(row["fields"])))
    rng.shuffle(pairs)
    return pairs[: cfg.max_pairs], dict(sorted(stats.items())), items


def feedback_pairs(
    tokenizer: Any, specs: Mapping[str, TaskSpec], rows: Sequence[Mapping[str, Any]], repeat: int
) -> tuple[list[PreferencePair], dict[str, int]]:
    """The reviewers' pairs (`rows` of a feedback folder's dpo.jsonl: task, text, chosen, rejected) as the bundle's
    moderation prompts, each `repeat` times. A pair whose task is not moderation, whose label the task lacks, or
    whose two labels are the same is skipped and counted (the unknown labels are logged by name)."""
    names = specs["moderation"].label_names
    unknown: Counter = Counter()
    usable, other_task, same = [], 0, 0
    for row in rows:
        if row.get("task") != "moderation":
            other_task += 1
        elif missing := [label for label in (row["chosen"], row["rejected"]) if label not in names]:
            unknown.update(missing)
        elif row["chosen"] == row["rejected"]:
            same += 1
        else:
            usable.append(row)
    if unknown:
        log.warning(
            "dpo: reviewer pairs skipped, labels the moderation task lacks (it has %s): %s",
            ", ".join(names),
            ", ".join(f"{label} ({n})" for label, n in sorted(unknown.items())),
        )
    encoded = encode_rows(
        tokenizer, specs, [{"task": "moderation", "fields": {"text": r["text"]}, "label": r["chosen"]} for r in usable]
    )
    pairs = [
        PreferencePair(
            item.ids, "moderation", item.target, names.index(row["rejected"]), "feedback", {"text": row["text"]}
        )
        for row, item in zip(usable, encoded, strict=True)
    ]
    stats = {
        "feedback/pairs": len(pairs),
        "feedback/skipped": len(rows) - len(usable),
        "feedback/skipped_unknown_label": len(rows) - len(usable) - other_task - same,
        "feedback/skipped_other_task": other_task,
        "feedback/skipped_same_label": same,
    }
    return [pair for pair in pairs for _ in range(repeat)], stats


# --- training -------------------------------------------------------------------------------------------------


def train_preferences(
    model: Any,
    pairs: Sequence[PreferencePair],
    reference: np.ndarray,
    specs: Mapping[str, TaskSpec],
    cfg: DPOStageConfig,
    *,
    seed: int,
    anchor: Sequence[ScoringItem] = (),
    anchor_class_weights: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on `pairs` with `preference_loss` (`reference` [n, 2]: the frozen reference's log-probabilities of
    each pair's chosen and rejected label): AdamW, linear warm-up then cosine decay, gradient clipping, dropout
    off, `cfg.gradient_accumulation` batches per optimizer step. With `cfg.anchor_weight` > 0 each batch adds
    that weight x the cross-entropy of a batch of `anchor` rows (gold labels; `anchor_class_weights` per task,
    as SFT weighted them). Returns a summary (steps, losses, reward accuracy of the first and last steps,
    seconds); leaves the model in eval mode."""
    import torch
    import torch.nn.functional as F

    from redone_sdk.training.prefix_lm import build_prefix_lm_scorer

    if not pairs:
        raise ValueError("no preference pairs to train on")
    columns = {task: torch.tensor([label.column for label in spec.labels]) for task, spec in specs.items()}
    ref = torch.from_numpy(np.asarray(reference, dtype=np.float32))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    scorer = build_prefix_lm_scorer(model, label_token_ids(specs))
    accumulate = max(1, cfg.gradient_accumulation)
    per_epoch = math.ceil(len(_batches(pairs, cfg.batch_size, random.Random(seed))) / accumulate)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = adamw_warmup_cosine(params, cfg, total)
    anchored = [item for item in anchor if item.target >= 0] if cfg.anchor_weight > 0 else []
    anchor_rng = random.Random(seed + 1)

    def anchor_batches() -> Any:
        while True:
            yield from _batches(anchored, cfg.batch_size, anchor_rng)

    anchor_stream = anchor_batches() if anchored else None
    model.eval()  # dropout off: the policy starts equal to the reference (trl's disable_dropout)
    losses: list[float] = []
    accuracies: list[float] = []
    started = time.monotonic()
    step, pending, window_loss, window_margins = 0, 0, 0.0, []
    optimizer.zero_grad(set_to_none=True)
    while step < total:
        for batch in _batches(pairs, cfg.batch_size, rng):
            if step >= total:
                break
            chosen = [pairs[i] for i in batch]
            task = chosen[0].task
            ids, mask = pad_batch([p.ids for p in chosen], 0)
            logits = scorer(torch.from_numpy(ids), torch.from_numpy(mask))[:, columns[task]]
            loss, margins = preference_loss(
                F.log_softmax(logits.float(), dim=-1),
                torch.tensor([p.chosen for p in chosen]),
                torch.tensor([p.rejected for p in chosen]),
                ref[batch, 0],
                ref[batch, 1],
                beta=cfg.beta,
                sft_weight=cfg.sft_weight,
            )
            if anchor_stream is not None:
                rows = [anchored[i] for i in next(anchor_stream)]
                row_task = rows[0].task
                ids, mask = pad_batch([item.ids for item in rows], 0)
                row_logits = scorer(torch.from_numpy(ids), torch.from_numpy(mask))[:, columns[row_task]]
                weight = None if anchor_class_weights is None else anchor_class_weights[row_task].float()
                gold = torch.tensor([item.target for item in rows])
                loss = loss + cfg.anchor_weight * F.cross_entropy(row_logits.float(), gold, weight=weight)
            (loss / accumulate).backward()
            window_loss += float(loss.detach()) / accumulate
            window_margins.append(margins)
            pending += 1
            if pending < accumulate:
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(window_loss)
            accuracies.append(float((torch.cat(window_margins) > 0).float().mean()))
            step, pending, window_loss, window_margins = step + 1, 0, 0.0, []
            if step % 20 == 0 or step == 1:
                log.info("dpo: step %d/%d loss %.4f reward accuracy %.2f", step, total, losses[-1], accuracies[-1])
    model.eval()
    tail = max(1, len(losses) // 10)
    return {
        "steps": step,
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-tail:])),
        "reward_accuracy_first": accuracies[0],
        "reward_accuracy_final": float(np.mean(accuracies[-tail:])),
        "train_runtime_s": round(time.monotonic() - started, 1),
    }


def average_with_start(model: Any, start: Mapping[str, Any], share: float) -> None:
    """Move `model`'s weights toward `start` (name -> tensor) in place: (1 - share) * model + share * start."""
    import torch

    if share <= 0:
        return
    with torch.no_grad():
        for name, weight in model.named_parameters():  # tied weights appear once
            weight.lerp_(start[name].to(weight.dtype), share)


def _measured(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """What the round did to its own pairs: mean log-probability of the chosen label against the reference, the
    mean chosen probability before and after, and the share of pairs whose chosen − rejected gap grew."""
    gap_before, gap_after = before[:, 0] - before[:, 1], after[:, 0] - after[:, 1]
    return {
        "chosen_logp_gain": float(np.mean(after[:, 0] - before[:, 0])),
        "chosen_prob_reference": float(np.mean(np.exp(before[:, 0]))),
        "chosen_prob_after": float(np.mean(np.exp(after[:, 0]))),
        "gap_widened_share": float(np.mean(gap_after > gap_before)),
    }


# --- the stage ------------------------------------------------------------------------------------------------


def run(config: PipelineConfig) -> Path:
    """The `dpo` stage for a prefix-LM config: mine pairs with the SFT checkpoint, add the reviewers', train
    against the frozen SFT model, average with it, write `dpo/model` (+ pairs.jsonl, DONE.json)."""
    from redone_sdk.training.prefix_lm_sft import load_prefix_lm, save_prefix_lm, task_specs
    from redone_sdk.training.stages.common import (
        configure_torch,
        is_main_process,
        latest_model_dir,
        mark_done,
        stage_dir,
        write_jsonl,
    )
    from redone_sdk.training.stages.data import distinct, training_mixture

    cfg = config.dpo
    if cfg.extra_pairs:
        raise PreferenceConfigError(
            "dpo.extra_pairs holds chat prompts for the Qwen2 pipeline; the prefix-LM's DPO takes scoring pairs "
            "only: give reviewer pairs as a feedback folder (dpo.feedback) instead"
        )
    reviewed_rows = None
    if cfg.feedback:  # a bad folder fails now, not after mining
        from redone_sdk.training.feedback import read_feedback

        reviewed_rows = read_feedback(cfg.feedback, "dpo.jsonl")
    configure_torch(config)
    out, start = stage_dir(config, "dpo"), latest_model_dir(config, "dpo")
    model, tokenizer = load_prefix_lm(start)
    specs = task_specs(tokenizer, config)
    scoring, _, _ = training_mixture(config)
    pairs, stats, checked = mine_pairs(model, tokenizer, specs, distinct(scoring), cfg, seed=config.seed + 1)
    log.info("dpo: %d pairs mined: %s", len(pairs), stats)
    if reviewed_rows is not None:
        reviewed, feedback_stats = feedback_pairs(tokenizer, specs, reviewed_rows, cfg.feedback_repeat)
        stats.update(feedback_stats)
        pairs = pairs + reviewed
        random.Random(config.seed + 2).shuffle(pairs)
        log.info("dpo: reviewer pairs %s (each x%d)", feedback_stats, cfg.feedback_repeat)
    if is_main_process():
        names = {task: spec.label_names for task, spec in specs.items()}
        write_jsonl(
            out / "pairs.jsonl",
            [
                {
                    "source": p.source,
                    "task": p.task,
                    "fields": dict(p.fields),
                    "chosen": names[p.task][p.chosen],
                    "rejected": names[p.task][p.rejected],
                }
                for p in pairs
            ],
        )
    summary: dict[str, Any] = {
        "pairs": len(pairs),
        "mined": stats,
        "sft_average": cfg.sft_average,
        "anchor_rows": len(checked) if cfg.anchor_weight > 0 else 0,
    }
    if pairs:
        reference = pair_logprobs(model, pairs, specs)  # the frozen SFT model, once
        snapshot = (
            {name: weight.detach().clone() for name, weight in model.named_parameters()} if cfg.sft_average > 0 else {}
        )
        weights = class_weights(checked, specs, config.sft.class_balance)
        summary.update(
            train_preferences(
                model, pairs, reference, specs, cfg, seed=config.seed, anchor=checked, anchor_class_weights=weights
            )
        )
        average_with_start(model, snapshot, cfg.sft_average)
        summary["measured"] = _measured(reference, pair_logprobs(model, pairs, specs))
    else:
        log.warning("dpo: no pairs (no mistakes on the mined sample, no reviewer pairs); keeping the SFT model")
    if is_main_process():
        save_prefix_lm(model, tokenizer, out / "model", lineage_from=start)
    log.info("dpo: %s", summary)
    mark_done(config, "dpo", summary)
    return out / "model"
