"""Vectorized checks of Arrow columns shared by the replay's table readers: nulls, empty text, first occurrences,
timestamps of any accepted type as UTC epoch seconds, and per-dictionary evaluation of encoded columns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from redone_sdk.replay.schemas import ReplayInputError

__all__ = [
    "MIN_EPOCH_S",
    "MAX_EPOCH_S",
    "NO_TIME",
    "PerDictionary",
    "as_epoch_seconds",
    "empty_strings",
    "epoch_seconds",
    "first_of_each",
    "from_dictionary",
    "is_text",
    "null_mask",
]

# Epoch seconds accepted as a timestamp: 2000-01-01 … 2100-01-01 (an integer column in milliseconds
# falls outside and is reported, rather than read as dates in the year 50,000).
MIN_EPOCH_S = 946_684_800
MAX_EPOCH_S = 4_102_444_800
NO_TIME = np.iinfo(np.int64).min


def as_epoch_seconds(value: Any) -> int | None:
    """A timestamp from JSON/Python: ISO-8601 text (naive means UTC), epoch seconds, or a datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        seconds = int(value)
        return seconds if MIN_EPOCH_S <= seconds < MAX_EPOCH_S else None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int(moment.timestamp() // 1)
    return seconds if MIN_EPOCH_S <= seconds < MAX_EPOCH_S else None


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def first_of_each(values: pa.Array) -> np.ndarray:
    """True at the first occurrence of each value (values in row order)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=bool)
    table = pa.table({"v": values, "i": pa.array(np.arange(n, dtype=np.int64))})
    firsts = table.group_by("v", use_threads=False).aggregate([("i", "min")]).column("i_min").to_numpy()
    out = np.zeros(n, dtype=bool)
    out[firsts] = True
    return out


def null_mask(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


def epoch_seconds(array: pa.Array, column_type: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, unparseable mask) of a timestamp column of any accepted type."""
    n = len(array)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(column_type):
        unit = column_type.unit
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
        raw = array.cast(pa.timestamp(unit)).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return np.floor_divide(raw, per_second), bad
    if pa.types.is_integer(column_type):
        return array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), bad
    if pa.types.is_floating(column_type):
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        return np.where(bad, 0, values).astype(np.int64), bad
    if pa.types.is_date(column_type):
        return array.cast(pa.timestamp("s")).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), bad
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type) or pa.types.is_dictionary(column_type):
        text = array.cast(pa.string()) if pa.types.is_dictionary(column_type) else array
        try:
            parsed = pc.cast(text, pa.timestamp("ns", tz="UTC"))
            raw = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            return np.floor_divide(raw, 1_000_000_000), bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            seconds = np.zeros(n, dtype=np.int64)
            for i, value in enumerate(text.to_pylist()):
                if value is None:
                    continue
                parsed_s = as_epoch_seconds(value)
                if parsed_s is None:
                    bad[i] = True
                else:
                    seconds[i] = parsed_s
            return seconds, bad
    raise ReplayInputError(
        f"impressions column 'timestamp' has type {column_type}; expected a timestamp, ISO text or epoch seconds"
    )


def _string_lengths(array: pa.Array) -> np.ndarray:
    """Byte length of each string, from the offsets (0 for nulls)."""
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    return np.diff(offsets)


def empty_strings(array: pa.Array) -> np.ndarray:
    """True where a string (plain or dictionary-encoded) is empty."""
    if pa.types.is_dictionary(array.type):
        return from_dictionary(array, empty_strings(array.dictionary), null_value=False)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    return _string_lengths(array) == 0


def from_dictionary(array: pa.Array, values: np.ndarray, *, null_value: Any) -> np.ndarray:
    """Each row's entry of `values` (one per dictionary entry) in a dictionary-encoded column; null rows get
    `null_value`."""
    idx = array.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    out = values[idx] if len(values) else np.full(len(array), null_value, dtype=values.dtype)
    if array.null_count:
        out[array.is_null().to_numpy(zero_copy_only=False)] = null_value
    return out


class PerDictionary:
    """`fn` of each row, computed on the dictionary alone for dictionary-encoded batches and reused while the
    following batches carry an equal dictionary (a Parquet row group's batches share one)."""

    def __init__(self, fn: Callable[[pa.Array], np.ndarray], *, null_value: Any) -> None:
        self.fn = fn
        self.null_value = null_value
        self._last: tuple[pa.Array, np.ndarray] | None = None

    def __call__(self, array: pa.Array) -> np.ndarray:
        if not pa.types.is_dictionary(array.type):
            return self.fn(array)
        dictionary = array.dictionary
        last = self._last
        if last is None or len(last[0]) != len(dictionary) or not last[0].equals(dictionary):
            last = self._last = (dictionary, self.fn(dictionary))
        return from_dictionary(array, last[1], null_value=self.null_value)
