from pathlib import Path

import numpy as np
import pytest

from redone_sdk import (
    BundleFormatError,
    CategoryRule,
    InvalidInputError,
    ModerationResult,
    Moderator,
    Note,
    Policy,
    PolicyError,
)


@pytest.fixture(scope="module")
def moderator(tiny_bundle: Path) -> Moderator:
    return Moderator.load(tiny_bundle)


def test_classify_accepts_note_mapping_and_text(moderator: Moderator) -> None:
    for value in (Note(note_id="n1", content="你好"), {"note_id": "n1", "content": "你好"}, "你好"):
        result = moderator.classify(value)
        assert isinstance(result, ModerationResult)
        assert set(result.scores) == {"offensive", "hate", "sexism"}
        assert 0.0 <= sum(result.scores.values()) <= 1.0 + 1e-6
        assert result.model.name == "redone-tiny"
        assert result.flagged == (result.action != "allow")


def test_same_text_same_scores_whatever_the_input_type(moderator: Moderator) -> None:
    a = moderator.classify(Note(note_id="a", content="测试"))
    b = moderator.classify("测试")
    assert a.scores == pytest.approx(b.scores, abs=1e-6)


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


def test_batch_always_returns_a_list(moderator: Moderator) -> None:
    assert moderator.classify_batch([]) == []
    assert isinstance(moderator.classify_batch(iter(["a"])), list)


def test_bad_input_raises_sdk_error(moderator: Moderator) -> None:
    with pytest.raises(InvalidInputError, match="note at index 1"):
        moderator.classify_batch(["fine", {"note_id": "x"}])
    with pytest.raises(InvalidInputError):
        moderator.classify(None)  # type: ignore[arg-type]


def test_policy_changes_actions_without_reloading(moderator: Moderator) -> None:
    strict = Policy(name="strict", default=CategoryRule(review=0.0, block=0.0))
    lenient = Policy(name="lenient", default=CategoryRule(review=1.0))
    note = "随便一条笔记"
    assert moderator.with_policy(strict).classify(note).action == "block"
    assert moderator.with_policy(lenient).classify(note).action == "allow"
    assert moderator.policy.name == "default"


