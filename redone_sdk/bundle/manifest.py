"""The bundle manifest: a typed, versioned description of every file and task in a model bundle."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "MAX_SEQUENCE_LENGTH",
    "LabelSpec",
    "LexicalFusion",
    "TaskSpec",
    "TokenizerSpec",
    "GraphSpec",
    "DataSource",
    "Lineage",
    "Manifest",
    "dump_manifest",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
# Most tokens one prompt may have: far above any bundle's (128-384) yet small enough that a manifest cannot make
# the encoder and ONNX Runtime allocate for a billion-token sequence.
MAX_SEQUENCE_LENGTH = 8192

TaskKind = Literal["moderation", "matching"]


def _relative_file(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.strip() != name or not name:
        raise ValueError(f"bundle file names must be relative paths inside the bundle, got {name!r}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):  # one name per line in the bundle digest's listing
        raise ValueError(f"bundle file names must not contain control characters, got {name!r}")
    return name


def _optional_relative_file(name: str | None) -> str | None:
    return None if name is None else _relative_file(name)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Frozen):
    """One answer of a task: its name, the verbalizer token the model emits, and where its logit sits."""

    name: str = Field(description="Category or grade name, e.g. `offensive` or `2`.")
    token: str = Field(description="The verbalizer: the single token that answers with this label.")
    token_id: int = Field(ge=0)
    column: int = Field(ge=0, description="Index of this label's logit in the scoring graph's output.")
    value: float | None = Field(default=None, description="Numeric value of a grade (matching tasks).")


class LexicalFusion(_Frozen):
    """How a matching task mixes the model with query-term coverage (`redone_sdk.lexical`), fitted on train:
    relevance = (1 - weight) * the model's expected grade value + weight * coverage, and the grade is the i-th
    when i of the ascending `grade_cuts` are at or below that relevance."""

    weight: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="Share of the coverage in the relevance.")
    grade_cuts: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = Field(
        description="Ascending thresholds on the relevance, one fewer than the task's grades."
    )
    fitted_on: str = Field(default="", description="What the weight and cuts were fitted on, and how.")

    @field_validator("grade_cuts")
    @classmethod
    def _ascending(cls, cuts: tuple[float, ...]) -> tuple[float, ...]:
        if any(b < a for a, b in pairwise(cuts)):
            raise ValueError(f"grade_cuts must be ascending, got {list(cuts)}")
        return cuts


class TaskSpec(_Frozen):
    """How one task is asked (prompt template) and answered (labels)."""

    kind: TaskKind
    template: str = Field(description="Prompt with `{field}` slots; it ends where the answer begins.")
    fields: tuple[str, ...] = Field(description="Slots of the template, in order of appearance.")
    truncate_field: str = Field(description="The slot cut (keeping its head) when the prompt is too long.")
    field_max_tokens: dict[str, Annotated[int, Field(ge=0, le=MAX_SEQUENCE_LENGTH)]] = Field(
        default_factory=dict, description="Caps on other slots, applied before the truncated slot is sized."
    )
    max_length: int = Field(
        gt=8, le=MAX_SEQUENCE_LENGTH, description="Most tokens the model reads for one prompt (at most 8192)."
    )
    labels: tuple[LabelSpec, ...] = Field(min_length=2)
    safe_label: str | None = Field(default=None, description="Moderation: the label meaning `not harmful`.")
    temperature: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="The label logits are divided by it before the softmax (temperature scaling, fitted on dev by "
        "the export so that the probabilities are calibrated); 1.0, the default for manifests without it, leaves "
        "them as the model gives them.",
    )
    label_offsets: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="Added to the temperature-scaled logit of each label named (others: 0) before the softmax: a "
        "shift of the label prior fitted on dev by the export for the dev macro-F1 of the most likely label "
        "(post-hoc logit adjustment); {}, the default for manifests without it, shifts nothing.",
    )
    lexical: LexicalFusion | None = Field(
        default=None,
        description="Matching only: fuse the model's expected relevance with query-term coverage and grade the "
        "result by cuts (absent: the score is the model's expected relevance, the grade its most likely one).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        for name in self.fields:
            if "{" + name + "}" not in self.template:
                raise ValueError(f"template lacks the slot {{{name}}}")
        if self.truncate_field not in self.fields:
            raise ValueError(f"truncate_field {self.truncate_field!r} is not one of {self.fields}")
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        if self.kind == "moderation" and self.safe_label not in names:
            raise ValueError("a moderation task needs a safe_label among its labels")
        if self.kind == "matching" and any(label.value is None for label in self.labels):
            raise ValueError("every label of a matching task needs a numeric value")
        unknown = sorted(set(self.label_offsets) - set(names))
        if unknown:
            raise ValueError(f"label_offsets name labels the task does not have: {unknown}; it has {names}")
        if self.lexical is not None:
            if self.kind != "matching":
                raise ValueError("only a matching task can have a lexical fusion")
            if len(self.lexical.grade_cuts) != len(self.labels) - 1:
                raise ValueError(
                    f"lexical.grade_cuts needs {len(self.labels) - 1} cuts for {len(self.labels)} grades, "
                    f"got {len(self.lexical.grade_cuts)}"
                )
        return self

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


class TokenizerSpec(_Frozen):
    file: str = "tokenizer.json"
    pad_token_id: int = Field(ge=0)
    special_tokens: tuple[str, ...] = Field(
        default=(), description="Control tokens; removed from user text so a note cannot forge a prompt."
    )

    _file = field_validator("file")(_relative_file)


class GraphSpec(_Frozen):
    """An ONNX scoring graph: (input_ids, attention_mask) -> label_logits at the last real token."""

    file: str
    precision: Literal["fp32", "int8"]
    opset: int | None = None
    label_token_ids: tuple[int, ...] = Field(description="Vocabulary id behind each output column.")
    prefix_cache: str | None = Field(
        default=None,
        description="NumPy .npz of each task's prompt-prefix keys and values, for a graph that takes them "
        "(`past_key.<i>`, `past_value.<i>`); the prompt's first tokens are then not recomputed for every note.",
    )

    _file = field_validator("file")(_relative_file)
    _prefix_cache = field_validator("prefix_cache")(_optional_relative_file)


class DataSource(_Frozen):
    name: str
    license: str
    records: int | None = None
    note: str = ""


class Lineage(_Frozen):
    base_model: str = Field(description="What the weights started from, e.g. `from-config:qwen2-small`.")
    architecture: str = ""
    parameters: int | None = None
    data_sources: tuple[DataSource, ...] = ()
    training_config: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""
    sdk_version: str = ""


class Manifest(_Frozen):
    format_version: int
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    license: str = Field(description="License of the weights, which follows the data they were trained on.")
    tokenizer: TokenizerSpec
    tasks: dict[str, TaskSpec]
    graphs: dict[str, GraphSpec] = Field(default_factory=dict, description="ONNX scoring graphs by precision.")
    default_graph: str | None = None
    checkpoint: str | None = Field(
        default=None, description="Folder of a Hugging Face checkpoint (safetensors) for the PyTorch backend."
    )
    generation: str | None = Field(
        default=None,
        description="Folder of an ONNX causal LM with KV cache (optimum layout) for the generative tasks.",
    )
    policy: str | None = Field(default=None, description="File of the default moderation policy.")
    files: dict[str, str] = Field(description="SHA-256 of every file the bundle uses, by relative path.")
    lineage: Lineage
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            _relative_file(name)
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"files[{name!r}] is not a lowercase hex SHA-256")
        return value

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        needed = [self.tokenizer.file, *(g.file for g in self.graphs.values())]
        needed += [g.prefix_cache for g in self.graphs.values() if g.prefix_cache]
        if self.policy:
            needed.append(_relative_file(self.policy))
        missing = [name for name in needed if name not in self.files]
        if missing:
            raise ValueError(f"files used by the bundle have no checksum in `files`: {missing}")
        if self.checkpoint is not None:
            _relative_file(self.checkpoint)
            prefix = "" if self.checkpoint == "." else self.checkpoint.rstrip("/") + "/"
            if prefix + "config.json" not in self.files:
                raise ValueError(f"checkpoint folder {self.checkpoint!r} has no config.json listed in `files`")
        if self.generation is not None:
            _relative_file(self.generation)
            if not any(
                name.startswith(self.generation.rstrip("/") + "/") and name.endswith(".onnx") for name in self.files
            ):
                raise ValueError(f"generation folder {self.generation!r} has no .onnx file listed in `files`")
        if self.default_graph is not None and self.default_graph not in self.graphs:
            raise ValueError(f"default_graph {self.default_graph!r} is not one of {sorted(self.graphs)}")
        if not self.graphs and self.checkpoint is None:
            raise ValueError("a bundle needs an ONNX graph or a checkpoint")
        for name, graph in self.graphs.items():
            for task_name, task in self.tasks.items():
                for label in task.labels:
                    if (
                        label.column >= len(graph.label_token_ids)
                        or graph.label_token_ids[label.column] != label.token_id
                    ):
                        raise ValueError(
                            f"task {task_name!r} label {label.name!r} does not match column {label.column} "
                            f"of graph {name!r}"
                        )
        return self

    def task_of_kind(self, kind: str) -> tuple[str, TaskSpec] | None:
        for name, task in sorted(self.tasks.items()):
            if task.kind == kind:
                return name, task
        return None


def dump_manifest(manifest: Manifest) -> str:
    """Plain, sorted, indented JSON — stable under version control and diff-friendly."""
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
