"""Prompt encoding: render a task's template around user text, truncate by the documented rule, batch by length.

Truncation rule: the template's fixed text (instruction and answer cue) is always kept whole. Capped slots
(e.g. the query) keep at most `field_max_tokens` tokens; the `truncate_field` slot (the note) then keeps
its first tokens up to what remains of `max_length`. Any cut sets `truncated` in the result.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from redone_sdk.bundle.manifest import TaskSpec
from redone_sdk.errors import BundleFormatError

__all__ = ["EncodedPrompt", "PromptEncoder", "length_buckets", "pad_batch"]


@dataclass(frozen=True)
class EncodedPrompt:
    ids: tuple[int, ...]
    truncated: bool


class PromptEncoder:
    """Turns field values into token ids for one task, identically at training and inference time."""

    def __init__(self, tokenizer: Tokenizer, task: TaskSpec, special_tokens: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self.task = task
        self._special = re.compile("|".join(re.escape(t) for t in special_tokens)) if special_tokens else None
        # Split the template into literal pieces and slots; literals are tokenized once here.
        self._pieces: list[tuple[str, str]] = []
        for literal, field, _spec, _conv in string.Formatter().parse(task.template):
            if literal:
                self._pieces.append(("literal", literal))
            if field is not None:
                if field not in task.fields:
                    raise BundleFormatError(f"template slot {{{field}}} is not among the task's fields")
                self._pieces.append(("field", field))
        self._literal_ids = {
            literal: tuple(tokenizer.encode(literal, add_special_tokens=False).ids)
            for kind, literal in self._pieces
            if kind == "literal"
        }
        self._fixed_len = sum(len(self._literal_ids[value]) for kind, value in self._pieces if kind == "literal")
        if self._fixed_len >= task.max_length:
            raise BundleFormatError(f"the template alone is {self._fixed_len} tokens, max_length is {task.max_length}")

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        """Token ids every prompt of this task starts with (the template's text before its first slot)."""
        kind, value = self._pieces[0]
        return self._literal_ids[value] if kind == "literal" else ()

    def clean(self, text: str) -> str:
        """Remove control-token strings from user text so a note cannot forge the prompt's structure."""
        return self._special.sub("", text) if self._special else text

    def encode_batch(self, records: Sequence[Mapping[str, str]]) -> list[EncodedPrompt]:
        task = self.task
        field_ids: dict[str, list[list[int]]] = {}
        for field in task.fields:
            texts = [self.clean(record[field]) for record in records]
            field_ids[field] = [enc.ids for enc in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        out = []
        for i in range(len(records)):
            truncated = False
            budget = task.max_length - self._fixed_len
            values: dict[str, list[int]] = {}
            for field in task.fields:
                if field == task.truncate_field:
                    continue
                ids = field_ids[field][i]
                cap = task.field_max_tokens.get(field)
                if cap is not None and len(ids) > cap:
                    ids, truncated = ids[:cap], True
                values[field] = ids
                budget -= len(ids)
            main = field_ids[task.truncate_field][i]
            budget = max(budget, 1)
            if len(main) > budget:
                main, truncated = main[:budget], True
            values[task.truncate_field] = main
            ids: list[int] = []
            for kind, value in self._pieces:
                ids.extend(self._literal_ids[value] if kind == "literal" else values[value])
            out.append(EncodedPrompt(ids=tuple(ids), truncated=truncated))
        return out


# What one forward pass costs beyond its padded tokens, in token slots (a batch of n items padded to length L
# costs about CALL_COST + n * L), fitted on redone-base int8 with one intra-op thread per pass at batch size 64;
# what the cuts gain over one pass per worker: `python -m benchmarks.bucketing` (benchmarks/results/speed.md).
CALL_COST = 48


def length_buckets(
    lengths: Sequence[int], batch_size: int, *, min_batches: int = 1, call_cost: float = CALL_COST
) -> list[list[int]]:
    """Indices grouped into batches of neighbours in length order, cut where padding and passes cost least.

    A batch costs `call_cost` plus its size times its longest item; the cuts minimize the total over the sorted
    lengths (at most `batch_size` per batch), so long and short items rarely share a pass. When that leaves
    fewer than `min_batches` batches (one per parallel worker) of a small call, it is cut instead into
    `min_batches` batches of about equal work, so no worker idles while another holds the whole call."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    count, parts = len(order), max(1, min_batches)
    if count <= 1:
        return [order] if order else []
    batches = _least_cost_cuts(order, lengths, batch_size, call_cost)
    if len(batches) >= min(parts, count) or count >= parts * batch_size:
        return batches
    longest_first = order[::-1]
    low, high = lengths[longest_first[0]], lengths[longest_first[0]] * batch_size
    while low < high:  # the least cost per batch that still fits in `parts` batches
        cap = (low + high) // 2
        if len(_pack(longest_first, lengths, cap, batch_size)) <= parts:
            high = cap
        else:
            low = cap + 1
    return [batch[::-1] for batch in reversed(_pack(longest_first, lengths, low, batch_size))]


def _least_cost_cuts(order: list[int], lengths: Sequence[int], batch_size: int, call_cost: float) -> list[list[int]]:
    """Contiguous runs of `order` (sorted by length) minimizing sum(call_cost + size * longest): dynamic
    programming, best[j] = min over the last batch (i, j] of best[i] + call_cost + (j - i) * length[j - 1]."""
    count = len(order)
    sorted_lengths = np.fromiter((lengths[i] for i in order), dtype=np.float64, count=count)
    best = np.zeros(count + 1)
    cut = np.zeros(count + 1, dtype=np.int64)
    starts = np.arange(count + 1, dtype=np.float64)
    for j in range(1, count + 1):
        low = max(0, j - batch_size)
        cost = best[low:j] + (j - starts[low:j]) * sorted_lengths[j - 1]
        k = int(np.argmin(cost))
        best[j], cut[j] = cost[k] + call_cost, low + k
    batches = []
    j = count
    while j > 0:
        batches.append(order[cut[j] : j])
        j = int(cut[j])
    return batches[::-1]


def _pack(longest_first: list[int], lengths: Sequence[int], cap: int, batch_size: int) -> list[list[int]]:
    """Fill batches in order while size x longest item stays within `cap` and size within `batch_size`."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in longest_first:
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[current[0]] > cap):
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both int64."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
