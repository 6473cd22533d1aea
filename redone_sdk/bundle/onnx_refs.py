"""The external-data files an ONNX model refers to, read from its protobuf bytes without the `onnx` package.

A bundle may only use files its manifest lists; an ONNX graph can name further files (tensors stored as "external
data"), which ONNX Runtime would otherwise open from disk unverified. This walks the few message types that can
hold tensors (graphs, nodes' attributes, functions, training info) and collects each `location`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["external_data_locations"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# field numbers (onnx.proto3): which fields of each message hold messages worth descending into
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL, _TENSOR_LOCATION = 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_TRAINING_INIT, _TRAINING_ALGO = 1, 2
_FUNCTION_NODE = 7
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies) deeper than this are refused rather than recursed into


class OnnxParseError(ValueError):
    """The bytes are not a well-formed ONNX protobuf."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise OnnxParseError("truncated or oversized varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field, wire type, value) of one message: an int for varints, a memoryview for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            yield field, wire, value
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise OnnxParseError("a length-delimited field runs past the end")
            yield field, wire, data[pos : pos + size]
            pos += size
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:
            raise OnnxParseError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise OnnxParseError("a fixed-size field runs past the end")


def _tensor(data: memoryview, found: list[str]) -> None:
    location = 0
    names: list[str] = []
    for field, wire, value in _fields(data):
        if field == _TENSOR_LOCATION and wire == _VARINT:
            location = value
        elif field == _TENSOR_EXTERNAL and wire == _LEN:
            key = val = None
            for f, w, v in _fields(value):
                if w == _LEN and f == _ENTRY_KEY:
                    key = bytes(v).decode("utf-8", "replace")
                elif w == _LEN and f == _ENTRY_VALUE:
                    val = bytes(v).decode("utf-8", "replace")
            if key == "location" and val is not None:
                names.append(val)
    if location == _EXTERNAL or names:
        found.extend(names or ["<external data without a location>"])


def _sparse(data: memoryview, found: list[str]) -> None:
    for field, wire, value in _fields(data):
        if wire == _LEN and field in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(value, found)


def _attribute(data: memoryview, found: list[str], depth: int) -> None:
    for field, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if field in (_ATTR_T, _ATTR_TENSORS):
            _tensor(value, found)
        elif field in (_ATTR_G, _ATTR_GRAPHS):
            _graph(value, found, depth + 1)
        elif field in (_ATTR_SPARSE, _ATTR_SPARSES):
            _sparse(value, found)


def _nodes_of(data: memoryview, node_field: int, found: list[str], depth: int) -> None:
    for field, wire, value in _fields(data):
        if wire == _LEN and field == node_field:
            for f, w, v in _fields(value):
                if w == _LEN and f == _NODE_ATTRIBUTE:
                    _attribute(v, found, depth)


def _graph(data: memoryview, found: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxParseError(f"subgraphs nested deeper than {_MAX_DEPTH}")
    for field, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if field == _GRAPH_INITIALIZER:
            _tensor(value, found)
        elif field == _GRAPH_SPARSE:
            _sparse(value, found)
    _nodes_of(data, _GRAPH_NODE, found, depth)


def external_data_locations(model: bytes) -> list[str]:
    """Every external-data `location` in an ONNX model's bytes, in order of appearance (repeats included).

    Raises `OnnxParseError` (a ValueError) when the bytes are not a protobuf of the expected shape."""
    data = memoryview(model)
    found: list[str] = []
    for field, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if field == _MODEL_GRAPH:
            _graph(value, found, 0)
        elif field == _MODEL_TRAINING:
            for f, w, v in _fields(value):
                if w == _LEN and f in (_TRAINING_INIT, _TRAINING_ALGO):
                    _graph(v, found, 0)
        elif field == _MODEL_FUNCTIONS:
            _nodes_of(value, _FUNCTION_NODE, found, 0)
    return found
