"""benchmarks/tokenization.py: token counts, [UNK] and English-word figures on hand-checkable texts with a small
WordPiece built here (not the 55 MB jar), and the whole report on the fixture data with the shipped bundle's BPE."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from redone_sdk.benchmarks.tokenization import (
    Variant,
    coverage,
    english_word_counts,
    lowercased,
    main,
    measure,
    quotes_folded,
    with_words_in_unused,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[unused1]", "[unused2]", "hello", "world", "##s", "你", "好", "!", '"']
TEXT = "Hello worlds 你好 xyz!"  # as shipped: [UNK] world ##s 你 好 [UNK] !


def _wordpiece() -> Tokenizer:
    """A BERT-Chinese-like WordPiece: cased BertNormalizer, BertPreTokenizer, 13 tokens, two [unused] slots."""
    tokenizer = Tokenizer(WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=False)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    return tokenizer


def _variant(tokenizer: Tokenizer) -> Variant:
    return Variant("t", tokenizer, "test", "0" * 64, "[UNK]")


def test_cased_wordpiece_figures() -> None:
    stats = measure(_variant(_wordpiece()), [TEXT, "你好"])
    assert stats.texts == 2
    assert (stats.tokens_mean, stats.tokens_p50) == (4.5, 4.5)  # 7 and 2 tokens
    assert stats.unk_token_share == pytest.approx(2 / 9)
    assert stats.unk_text_share == 0.5
    assert stats.texts_with_english == 0.5
    assert stats.english_words == 3  # Hello (1 piece, [UNK]), worlds (2 pieces), xyz (1 piece, [UNK])
    assert stats.words_split_share == pytest.approx(1 / 3)
    assert stats.pieces_per_word == pytest.approx(4 / 3)
    assert stats.words_fully_unk_share == pytest.approx(2 / 3)
    assert dict(stats.unk_pieces) == {"Hello": 1, "xyz": 1}


def test_lowercasing_and_unused_slots() -> None:
    lower = lowercased(_wordpiece())
    stats = measure(_variant(lower), [TEXT])
    assert (stats.tokens_mean, stats.unk_token_share) == (7.0, pytest.approx(1 / 7))
    assert stats.words_fully_unk_share == pytest.approx(1 / 3)  # only xyz
    slotted, placed = with_words_in_unused(lower, ["hello", "xyz", "worlds", "abc"])
    assert placed == ["xyz", "worlds"]  # hello is in the vocabulary already; two slots
    assert slotted.encode(TEXT, add_special_tokens=False).tokens == ["hello", "worlds", "你", "好", "xyz", "!"]
    stats = measure(_variant(slotted), [TEXT])
    assert (stats.unk_token_share, stats.words_split_share, stats.pieces_per_word) == (0.0, 0.0, 1.0)
    assert slotted.get_vocab_size() == len(VOCAB)


def test_curly_quotes_fold_to_ascii() -> None:
    assert _wordpiece().encode("“hello”", add_special_tokens=False).tokens == ["[UNK]", "hello", "[UNK]"]
    assert quotes_folded(_wordpiece()).encode("“Hello”", add_special_tokens=False).tokens == ['"', "hello", '"']


def test_bpe_has_no_unk_figures(default_bundle: Path) -> None:
    bpe = Tokenizer.from_file(str(default_bundle / "tokenizer.json"))
    stats = measure(Variant("bpe", bpe, "test", "0" * 64), ["hello world", "你好"])
    assert stats.unk_token_share is None and stats.words_fully_unk_share is None
    lengths = [len(bpe.encode(t, add_special_tokens=False).ids) for t in ("hello world", "你好")]
    assert stats.tokens_mean == sum(lengths) / 2
    assert stats.english_words == 2 and stats.pieces_per_word >= 1


def test_coverage_counts_whole_words_and_slots() -> None:
    vocab = {t: i for i, t in enumerate(VOCAB)}
    counts = english_word_counts(["Hello hello HELLO hello hello xyz xyz Xyz abc ABC"])
    assert counts == Counter({"hello": 5, "xyz": 3, "abc": 2})
    c = coverage(vocab, counts, top=2)
    assert (c["top"], c["top_in_vocab"], c["top_missing"], c["unused_slots"]) == (2, 1, 1, 2)
    assert c["top_share_of_occurrences"] == pytest.approx(0.8)
    assert c["occurrences_in_vocab_share"] == pytest.approx(0.5)
    assert c["missing_in_slots_share"] == c["all_top_missing_share"] == pytest.approx(0.3)
    assert c["missing_examples"] == ["xyz"]


def test_report_on_fixture_data(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], default_bundle: Path
) -> None:
    wordpiece = tmp_path / "wordpiece.json"
    _wordpiece().save(str(wordpiece))
    out = tmp_path / "tokenization.json"
    argv = ["--data-dir", str(data_dir), "--limit", "20", "--json", str(out), "--bge-tokenizer", str(wordpiece)]
    assert main([*argv, "--bundle-tokenizer", str(default_bundle / "tokenizer.json")]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["sets"]) == {"davidson", "cold", "swsr"}
    names = ["bundle-bpe", "bge", "bge-lower", "bge-nfkc-lower", "bge-folded", "bge-lower+unused"]
    for per_tokenizer in report["sets"].values():
        assert list(per_tokenizer) == names
        assert per_tokenizer["bundle-bpe"]["unk_token_share"] is None
        assert 0 < per_tokenizer["bge"]["texts"] <= 20
        assert per_tokenizer["bge"]["unk_token_share"] > 0  # a 13-token vocabulary knows next to nothing
    assert report["sets"]["davidson"]["bge"]["english_words"] > 0
    assert len(report["unused_words"]) == 2 and report["coverage"]["unused_slots"] == 2
    printed = capsys.readouterr().out
    assert "**davidson** dev" in printed and "Vocabulary coverage" in printed
