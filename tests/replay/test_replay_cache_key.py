"""The replay score cache is keyed by what scored: bundle files, resolved backend, graph precision, providers."""

from __future__ import annotations

from pathlib import Path

from redone_sdk import BackendInfo, Moderator, NoteQueryMatcher
from redone_sdk.replay.arms import matcher_fingerprint, moderator_fingerprint


def test_search_cache_key_changes_with_backend_and_precision(tiny_full_bundle: Path) -> None:
    fp32 = NoteQueryMatcher.load(tiny_full_bundle, backend="onnx", precision="fp32")
    int8 = NoteQueryMatcher.load(tiny_full_bundle, backend="onnx", precision="int8")
    torch = NoteQueryMatcher.load(tiny_full_bundle, backend="torch")
    keys = [matcher_fingerprint(m) for m in (fp32, int8, torch)]
    assert len(set(keys)) == 3, "scores of one backend or precision would be served to another"
    assert torch.backend_info == BackendInfo(name="torch", precision="float32", providers=("cpu",))


def test_cache_key_is_what_ran_not_how_it_was_asked(tiny_full_bundle: Path) -> None:
    """`auto` and the default graph resolve to what runs; threads, workers and batch size do not change it."""
    default = Moderator.load(tiny_full_bundle)
    ran = default.backend_info
    assert default.options.backend == "auto" and ran.name == "onnx"
    explicit = Moderator.load(tiny_full_bundle, backend="onnx", precision=ran.precision)  # type: ignore[arg-type]
    threaded = Moderator.load(tiny_full_bundle, intra_op_threads=1, workers=1, batch_size=4)
    assert moderator_fingerprint(default) == moderator_fingerprint(explicit) == moderator_fingerprint(threaded)
    other = Moderator.load(tiny_full_bundle, backend="onnx", precision="fp32" if ran.precision == "int8" else "int8")
    assert moderator_fingerprint(other) != moderator_fingerprint(default)
    matcher = NoteQueryMatcher.load(tiny_full_bundle)
    assert matcher_fingerprint(matcher) != moderator_fingerprint(default)  # another task, other scores
