"""Weights for labels drawn as a stratified sample of notes: each labeled note's exposures count with the
inverse of its probability of being labeled, so the harmful exposure rate estimates the rate over all notes
(a Hájek ratio: Σ w·harmful / Σ w·labeled).

The labels table may carry a `weight` column (used as is), or a `stratum` column with the stratum sizes given
separately (`--stratum-sizes`: stratum=notes in the population): a labeled note of stratum s weighs N_s / n_s,
n_s the labeled notes of that stratum in the table. Without either column, labels are unweighted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from redone_sdk.replay.formats import detect_format, iter_dict_rows, open_dataset, scan_batches
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import ReplayInputError, TableIssues

__all__ = ["label_weights", "parse_stratum_sizes"]


def parse_stratum_sizes(text: str) -> dict[str, int]:
    """`a=1000,b=250` -> {"a": 1000, "b": 250}; a malformed entry is a ReplayInputError."""
    sizes: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.rpartition("=")
        if not sep or not name or not value.strip().isdigit() or int(value) < 1:
            raise ReplayInputError(f"stratum size {part!r}: expected STRATUM=N with N a positive integer")
        sizes[name.strip()] = int(value)
    return sizes


def _columns(path: Path) -> tuple[list, list, list]:
    """note_id, weight and stratum per row of the labels table (None where a column is absent)."""
    ids: list = []
    weights: list = []
    strata: list = []
    if detect_format(path) == "parquet":
        dataset = open_dataset(path)
        names = dataset.schema.names
        wanted = ["note_id"] + [c for c in ("weight", "stratum") if c in names]
        for batch in scan_batches(dataset, path, wanted, 262_144):
            n = batch.num_rows
            ids += batch.column("note_id").cast(pa.string()).to_pylist()
            weights += batch.column("weight").to_pylist() if "weight" in wanted else [None] * n
            strata += batch.column("stratum").cast(pa.string()).to_pylist() if "stratum" in wanted else [None] * n
        return ids, weights, strata
    for _, record in iter_dict_rows(path, TableIssues(table="labels"), ["note_id", "weight", "stratum"], 65_536):
        note_id = record.get("note_id")
        ids.append(str(note_id) if isinstance(note_id, (str, int)) and not isinstance(note_id, bool) else None)
        weights.append(record.get("weight"))
        stratum = record.get("stratum")
        strata.append(None if stratum is None else str(stratum))
    return ids, weights, strata


def label_weights(
    path: str | Path, notes: NotesIndex, labeled: np.ndarray, stratum_sizes: Mapping[str, int] | None = None
) -> tuple[np.ndarray | None, str | None]:
    """(weight per note row — 1 for unlabeled notes —, a line saying how it was made), or (None, None) when
    the table has neither column. `labeled`: per note row, whether the note has ground truth."""
    path = Path(path)
    ids, raw_weights, strata = _columns(path)
    has_weight = any(w is not None for w in raw_weights)
    has_stratum = any(s is not None for s in strata)
    if not has_weight and not has_stratum:
        if stratum_sizes:
            raise ReplayInputError(f"--stratum-sizes given but labels table {path} has no `stratum` column")
        return None, None
    rows = notes.rows_of(pa.array(ids, type=pa.string()))
    first = np.zeros(len(notes), dtype=bool)
    weight = np.ones(len(notes), dtype=np.float64)
    stratum_of: dict[int, str] = {}
    for i, row in enumerate(rows):
        if row < 0 or first[row] or not labeled[row]:
            continue
        first[row] = True
        if has_weight:
            w = raw_weights[i]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise ReplayInputError(f"labels table {path}: weight of note {ids[i]!r} must be a positive number")
            weight[row] = float(w)
        else:
            if strata[i] is None:
                raise ReplayInputError(f"labels table {path}: note {ids[i]!r} has no stratum")
            stratum_of[row] = strata[i]
    if has_weight:
        return weight, "`weight` column of the labels table"
    if not stratum_sizes:
        raise ReplayInputError(f"labels table {path} has a `stratum` column: give --stratum-sizes STRATUM=N,…")
    labeled_per: dict[str, int] = {}
    for s in stratum_of.values():
        labeled_per[s] = labeled_per.get(s, 0) + 1
    missing = sorted(set(labeled_per) - set(stratum_sizes))
    if missing:
        raise ReplayInputError(f"--stratum-sizes lacks the size of stratum(s) {missing[:5]}")
    small = sorted(s for s, n in labeled_per.items() if stratum_sizes[s] < n)
    if small:
        raise ReplayInputError(f"stratum(s) {small[:5]}: more labeled notes than the size given")
    for row, s in stratum_of.items():
        weight[row] = stratum_sizes[s] / labeled_per[s]
    described = ", ".join(f"{s}: {stratum_sizes[s]}/{labeled_per[s]}" for s in sorted(labeled_per))
    return weight, f"inverse-probability weights by stratum (population/labeled notes: {described})"
