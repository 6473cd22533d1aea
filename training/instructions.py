"""Multi-task instruction data in chat form: harmful content, every SNS-Bench task and SNS-TransBench both ways.

`build_instructions(data_dir, split)` returns `ChatExample`s whose `prompt` is the user turn only (the chat wrapping
is added by the trainer) and whose `answer` is the assistant's gold text, in a format `snsbench_metrics.score_task`
parses back. Order is deterministic: tasks in `TASKS` order, records in file order.

Dev split: a record is dev when `is_dev` (SHA-256, lowest 20 %) holds for its *input text*, the same key the
continued-pretraining corpus uses (`datasets.platform_texts`), so a dev record's text enters neither SFT nor CPT:
`content` for SNS-Bench files, `query + "\\n" + note` for QueryCorr (topic and explain), the Chinese side for
SNS-TransBench (so both directions of a pair fall on the same side). Moderation and QueryCorr-topic come from
`datasets.harm_examples` / `datasets.querycorr_examples` and keep their splits (COLD: `dev.csv`). On top of the hash,
train drops near-copies of dev: records whose key differs from a dev record's only in whitespace or case, translation
pairs sharing a side with a dev pair (RedTrans-Bench's en->zh records are often back-translations of its zh->en
ones), and any example whose prompt reads like a dev prompt of its task.

Scoring agreement: for `moderation` and `querycorr` the prompt is exactly the user text of `MODERATION_TEMPLATE` /
`MATCHING_TEMPLATE` (tasks.py) with the fields filled, and the answer is `answer_token(label)` (`<offensive>`,
`<grade:2>`), so generative SFT and the SDK's one-forward-pass scoring see the same text.

Long inputs: any free-text input (note, comment, doc) longer than `max_input_chars` (default 1500 characters) is cut
to that many characters at a word boundary and marked with `…`; instructions, candidate lists and queries are never
cut. Dev prompts are always cut from the head (the gold answer is kept as is). Train MRC prompts keep the gold
visible: when a gold span (MRC-simple) or reason (MRC-complex) lies past the head, a window of the budget is placed
over it (its offset drawn from a generator seeded by `seed` and the record, so the answer is not always at the same
place), gold items outside the window are dropped, and a record whose gold no longer fits is skipped. Translation
pairs are never cut: train pairs with a side over the budget are skipped, dev pairs are kept whole. Pass
`max_input_chars=None` to cut nothing.

Translation: train has both directions of every pair; dev has each pair in its benchmark direction only
(`src_lang` → `dst_lang`), which is how RedTrans-Bench is scored. Exact duplicate (prompt, answer) pairs within a task
are dropped (Taxonomy-single and Hashtag-single ship a few repeated records).
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redone_sdk.training.datasets import harm_examples, is_dev, querycorr_examples
from redone_sdk.training.snsbench_metrics import parse_list
from redone_sdk.training.tasks import MATCHING_TEMPLATE, MODERATION_TEMPLATE, answer_token

__all__ = [
    "TASKS",
    "SNS_FILES",
    "DEFAULT_MAX_INPUT_CHARS",
    "ChatExample",
    "build_instructions",
    "count_by_task",
]

TASKS = (
    "moderation",
    "querycorr",
    "querycorr_explain",
    "taxonomy_single",
    "taxonomy_multiple",
    "hashtag_single",
    "hashtag_multiple",
    "mrc_simple",
    "mrc_complex",
    "ner",
    "gender",
    "chlw",
    "querygen",
    "translation_zh_en",
    "translation_en_zh",
)
SNS_FILES = {
    "querycorr": "Note-QueryCorr-topic.json",
    "querycorr_explain": "Note-QueryCorr-explain.json",
    "taxonomy_single": "Note-Taxonomy-single.json",
    "taxonomy_multiple": "Note-Taxonomy-multiple.json",
    "hashtag_single": "Note-Hashtag-single.json",
    "hashtag_multiple": "Note-Hashtag-multiple.json",
    "mrc_simple": "Note-MRC-simple.json",
    "mrc_complex": "Note-MRC-complex.json",
    "ner": "Note-NER.json",
    "gender": "Note-Gender.json",
    "chlw": "Note-CHLW.json",
    "querygen": "Note-QueryGen.json",
}
TRANSBENCH_FILE = Path("sns-transbench") / "RedTrans-Bench.json"
DEFAULT_MAX_INPUT_CHARS = 1500
HARM_SOURCES = ("cold", "swsr", "davidson")
Split = Literal["train", "dev"]


@dataclass(frozen=True)
class ChatExample:
    """One instruction example: the user turn (`prompt`), the assistant's gold text (`answer`), and `meta`, a tuple of
    (key, value) pairs with what scoring or analysis needs (label, candidates, gold items, record index …)."""

    task: str
    prompt: str
    answer: str
    source: str
    meta: tuple[tuple[str, Any], ...] = ()

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.meta)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row (meta as an object); `from_dict` reads it back."""
        return {
            "task": self.task,
            "prompt": self.prompt,
            "answer": self.answer,
            "source": self.source,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ChatExample:
        meta = tuple((key, _frozen(value)) for key, value in (row.get("meta") or {}).items())
        return cls(task=row["task"], prompt=row["prompt"], answer=row["answer"], source=row["source"], meta=meta)


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Trim every line, drop runs of blank lines; keeps the text's words and order (gold spans stay substrings)."""
    lines = [line.strip() for line in str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _cut(text: str, budget: int | None) -> str:
    """The head of `text` in at most `budget` characters, ended at a word boundary, then `…`."""
    if budget is None or len(text) <= budget:
        return text
    head = text[:budget]
    space = max(head.rfind(" "), head.rfind("\n"))
    if space >= budget * 0.8:
        head = head[:space]
    return head.rstrip() + "…"


def _json_list(items: Iterable[str]) -> str:
    return json.dumps(list(items), ensure_ascii=False)


def _user_turn(template: str) -> str:
    return template.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


_MODERATION_PROMPT = _user_turn(MODERATION_TEMPLATE)
_MATCHING_PROMPT = _user_turn(MATCHING_TEMPLATE)


@dataclass(frozen=True)
class _Context:
    split: Split
    seed: int
    budget: int | None
    full_mrc_complex: bool

    @property
    def dev(self) -> bool:
        return self.split == "dev"

    def rng(self, task: str, key: str) -> random.Random:
        return random.Random(f"{self.seed}:{task}:{key}")


def _window(doc: str, anchors: Sequence[str], ctx: _Context, task: str) -> tuple[str, list[int]] | None:
    """The doc as the prompt shows it and the indices of the gold items it keeps in view.

    An anchor (gold span or reason) that does not occur verbatim in the doc cannot be placed and counts as in view.
    Dev, short docs and docs whose anchors all sit in the head: the head cut. Otherwise (train) a window of the
    budget over the first anchor the head misses, at a seeded offset; None when no locatable anchor stays in view."""
    budget, everything = ctx.budget, list(range(len(anchors)))
    if budget is None or len(doc) <= budget:
        return doc, everything
    head = _cut(doc, budget)
    located = {i for i, a in enumerate(anchors) if a and a in doc}
    in_head = [i for i in everything if i not in located or anchors[i] in head]
    if ctx.dev or len(in_head) == len(anchors):
        return head, in_head
    anchor = anchors[next(i for i in everything if i not in in_head)]
    width = budget - 2  # room for the two ellipses
    if len(anchor) > width:
        return (head, in_head) if located & set(in_head) else None
    start = doc.find(anchor)
    lo, hi = max(0, start + len(anchor) - width), min(start, len(doc) - width)
    offset = ctx.rng(task, doc[:200]).randint(lo, max(lo, hi))
    space = doc.rfind(" ", max(0, offset - 40), offset) if offset else -1
    if space >= 0 and lo <= space + 1 <= start:
        offset = space + 1  # start on a word, the anchor still whole in view
    text = doc[offset : offset + width]
    visible = [i for i in everything if i not in located or anchors[i] in text]
    if not located & set(visible):
        return None
    return ("…" if offset else "") + text + ("…" if offset + len(text) < len(doc) else ""), visible


# ---------------------------------------------------------------------------------------------------------------
# Builders: one per task, each (data_dir, ctx) -> examples of the split
# ---------------------------------------------------------------------------------------------------------------

_Builder = Callable[[Path, _Context], list[ChatExample]]


def _load(data_dir: Path, task: str) -> list[dict[str, Any]]:
    path = data_dir / "sns-bench" / SNS_FILES[task]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; set REDONE_DATA_DIR to the shared data folder")
    return json.loads(path.read_text(encoding="utf-8"))


def _norm_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _record_key(record: dict[str, Any]) -> str:
    """The text whose hash puts an SNS-Bench record on the dev side: `content`, as `platform_texts` keys it, or
    `query + "\\n" + note` for QueryCorr-explain, as `querycorr_examples` keys QueryCorr-topic."""
    if "sentence1" in record:
        return f"{record['sentence1'].strip()}\n{record['sentence2'].strip()}"
    return record.get("content") or ""


def _sns_records(data_dir: Path, task: str, ctx: _Context) -> Iterable[tuple[int, dict[str, Any]]]:
    """(index, record) of the split. Train also leaves out records that differ from a dev record only in whitespace
    or case (they hash apart but read the same; Taxonomy-single has such a pair)."""
    records = _load(data_dir, task)
    keys = [_record_key(r) for r in records]
    dev = [is_dev(k) for k in keys]
    dev_keys = {_norm_key(k) for k, d in zip(keys, dev, strict=True) if d}
    for index, record in enumerate(records):
        if dev[index] == ctx.dev and (ctx.dev or _norm_key(keys[index]) not in dev_keys):
            yield index, record


def _sns(task: str, prompt: str, answer: str, index: int, **meta: Any) -> ChatExample:
    items = (("record", index), *((k, _frozen(v)) for k, v in meta.items()))
    return ChatExample(task=task, prompt=prompt, answer=answer, source=f"sns-bench/{SNS_FILES[task]}", meta=items)


def _moderation(data_dir: Path, ctx: _Context, sources: Sequence[str]) -> list[ChatExample]:
    out = []
    for source in sources:
        for example in harm_examples(data_dir, source, ctx.split):
            prompt = _MODERATION_PROMPT.format(text=_cut(example.record["text"], ctx.budget))
            out.append(
                ChatExample("moderation", prompt, answer_token(example.label), source, (("label", example.label),))
            )
    return out


def _querycorr(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    out = []
    for example in querycorr_examples(data_dir, ctx.split):
        fields = example.record
        prompt = _MATCHING_PROMPT.format(query=fields["query"], note=_cut(fields["note"], ctx.budget))
        out.append(
            ChatExample(
                "querycorr",
                prompt,
                answer_token(example.label),
                "sns-bench/" + SNS_FILES["querycorr"],
                (("label", example.label),),
            )
        )
    return out


def _querycorr_explain(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "querycorr_explain"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        note = _cut(_clean(r["sentence2"]), ctx.budget)
        prompt = (
            f"Does the note meet the query's need? Answer Yes or No.\nQuery: {_clean(r['sentence1'])}\nNote: {note}"
        )
        out.append(_sns(task, prompt, r["answer"].strip(), index, label=r["answer"].strip()))
    return out


def _candidates(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _single_choice(task: str, what: str) -> _Builder:
    def build(data_dir: Path, ctx: _Context) -> list[ChatExample]:
        out = []
        for index, r in _sns_records(data_dir, task, ctx):
            answer = r["answer"].strip()
            prompt = (
                f"Pick the {what} for this note from: {r['candidates'].strip()}\n"
                f"Answer with one {what} only.\n{_cut(_clean(r['content']), ctx.budget)}"
            )
            out.append(_sns(task, prompt, answer, index, label=answer, candidates=_candidates(r["candidates"])))
        return out

    return build


def _taxonomy_multiple(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "taxonomy_multiple"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        levels = [ast.literal_eval(r[f"candidates_{k}"]) for k in ("primary", "secondary", "tertiary")]
        answer = " | ".join(part.strip() for part in r["answer"].split("|"))
        prompt = (
            "Classify this note at three levels, one category per level from the lists. "
            "Answer as: primary | secondary | tertiary\n"
            f"Primary: {', '.join(levels[0])}\nSecondary: {', '.join(levels[1])}\nTertiary: {', '.join(levels[2])}\n"
            f"{_cut(_clean(r['content']), ctx.budget)}"
        )
        out.append(_sns(task, prompt, answer, index, label=answer, candidates=levels))
    return out


def _hashtag_multiple(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "hashtag_multiple"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        labels = _candidates(r["answer"])
        prompt = (
            f"Pick every hashtag that fits this note from: {r['candidates'].strip()}\n"
            f"Answer with the hashtags, comma-separated.\n{_cut(_clean(r['content']), ctx.budget)}"
        )
        out.append(_sns(task, prompt, ", ".join(labels), index, labels=labels, candidates=_candidates(r["candidates"])))
    return out


_ENTITY_TYPE = re.compile(r"'(.+)'")


def _ner(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "ner"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        match = _ENTITY_TYPE.search(r["question"])
        entity = match.group(1).strip() if match else r["question"].strip()
        labels = _candidates(r["answer"])
        prompt = f"List every '{entity}' entity in this product title, comma-separated.\n{_clean(r['content'])}"
        out.append(_sns(task, prompt, ", ".join(labels), index, labels=labels, entity_type=entity))
    return out


def _gender(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "gender"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        prompt = (
            "Is this note gender-sensitive (likely to stir up gender conflict)? Answer Yes or No.\n"
            f"{_cut(_clean(r['content']), ctx.budget)}"
        )
        out.append(_sns(task, prompt, r["answer"].strip(), index, label=r["answer"].strip()))
    return out


_CHLW_SPLIT = re.compile(r"(?:Possible|Potential) highlight", re.IGNORECASE)
_CHLW_HEAD = re.compile(r"^(?:the\s+)?comments?(?:\s+(?:is|as follows|are))?\s*:?\s*", re.IGNORECASE)


def _chlw_fields(content: str) -> tuple[str, list[str]] | None:
    """(comment, candidate words) of a CHLW record, whose content is the benchmark's whole prompt."""
    parts = _CHLW_SPLIT.split(content, maxsplit=1)
    if len(parts) != 2:
        return None
    comment = _CHLW_HEAD.sub("", parts[0].strip(), count=1).strip()
    options_text = re.split(r"\n\s*Please|\s+Please provide", parts[1], maxsplit=1)[0]
    options = parse_list(options_text[options_text.find("[") :]) if "[" in options_text else None
    return (_clean(comment), options) if comment and options is not None else None


def _chlw(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "chlw"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        fields = _chlw_fields(r["content"])
        labels = parse_list(r["answer"])
        if fields is None or labels is None:
            raise ValueError(f"unexpected CHLW record {index}: {r['content'][:80]!r}")
        comment, options = fields
        prompt = (
            "Which candidate words in this comment deserve a search highlight? "
            "Answer with a JSON list of them, [] if none.\n"
            f"Comment: {_cut(comment, ctx.budget)}\nCandidates: {_json_list(options)}"
        )
        out.append(_sns(task, prompt, _json_list(labels), index, labels=labels, candidates=options))
    return out


def _mrc_simple(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "mrc_simple"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        doc = _clean(r["content"])
        spans = [_clean(s) for s in r["answer"]]
        shown = _window(doc, spans, ctx, task)
        if shown is None:
            continue
        text, visible = shown
        if not ctx.dev:
            if spans and not visible:
                continue  # the gold is out of view: skip rather than teach "no answer"
            spans = [spans[i] for i in visible]
        prompt = (
            "Copy the sentences of the doc that answer the question, as a JSON list; [] if none do.\n"
            f"Question: {_clean(r['query'])}\nDoc: {text}"
        )
        out.append(_sns(task, prompt, _json_list(spans), index, spans=spans))
    return out


_MRC_COMPLEX = re.compile(r"Query:\s*(.*?)\s*Level:\s*(.*?)\s*Doc:\s*(?:<Doc>)?\s*(.*?)\s*(?:</Doc>\s*)?$", re.DOTALL)
_RESULT = re.compile(r"<Result>(.*?)</Result>", re.DOTALL)


def _mrc_complex(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "mrc_complex"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        match = _MRC_COMPLEX.search(r["content"])
        results = _RESULT.findall(r["answer"])
        if match is None or not results:
            raise ValueError(f"unexpected MRC-complex record {index}: {r['content'][:80]!r}")
        query, level, doc = _clean(match.group(1)), _clean(match.group(2)), _clean(match.group(3))
        items = [(str(item["Option"]), str(item.get("Reason", ""))) for item in json.loads(results[-1])]
        shown = _window(doc, [_clean(reason) for _, reason in items], ctx, task)
        if shown is None:
            continue
        text, visible = shown
        trimmed = not ctx.dev and len(visible) < len(items)
        if trimmed:
            items = [items[i] for i in visible]
        result = "<Result>" + json.dumps([{"Option": o, "Reason": why} for o, why in items], ensure_ascii=False)
        result += "</Result>"
        answer = r["answer"].strip() if ctx.full_mrc_complex and not trimmed else result
        prompt = (
            f"List the {level} options in the doc that answer the query, each with the doc sentence supporting it, "
            'as <Result>[{"Option": "…", "Reason": "…"}]</Result>; <Result>[]</Result> if the doc has none.\n'
            f"Query: {query}\nDoc: {text}"
        )
        out.append(_sns(task, prompt, answer, index, options=items, level=level))
    return out


def _querygen(data_dir: Path, ctx: _Context) -> list[ChatExample]:
    task = "querygen"
    out = []
    for index, r in _sns_records(data_dir, task, ctx):
        prompt = (
            f"Write the search query a user would type to find this note.\n{_cut(_clean(r['content']), ctx.budget)}"
        )
        out.append(_sns(task, prompt, r["answer"].strip(), index, reference=r["answer"].strip()))
    return out


_TRANSLATE = {"en": "Translate into English:\n", "zh": "Translate into Chinese:\n"}


def _translation(data_dir: Path, ctx: _Context, src: str, dst: str) -> list[ChatExample]:
    path = data_dir / TRANSBENCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; set REDONE_DATA_DIR to the shared data folder")
    task = f"translation_{src}_{dst}"
    records = json.loads(path.read_text(encoding="utf-8"))
    dev_sides = {_norm_key(r[lang]) for r in records if is_dev(r["zh"]) for lang in ("zh", "en")}
    out = []
    for index, r in enumerate(records):
        if is_dev(r["zh"]) != ctx.dev:
            continue
        if not ctx.dev and (_norm_key(r["zh"]) in dev_sides or _norm_key(r["en"]) in dev_sides):
            continue  # a side shared with a dev pair (the en->zh records are often back-translations of zh->en)
        if ctx.dev and (r["src_lang"], r["dst_lang"]) != (src, dst):
            continue  # dev: the benchmark's own direction only
        source_text, target = r[src].strip(), r[dst].strip()
        if not source_text or not target:
            continue
        if not ctx.dev and ctx.budget is not None and max(len(source_text), len(target)) > ctx.budget:
            continue  # never cut one side of a pair
        direction = f"{r['src_lang']}->{r['dst_lang']}"
        meta = (("record", index), ("kind", r["source"]), ("reference", target), ("original_direction", direction))
        out.append(ChatExample(task, _TRANSLATE[dst] + source_text, target, f"sns-transbench/{r['source']}", meta))
    return out


_BUILDERS: dict[str, _Builder] = {
    "querycorr": _querycorr,
    "querycorr_explain": _querycorr_explain,
    "taxonomy_single": _single_choice("taxonomy_single", "category"),
    "taxonomy_multiple": _taxonomy_multiple,
    "hashtag_single": _single_choice("hashtag_single", "hashtag"),
    "hashtag_multiple": _hashtag_multiple,
    "mrc_simple": _mrc_simple,
    "mrc_complex": _mrc_complex,
    "ner": _ner,
    "gender": _gender,
    "chlw": _chlw,
    "querygen": _querygen,
    "translation_zh_en": lambda d, c: _translation(d, c, "zh", "en"),
    "translation_en_zh": lambda d, c: _translation(d, c, "en", "zh"),
}


def _build(task: str, data_dir: Path, ctx: _Context, harm_sources: Sequence[str]) -> list[ChatExample]:
    return _moderation(data_dir, ctx, harm_sources) if task == "moderation" else _BUILDERS[task](data_dir, ctx)


def build_instructions(
    data_dir: Path | str,
    split: Split,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    *,
    max_input_chars: int | None = DEFAULT_MAX_INPUT_CHARS,
    harm_sources: Sequence[str] = HARM_SOURCES,
    mrc_complex_answer: Literal["result", "full"] = "result",
) -> list[ChatExample]:
    """Instruction examples of `split` for `tasks` (default: all of `TASKS`), tasks in `TASKS` order, records in file
    order; the same arguments give the same list. `seed` only places train MRC windows (see the module doc).

    `harm_sources` picks the moderation sets (leave one out for a cross-set check). `mrc_complex_answer="full"`
    trains on the benchmark's whole answer (rewrite_query, relevance_analysis, AnswerList, Result) instead of the
    scored `<Result>` block alone."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', not {split!r}")
    wanted = list(TASKS) if tasks is None else list(tasks)
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {', '.join(TASKS)}")
    if max_input_chars is not None and max_input_chars < 64:
        raise ValueError("max_input_chars must be at least 64 (or None for no cut)")
    ctx = _Context(split=split, seed=seed, budget=max_input_chars, full_mrc_complex=mrc_complex_answer == "full")
    data_dir = Path(data_dir)
    out: list[ChatExample] = []
    for task in TASKS:
        if task not in wanted:
            continue
        examples = _build(task, data_dir, ctx, harm_sources)
        seen: set[tuple[str, str]] = set()
        if split == "train":  # last guard: no train prompt reads like a dev prompt of the task
            dev_ctx = _Context("dev", seed, max_input_chars, ctx.full_mrc_complex)
            dev_prompts = {_norm_key(e.prompt) for e in _build(task, data_dir, dev_ctx, harm_sources)}
            examples = [e for e in examples if _norm_key(e.prompt) not in dev_prompts]
        for example in examples:
            if (example.prompt, example.answer) not in seen:
                seen.add((example.prompt, example.answer))
                out.append(example)
    return out


def count_by_task(examples: Iterable[ChatExample]) -> dict[str, int]:
    """Examples per task, in `TASKS` order (tasks with none left out; unknown tasks last, sorted)."""
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.task] = counts.get(example.task, 0) + 1
    order = {task: i for i, task in enumerate(TASKS)}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
