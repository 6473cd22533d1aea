"""`InferenceOptions`: one frozen object, built the same way by `load(...)` keywords and by every command's flags."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from redone_sdk import BackendInfo, InferenceOptions, Moderator, NoteQueryMatcher
from redone_sdk.inference.options import InferenceOverrides, add_inference_args, options_from_args

FIELDS = [f.name for f in dataclasses.fields(InferenceOptions)]


def test_every_field_is_set_by_a_flag_and_a_load_keyword(
    every_inference_flag: tuple[list[str], InferenceOptions],
) -> None:
    """Adding a field to InferenceOptions without its flag or its `load` keyword fails here."""
    flags, all_set = every_inference_flag
    assert all(getattr(all_set, f) != getattr(InferenceOptions(), f) for f in FIELDS)
    parser = argparse.ArgumentParser()
    add_inference_args(parser)
    assert options_from_args(parser.parse_args([*flags, "--batch-size", "4"])) == all_set
    assert options_from_args(parser.parse_args([])) == InferenceOptions()
    assert set(InferenceOverrides.__annotations__) == set(FIELDS)
    for load in (Moderator.load, NoteQueryMatcher.load):
        parameters = inspect.signature(load).parameters
        assert "options" in parameters and parameters["overrides"].kind is inspect.Parameter.VAR_KEYWORD


def test_load_refuses_an_unknown_option_by_name() -> None:
    with pytest.raises(TypeError, match=r"unknown inference option.* batchsize.*the options are: backend"):
        Moderator.load(batchsize=4)  # type: ignore[call-arg]


def test_build_replaces_only_the_fields_given() -> None:
    base = InferenceOptions(batch_size=16, workers=2)
    assert InferenceOptions.build(base, batch_size=None, workers=1) == InferenceOptions(batch_size=16, workers=1)
    assert InferenceOptions.build(providers=["CPUExecutionProvider"]).providers == ("CPUExecutionProvider",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.batch_size = 1  # type: ignore[misc]
    for bad in ({"batch_size": 0}, {"workers": 0}, {"backend": "tensorflow"}, {"precision": "fp16"}):
        with pytest.raises(ValueError):
            InferenceOptions(**bad)  # type: ignore[arg-type]


def test_engines_expose_their_options_and_what_they_resolved_to() -> None:
    moderator = Moderator.load(options=InferenceOptions(batch_size=16, workers=1), batch_size=4)
    assert moderator.options == InferenceOptions(batch_size=4, workers=1)
    assert moderator.backend_info == BackendInfo(name="onnx", precision="int8", providers=("CPUExecutionProvider",))
    matcher = NoteQueryMatcher.load(options=moderator.options)
    assert matcher.options == moderator.options and matcher.backend_info == moderator.backend_info
    assert moderator.with_policy(moderator.policy).options == moderator.options


def test_the_readme_snippet_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the snippet reads examples/notes.jsonl from a clone
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"## Using the SDK\n\n```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    namespace: dict = {}
    exec(compile(snippet.group(1), "README.md", "exec"), namespace)
    assert [r.note_id for r in namespace["moderator"].classify_batch(namespace["notes"])] == ["n1", "n2", "2"]
