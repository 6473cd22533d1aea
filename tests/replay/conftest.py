"""Helpers of the replay tests: write tiny tables whose metrics can be computed by hand.

The `tiny_bundle` fixture (a real small bundle) comes from tests/conftest.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


def _write(path: Path, rows: Iterable[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    if path.suffix == ".parquet":
        names = list(dict.fromkeys(k for r in rows for k in r))  # every column, not only the first row's
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows]), path)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_rows(tmp_path: Path) -> Callable[[str, Iterable[dict]], Path]:
    """write_rows("name.parquet" | "name.jsonl", rows) -> path under tmp_path."""

    def write(name: str, rows: Iterable[dict]) -> Path:
        return _write(tmp_path / name, rows)

    return write


@pytest.fixture
def replay_log_per_test():
    """`run` adds a stderr handler to the `redone_sdk.replay` logger once per process; under capsys it would
    keep writing to an earlier test's closed stream. A test using this starts without it (and gets its own)."""
    logger = logging.getLogger("redone_sdk.replay")
    saved = logger.handlers[:]
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved


def impression(ts: str, user: str, note: str, position: int = 1, click: int = 0, surface: str = "homefeed") -> dict:
    return {"timestamp": ts, "user": user, "note": note, "surface": surface, "position": position, "click": click}


@pytest.fixture
def hand_log(write_rows) -> dict[str, Path]:
    """Four notes created 2025-01-06 00:00 UTC, three users who each see the same five impressions.

    n0 benign  at 01:00        n1 harmful at 01:00 and 03:00
    n2 benign  at 02:00        n3 harmful at 10:00
    """
    notes = [
        {"note_id": f"n{i}", "content": f"note number {i}", "created_at": "2025-01-06T00:00:00+00:00"} for i in range(4)
    ]
    rows = []
    for u in ("u0", "u1", "u2"):
        for k, (note, hour) in enumerate([("n0", 1), ("n1", 1), ("n1", 3), ("n2", 2), ("n3", 10)], start=1):
            rows.append(impression(f"2025-01-06T{hour:02d}:00:00Z", u, note, position=k))
    labels = [
        {"note_id": "n0", "label": "safe"},
        {"note_id": "n1", "label": "offensive"},
        {"note_id": "n2", "label": "safe"},
        {"note_id": "n3", "label": "hate"},
    ]
    return {
        "impressions": write_rows("impressions.jsonl", rows),
        "notes": write_rows("notes.jsonl", notes),
        "labels": write_rows("labels.jsonl", labels),
    }
