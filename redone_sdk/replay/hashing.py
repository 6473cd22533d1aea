"""Hashes of the replay: a vectorized 64-bit hash of id columns (users → bootstrap clusters, distinct-user count)
and SHA-256 of note texts (the score cache's key).

`string_hash64` is FNV-1a (64-bit) of each string's UTF-8 bytes, xor its length, through the splitmix64
finalizer: a published hash with fixed constants, so a user lands in the same cluster on every machine, in
every batch and in every release. It is written with numpy because neither numpy nor pyarrow exposes a hash
of string columns; a per-row library hash (`xxhash`, `hashlib`) costs a Python call per impression.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from redone_sdk.replay.columns import from_dictionary

__all__ = ["string_hash64", "text_hash"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_CHUNK = 1 << 18  # strings hashed together (bounds the temporary arrays)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _fnv1a(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """FNV-1a of each string, one byte position at a time for all strings at once, then mixed."""
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    h = np.full(len(starts), _FNV_OFFSET, dtype=np.uint64)
    longest = int(lengths.max()) if len(lengths) else 0
    padded = np.append(data, np.zeros(1, dtype=np.uint8))
    for j in range(longest):
        live = lengths > j
        if live.all():
            h = (h ^ padded[starts + j].astype(np.uint64)) * _FNV_PRIME
        else:
            idx = np.flatnonzero(live)
            h[idx] = (h[idx] ^ padded[starts[idx] + j].astype(np.uint64)) * _FNV_PRIME
    return _splitmix64(h ^ lengths.astype(np.uint64))


def string_hash64(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The stable 64-bit hash of each string (see the module docstring), vectorized; null -> 0.

    Plain, large and dictionary-encoded strings of the same text hash alike.
    """
    if isinstance(array, pa.ChunkedArray):
        parts = [string_hash64(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    if pa.types.is_dictionary(array.type):
        return from_dictionary(array, string_hash64(array.dictionary), null_value=0)
    if pa.types.is_large_string(array.type):
        offset_type = np.int64
    elif pa.types.is_string(array.type):
        offset_type = np.int32
    else:
        raise TypeError(f"string_hash64 needs strings, got {array.type}")
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset : array.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(n, dtype=np.uint64)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        base, end = int(offsets[lo]), int(offsets[hi])
        out[lo:hi] = _fnv1a(offsets[lo : hi + 1] - base, data[base:end])
    if array.null_count:
        out[array.is_null().to_numpy(zero_copy_only=False)] = 0
    return out


def text_hash(text: str) -> str:
    """SHA-256 (first 16 bytes, hex) of a note's text: the score cache's key, so an edited note is rescored."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
