"""The SDK on what the pipeline builds (the tiny preset's bundle-full: fp32 and int8 graphs, a checkpoint): the
PyTorch backend, fp32 against torch, plain checkpoint folders. These need torch; tests/sdk runs the shipped bundle
with the core alone."""

from pathlib import Path

import numpy as np
import pytest

from redone_sdk import Bundle, Moderator
from redone_sdk.inference.engine import open_backend
from redone_sdk.inference.options import InferenceOptions


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("int8", 1e-2)])
def test_batch_keeps_order_and_matches_single(tiny_full_bundle: Path, precision: str, tolerance: float) -> None:
    # int8 graphs quantize activations per batch (dynamic quantization), so a note's score moves slightly
    # with its batch neighbours; fp32 is batch-invariant.
    moderator = Moderator.load(tiny_full_bundle, precision=precision)  # type: ignore[arg-type]
    texts = ["短", "一条长一些的笔记内容" * 3, "hello world", "中" * 300, "ok"]
    batch = moderator.classify_batch(texts)
    assert [r.note_id for r in batch] == ["0", "1", "2", "3", "4"]
    for text, result in zip(texts, batch, strict=True):
        single = moderator.classify(text)
        assert single.scores == pytest.approx(result.scores, abs=tolerance)
    assert batch[3].truncated and not batch[0].truncated


def test_torch_and_onnx_backends_agree(tiny_full_bundle: Path) -> None:
    texts = ["短", "长一点的笔记" * 10, "english text here", "混合 mixed 文本 " * 20]
    torch_scores = Moderator.load(tiny_full_bundle, backend="torch").classify_batch(texts)
    fp32_scores = Moderator.load(tiny_full_bundle, precision="fp32").classify_batch(texts)
    int8_scores = Moderator.load(tiny_full_bundle, precision="int8").classify_batch(texts)
    for t, f, q in zip(torch_scores, fp32_scores, int8_scores, strict=True):
        assert np.allclose(list(t.scores.values()), list(f.scores.values()), atol=1e-5)
        assert np.allclose(list(f.scores.values()), list(q.scores.values()), atol=5e-2)


def test_plain_checkpoint_directory_runs_with_torch(tiny_run: Path, tiny_bundle: Path, tiny_full_bundle: Path) -> None:
    texts = ["短", "english text here", "混合 mixed 文本 " * 20]
    plain = Moderator.load(tiny_run / "dpo" / "model", template=tiny_bundle)
    assert plain.bundle.manifest.checkpoint == "." and not plain.bundle.manifest.graphs
    reference = Moderator.load(tiny_full_bundle, backend="torch").classify_batch(texts)
    for a, b in zip(plain.classify_batch(texts), reference, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_parallel_passes_give_the_sequential_results_in_input_order(tiny_full_bundle: Path) -> None:
    # fp32 is batch-invariant, so passes cut differently must still agree to float precision
    texts = [f"笔记 {i} " + "内容" * (i % 7) for i in range(37)] + ["中" * 300, "hello world"]
    sequential = Moderator.load(tiny_full_bundle, precision="fp32", workers=1)
    parallel = Moderator.load(tiny_full_bundle, precision="fp32", workers=3)
    workers = [open_backend(m.bundle, m.options).workers for m in (sequential, parallel)]
    assert workers == [1, 3]
    expected = sequential.classify_batch(texts)
    got = parallel.classify_batch(texts)
    assert [r.note_id for r in got] == [r.note_id for r in expected]
    for a, b in zip(expected, got, strict=True):
        assert b.scores == pytest.approx(a.scores, abs=1e-5)
        assert (b.truncated, b.label) == (a.truncated, a.label)


def test_the_torch_backend_runs_one_pass_at_a_time(tiny_full_bundle: Path) -> None:
    backend = open_backend(Bundle.load(tiny_full_bundle), InferenceOptions(backend="torch", workers=2))
    assert backend.name == "torch" and backend.workers == 1


def test_bundle_holds_no_pickles(tiny_full_bundle: Path) -> None:
    suffixes = {p.suffix for p in tiny_full_bundle.rglob("*") if p.is_file()}
    # .jinja: the chat template; .npz: the prompt-prefix cache, plain numeric arrays (read with allow_pickle=False)
    assert suffixes <= {".json", ".jinja", ".onnx", ".safetensors", ".npz"}, suffixes
    for archive in tiny_full_bundle.rglob("*.npz"):
        with np.load(archive, allow_pickle=False) as arrays:
            assert arrays.files and all(arrays[name].dtype.kind in "fi" for name in arrays.files)