def test_policy_from_file_and_category_check(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    Policy(name="file", default=CategoryRule(review=0.0)).save(path)
    assert Moderator.load(tiny_bundle, policy=path).classify("x").action == "review"
    with pytest.raises(PolicyError, match="does not have"):
        Moderator.load(
            tiny_bundle, policy=Policy(rules={"spam": CategoryRule(review=0.5)}, default=CategoryRule(review=0.5))
        )


def test_torch_and_onnx_backends_agree(tiny_full_bundle: Path) -> None:
    texts = ["短", "长一点的笔记" * 10, "english text here", "混合 mixed 文本 " * 20]
    torch_scores = Moderator.load(tiny_full_bundle, backend="torch").classify_batch(texts)
    fp32_scores = Moderator.load(tiny_full_bundle, precision="fp32").classify_batch(texts)
    int8_scores = Moderator.load(tiny_full_bundle, precision="int8").classify_batch(texts)
    for t, f, q in zip(torch_scores, fp32_scores, int8_scores, strict=True):
        assert np.allclose(list(t.scores.values()), list(f.scores.values()), atol=1e-5)
        assert np.allclose(list(f.scores.values()), list(q.scores.values()), atol=5e-2)


def test_thread_and_batch_options(tiny_bundle: Path) -> None:
    a = Moderator.load(tiny_bundle, batch_size=1, intra_op_threads=1).classify_batch(["a", "bb", "ccc"])
    b = Moderator.load(tiny_bundle, batch_size=64).classify_batch(["a", "bb", "ccc"])
    for x, y in zip(a, b, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-2)
    with pytest.raises(ValueError, match="batch_size"):
        Moderator.load(tiny_bundle, batch_size=0)


def test_plain_checkpoint_directory_runs_with_torch(tiny_run: Path, tiny_bundle: Path, tiny_full_bundle: Path) -> None:
    texts = ["短", "english text here", "混合 mixed 文本 " * 20]
    plain = Moderator.load(tiny_run / "dpo" / "model", template=tiny_bundle)
    assert plain.bundle.manifest.checkpoint == "." and not plain.bundle.manifest.graphs
    reference = Moderator.load(tiny_full_bundle, backend="torch").classify_batch(texts)
    for a, b in zip(plain.classify_batch(texts), reference, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_checkpoint_without_safetensors_is_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BundleFormatError, match=r"no \.safetensors weights"):
        Moderator.load(tmp_path, template=tiny_bundle)


def test_engines_on_one_graph_share_one_onnx_session(tiny_bundle: Path) -> None:
    from redone_sdk import NoteQueryMatcher
    from redone_sdk.inference.engine import InferenceOptions, open_backend

    moderator = Moderator.load(tiny_bundle, intra_op_threads=2)
    matcher = NoteQueryMatcher.load(tiny_bundle, intra_op_threads=2)
    assert moderator._engine._backend is matcher._engine._backend
    parallel = Moderator.load(tiny_bundle, workers=2), NoteQueryMatcher.load(tiny_bundle, workers=2)
    pools = {id(engine._backend.executor()) for engine in (parallel[0]._engine, parallel[1]._engine)}
    assert len(pools) == 1  # one pool of 2 workers for both, not 2 each
    other = open_backend(moderator.bundle, InferenceOptions(intra_op_threads=2, allow_spinning=False))
    assert other is not moderator._engine._backend
    scores = moderator.classify("测试").scores
    quiet = Moderator.load(tiny_bundle, intra_op_threads=2, allow_spinning=False).classify("测试").scores
    assert quiet == pytest.approx(scores, abs=1e-6)


def test_parallel_passes_give_the_sequential_results_in_input_order(tiny_full_bundle: Path) -> None:
    # fp32 is batch-invariant, so passes cut differently must still agree to float precision
    texts = [f"笔记 {i} " + "内容" * (i % 7) for i in range(37)] + ["中" * 300, "hello world"]
    sequential = Moderator.load(tiny_full_bundle, precision="fp32", workers=1)
    parallel = Moderator.load(tiny_full_bundle, precision="fp32", workers=3)
    assert (sequential._engine.workers, parallel._engine.workers) == (1, 3)
    expected = sequential.classify_batch(texts)
    got = parallel.classify_batch(texts)
    assert [r.note_id for r in got] == [r.note_id for r in expected]
    for a, b in zip(expected, got, strict=True):
        assert b.scores == pytest.approx(a.scores, abs=1e-5)
        assert (b.truncated, b.label) == (a.truncated, a.label)


def test_parallel_passes_are_safe_from_many_caller_threads(tiny_bundle: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    moderator = Moderator.load(tiny_bundle, workers=2)
    calls = [[f"第 {c} 批 {i}" * (1 + i % 4) for i in range(9)] for c in range(12)]
    expected = [[r.scores for r in moderator.classify_batch(call)] for call in calls]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda call: [r.scores for r in moderator.classify_batch(call)], calls))
    assert got == expected


def test_workers_default_to_the_cores_with_one_thread_per_pass(tiny_bundle: Path, tiny_full_bundle: Path) -> None:
    from redone_sdk.inference.engine import InferenceOptions, usable_cores

    default = Moderator.load(tiny_bundle)
    assert default._engine.workers == usable_cores()
    session_threads = default._engine._backend._session.get_session_options().intra_op_num_threads
    assert session_threads == (1 if usable_cores() > 1 else 0)  # 0: ONNX Runtime's own choice
    # intra-op threads chosen alone keep one pass at a time on that many threads
    threaded = Moderator.load(tiny_bundle, intra_op_threads=2)
    assert threaded._engine.workers == 1
    assert threaded._engine._backend._session.get_session_options().intra_op_num_threads == 2
    assert Moderator.load(tiny_full_bundle, backend="torch", workers=2)._engine.workers == 1
    with pytest.raises(ValueError, match="workers must be at least 1"):
        InferenceOptions(workers=0)


def test_parallel_passes_work_in_a_forked_child(tiny_bundle: Path) -> None:
    import multiprocessing

    global _FORKED
    _FORKED = Moderator.load(tiny_bundle, workers=2)
    texts = [f"fork {i}" * (1 + i % 3) for i in range(10)]
    expected = [r.scores for r in _FORKED.classify_batch(texts)]  # the pool's threads exist before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(_scores_in_child, (texts,))
    assert got == expected


_FORKED: Moderator | None = None


def _scores_in_child(texts: list[str]) -> list[dict[str, float]]:
    assert _FORKED is not None
    return [r.scores for r in _FORKED.classify_batch(texts)]
