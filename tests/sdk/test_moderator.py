from pathlib import Path

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
def moderator(default_bundle: Path) -> Moderator:
    return Moderator.load(default_bundle)


def test_classify_accepts_note_mapping_and_text(moderator: Moderator) -> None:
    for value in (Note(note_id="n1", content="你好"), {"note_id": "n1", "content": "你好"}, "你好"):
        result = moderator.classify(value)
        assert isinstance(result, ModerationResult)
        assert set(result.scores) == {"offensive", "hate", "sexism"}
        assert 0.0 <= sum(result.scores.values()) <= 1.0 + 1e-6
        assert (result.model.name, result.model.version) == (moderator.bundle.name, moderator.bundle.version)
        assert result.flagged == (result.action != "allow")


def test_same_text_same_scores_whatever_the_input_type(moderator: Moderator) -> None:
    a = moderator.classify(Note(note_id="a", content="测试"))
    b = moderator.classify("测试")
    assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_batch_keeps_order_and_matches_single(moderator: Moderator) -> None:
    # the shipped graph is int8, which quantizes activations per batch (dynamic quantization): a note's score
    # moves slightly with its batch neighbours (tests/training/test_trained_bundle.py: fp32 is batch-invariant)
    texts = ["短", "一条长一些的笔记内容" * 3, "hello world", "中" * 300, "ok"]
    batch = moderator.classify_batch(texts)
    assert [r.note_id for r in batch] == ["0", "1", "2", "3", "4"]
    for text, result in zip(texts, batch, strict=True):
        single = moderator.classify(text)
        assert single.scores == pytest.approx(result.scores, abs=1e-2)
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
    assert moderator.policy == Policy.load(moderator.bundle.policy_path)  # the bundle's own, unchanged


def test_policy_from_file_and_category_check(default_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    Policy(name="file", default=CategoryRule(review=0.0)).save(path)
    assert Moderator.load(default_bundle, policy=path).classify("x").action == "review"
    with pytest.raises(PolicyError, match="does not have"):
        Moderator.load(
            default_bundle, policy=Policy(rules={"spam": CategoryRule(review=0.5)}, default=CategoryRule(review=0.5))
        )


def test_thread_and_batch_options(default_bundle: Path) -> None:
    a = Moderator.load(default_bundle, batch_size=1, intra_op_threads=1).classify_batch(["a", "bb", "ccc"])
    b = Moderator.load(default_bundle, batch_size=64).classify_batch(["a", "bb", "ccc"])
    for x, y in zip(a, b, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-2)
    with pytest.raises(ValueError, match="batch_size"):
        Moderator.load(default_bundle, batch_size=0)


def test_checkpoint_without_safetensors_is_refused(tmp_path: Path, default_bundle: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BundleFormatError, match=r"no \.safetensors weights"):
        Moderator.load(tmp_path, template=default_bundle)


def test_engines_on_one_graph_share_one_onnx_session(default_bundle: Path) -> None:
    """Engines built with equal options get one backend (one ONNX Runtime session, one pool of workers)."""
    from redone_sdk import NoteQueryMatcher
    from redone_sdk.inference.engine import open_backend
    from redone_sdk.inference.options import InferenceOptions

    moderator = Moderator.load(default_bundle, intra_op_threads=2)
    matcher = NoteQueryMatcher.load(default_bundle, intra_op_threads=2)
    assert moderator.options == matcher.options
    backend = open_backend(moderator.bundle, moderator.options)
    assert open_backend(matcher.bundle, matcher.options) is backend
    engines = Moderator.load(default_bundle, workers=2), NoteQueryMatcher.load(default_bundle, workers=2)
    parallel = [open_backend(engine.bundle, engine.options) for engine in engines]
    assert parallel[0] is parallel[1] and parallel[0].workers == 2
    assert parallel[0].executor() is parallel[1].executor()  # one pool of 2 workers for both, not 2 each
    other = open_backend(moderator.bundle, InferenceOptions(intra_op_threads=2, allow_spinning=False))
    assert other is not backend
    scores = moderator.classify("测试").scores
    quiet = Moderator.load(default_bundle, intra_op_threads=2, allow_spinning=False)
    assert quiet.options.allow_spinning is False
    assert quiet.classify("测试").scores == pytest.approx(scores, abs=1e-6)


def test_parallel_passes_keep_input_order(default_bundle: Path) -> None:
    # passes cut differently (3 workers or 1): order and truncation agree; int8 scores move a little with their
    # batch (tests/training/test_trained_bundle.py checks fp32 to float precision)
    texts = [f"笔记 {i} " + "内容" * (i % 7) for i in range(37)] + ["中" * 300, "hello world"]
    sequential = Moderator.load(default_bundle, workers=1)
    parallel = Moderator.load(default_bundle, workers=3)
    expected = sequential.classify_batch(texts)
    got = parallel.classify_batch(texts)
    assert [r.note_id for r in got] == [r.note_id for r in expected] == [str(i) for i in range(len(texts))]
    for a, b in zip(expected, got, strict=True):
        assert b.scores == pytest.approx(a.scores, abs=2e-2)
        assert b.truncated == a.truncated


def test_parallel_passes_are_safe_from_many_caller_threads(default_bundle: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    moderator = Moderator.load(default_bundle, workers=2)
    calls = [[f"第 {c} 批 {i}" * (1 + i % 4) for i in range(9)] for c in range(12)]
    expected = [[r.scores for r in moderator.classify_batch(call)] for call in calls]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda call: [r.scores for r in moderator.classify_batch(call)], calls))
    assert got == expected


def test_workers_default_to_the_cores(default_bundle: Path) -> None:
    from redone_sdk.inference.engine import open_backend, usable_cores
    from redone_sdk.inference.options import InferenceOptions

    default = Moderator.load(default_bundle)
    assert default.options.workers is None  # as given; the backend resolves it
    assert open_backend(default.bundle, default.options).workers == usable_cores()
    assert default.workers == usable_cores()  # resolved: what `redone serve` runs as many passes at once as
    # intra-op threads chosen alone keep one pass at a time on that many threads
    threaded = Moderator.load(default_bundle, intra_op_threads=2)
    assert open_backend(threaded.bundle, threaded.options).workers == 1
    assert threaded.workers == 1 and Moderator.load(default_bundle, workers=3).workers == 3
    with pytest.raises(ValueError, match="workers must be at least 1"):
        InferenceOptions(workers=0)


def test_parallel_passes_work_in_a_forked_child(default_bundle: Path) -> None:
    import multiprocessing

    global _FORKED
    _FORKED = Moderator.load(default_bundle, workers=2)
    texts = [f"fork {i}" * (1 + i % 3) for i in range(10)]
    expected = [r.scores for r in _FORKED.classify_batch(texts)]  # the pool's threads exist before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(_scores_in_child, (texts,))
    assert got == expected


_FORKED: Moderator | None = None


def _scores_in_child(texts: list[str]) -> list[dict[str, float]]:
    assert _FORKED is not None
    return [r.scores for r in _FORKED.classify_batch(texts)]
