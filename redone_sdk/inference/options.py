"""`InferenceOptions`, how a bundle runs, and the command-line flags that build it.

A new option is one field of `InferenceOptions` and one flag in `add_inference_args`: `Moderator`,
`NoteQueryMatcher` and every command (`redone moderate`, `match`, `stream`, `replay`) take it from here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from redone_sdk.inference.backend import BackendName

__all__ = [
    "InferenceOptions",
    "InferenceOverrides",
    "Precision",
    "TorchDtype",
    "add_inference_args",
    "copy_inference_args",
    "options_from_args",
]

Precision = Literal["fp32", "int8"]
TorchDtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a bundle: backend, graph precision, batching and threads.

    `backend`: "auto" runs the bundle's ONNX graph when it has one, else its PyTorch checkpoint. `precision`
    picks the ONNX graph (default: the bundle's `default_graph`); `torch_dtype` the PyTorch weights' type.
    `batch_size` caps one forward pass: a call is split into length-sorted passes of at most that many notes.
    `workers` passes run at once, each on its own thread (ONNX backend; default on CPU: one per usable core,
    each pass on one intra-op thread). `intra_op_threads` alone keeps one pass at a time on that many threads;
    the PyTorch backend and GPU providers always run one pass at a time. `allow_spinning=False` lets ONNX
    Runtime's idle threads sleep between passes (helps when other work shares the cores). `providers`: ONNX
    Runtime execution providers to try (default TensorRT → CUDA → CPU, among those installed).
    Engines that open the same graph with the same options share one ONNX Runtime session per process.
    """

    backend: BackendName = "auto"
    precision: Precision | None = None
    batch_size: int = 8
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    providers: tuple[str, ...] | None = None
    torch_dtype: TorchDtype = "float32"
    allow_spinning: bool | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        for name, kind in (("backend", BackendName), ("precision", Precision), ("torch_dtype", TorchDtype)):
            value = getattr(self, name)
            if value is not None and value not in get_args(kind):
                raise ValueError(f"{name} must be one of {get_args(kind)}, got {value!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        for name in ("intra_op_threads", "inter_op_threads", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.providers is not None:  # any sequence in, a hashable tuple kept; empty means the default
            object.__setattr__(self, "providers", tuple(self.providers) or None)

    @classmethod
    def build(cls, options: InferenceOptions | None = None, **fields: Any) -> InferenceOptions:
        """`options` (default: all defaults) with each of `fields` that is not None put in its place."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise TypeError(f"unknown inference option(s) {', '.join(unknown)}; the options are: {known}")
        given = {name: value for name, value in fields.items() if value is not None}
        return dataclasses.replace(options or cls(), **given)


class InferenceOverrides(TypedDict, total=False):
    """The keywords `Moderator.load` and `NoteQueryMatcher.load` take in place of `InferenceOptions` fields
    (for type checkers and editors; a test keeps them equal to the fields)."""

    backend: BackendName | None
    precision: Precision | None
    batch_size: int | None
    intra_op_threads: int | None
    inter_op_threads: int | None
    providers: Sequence[str] | None
    torch_dtype: TorchDtype | None
    allow_spinning: bool | None
    workers: int | None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _provider_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


# argparse dest -> InferenceOptions field, for every flag `add_inference_args` adds
_FIELD_OF_DEST = {
    "backend": "backend",
    "precision": "precision",
    "model_batch_size": "batch_size",
    "workers": "workers",
    "threads": "intra_op_threads",
    "inter_op_threads": "inter_op_threads",
    "spinning": "allow_spinning",
    "providers": "providers",
    "torch_dtype": "torch_dtype",
}


def add_inference_args(
    parser: argparse.ArgumentParser, *, batch_size_flag: str = "--batch-size", batch_size_default: int | None = None
) -> None:
    """Add the model flags shared by every command; `options_from_args` reads them back. A flag not given keeps
    `InferenceOptions`' default; `batch_size_flag`/`batch_size_default` let a command that already has a
    `--batch-size` of its own (`redone stream`) or a different bulk size (`redone replay`) rename or reset it."""
    defaults = InferenceOptions()
    group = parser.add_argument_group("inference options", "How the model runs (see redone_sdk.InferenceOptions).")
    group.add_argument(
        "--backend",
        choices=get_args(BackendName),
        default=None,
        help="inference backend (default auto: ONNX when the bundle has a graph, else PyTorch)",
    )
    group.add_argument(
        "--precision", choices=get_args(Precision), default=None, help="ONNX graph to run (default: the bundle's)"
    )
    group.add_argument(
        batch_size_flag,
        dest="model_batch_size",
        type=_positive_int,
        default=batch_size_default,
        metavar="N",
        help=f"most notes per forward pass (default {batch_size_default or defaults.batch_size})",
    )
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="forward passes run at once, one thread each (default on CPU: one per usable core)",
    )
    group.add_argument(
        "--threads",
        "--intra-op-threads",
        dest="threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="intra-op threads of each pass (alone: one pass at a time on N threads)",
    )
    group.add_argument(
        "--inter-op-threads", type=_positive_int, default=None, metavar="N", help="ONNX Runtime inter-op threads"
    )
    group.add_argument(
        "--spinning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let ONNX Runtime's idle threads busy-wait between passes (default: ONNX Runtime's choice)",
    )
    group.add_argument(
        "--providers",
        type=_provider_list,
        default=None,
        metavar="A,B",
        help="ONNX Runtime execution providers to try, in order (default: TensorRT, CUDA, CPU among those present)",
    )
    group.add_argument(
        "--torch-dtype",
        choices=get_args(TorchDtype),
        default=None,
        help=f"weights' type on the PyTorch backend (default {defaults.torch_dtype})",
    )


def options_from_args(args: argparse.Namespace, base: InferenceOptions | None = None) -> InferenceOptions:
    """The `InferenceOptions` of parsed `add_inference_args` flags (flags not given keep `base`'s values)."""
    return InferenceOptions.build(base, **{field: getattr(args, dest) for dest, field in _FIELD_OF_DEST.items()})


def copy_inference_args(source: argparse.Namespace, target: argparse.Namespace) -> None:
    """Give `target` the model flags parsed into `source` (a command that runs another command's handler)."""
    for dest in _FIELD_OF_DEST:
        setattr(target, dest, getattr(source, dest))
