"""Pass 2 of the exposure replay as one DuckDB query (`ExposureSettings.engine="duckdb"`): the same mergeable
sums as `exposure_passes.count_cells`, for the bootstrap and the metrics to read unchanged.

Pass 1 stays in Python: it validates the log and hashes users (FNV-1a + splitmix64, which SQL has no cheap
form of) into the spilled columns. Those columns are mapped from disk as Arrow arrays (no copy) and joined
in SQL with a per-note table (note bucket, ground truth, review clock, label weight, each arm's removal rule,
segment codes); one GROUPING SETS aggregate gives the (user bucket, note bucket, day, truth) cells, the
per-note exposures after each review delay and the segment cells in one scan. Counts equal the Python
engine's exactly; weighted sums (label weights) to float rounding, as DuckDB adds in another order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from redone_sdk.replay.exposure_passes import DAY_S, Cells, LoggedExposures, Removal, SegmentCodes, Spill
from redone_sdk.replay.exposure_results import ExposureSettings
from redone_sdk.replay.schemas import ReplayInputError

__all__ = ["count_cells_duckdb"]

_ARROW = {np.int16: pa.int16(), np.int32: pa.int32(), np.int64: pa.int64()}


def _spilled_table(spill: Spill) -> pa.Table:
    """The spilled columns as an Arrow table over memory-mapped files (pages are read as DuckDB scans them)."""
    columns = {}
    for name, dtype in spill.columns:
        if spill.rows:
            mapped = np.memmap(spill.paths[name], dtype=dtype, mode="r", shape=(spill.rows,))
            buffer = pa.py_buffer(mapped)
        else:
            buffer = pa.py_buffer(b"")
        columns[name] = pa.Array.from_buffers(_ARROW[dtype], spill.rows, [None, buffer])
    return pa.table(columns)


def count_cells_duckdb(
    spill: Spill,
    logged: LoggedExposures,
    truth: np.ndarray,
    removal: Removal,
    settings: ExposureSettings,
    note_bucket: np.ndarray,
    segments: SegmentCodes | None = None,
    label_weight: np.ndarray | None = None,
) -> Cells:
    """`count_cells` (same arguments, same result) computed by DuckDB over the spilled columns."""
    try:
        import duckdb
    except ModuleNotFoundError:
        raise ReplayInputError("--engine duckdb needs duckdb (pip install duckdb)") from None
    segments = segments or SegmentCodes()
    n_notes = len(truth)
    arms = list(removal.block_mask)
    delays = removal.distinct_delays
    start = np.where(removal.review_start == np.iinfo(np.int64).max, 0, removal.review_start)
    note_columns: dict[str, object] = {
        "note": np.arange(n_notes, dtype=np.int32),
        "nb": note_bucket.astype(np.int64),
        "truth": truth.astype(np.int8),
        "start": start.astype(np.int64),
        "w": label_weight.astype(np.float64) if label_weight is not None else np.ones(n_notes, np.float64),
    }
    for i, name in enumerate(arms):
        note_columns[f"block_{i}"] = removal.block_mask[name]
        note_columns[f"review_{i}"] = removal.review_mask[name]

    # segment dimensions: name -> (SQL expression of the level code, number of levels)
    levels: dict[str, tuple[str, int]] = {}
    for k, (dim, (codes, n)) in enumerate(segments.notes.items()):
        note_columns[f"seg_{k}"] = codes.astype(np.int64)
        levels[dim] = (f"n.seg_{k}", n)
    if segments.cohorts or segments.user_cohorts:
        n = segments.user_cohorts or segments.cohorts
        levels["cohort"] = ("s.cohort" if segments.user_cohorts else f"s.bucket % {n}", n)
    tables = {"spill": _spilled_table(spill), "notes": pa.table(note_columns)}
    if segments.surfaces is not None:
        tables["surfaces"] = pa.table(
            {"code": np.arange(len(segments.surfaces), dtype=np.int16), "level": segments.surfaces.astype(np.int64)}
        )
        levels["surface"] = ("sf.level", len(segments.surfaces))

    n_nb, day0, n_days = settings.note_buckets, logged.day0, logged.n_days
    keys = ["pair", "day", "truth", "note"] + [f"lv_{k}" for k in range(len(levels))]
    gone = [
        f"(n.block_{i} OR (n.review_{i} AND s.timestamp >= n.start + {removal.delays[a]}))" for i, a in enumerate(arms)
    ]
    rows_sql = ",\n".join(
        [
            f"s.bucket::BIGINT * {n_nb} + n.nb AS pair",
            f"(s.timestamp - {day0}) // {DAY_S} AS day",
            "n.truth AS truth",
            "s.note AS note",
            "n.w AS w",
            *(f"{expr}::BIGINT AS lv_{k}" for k, (expr, _) in enumerate(levels.values())),
            *(f"{g} AS gone_{i}" for i, g in enumerate(gone)),
            *(f"s.timestamp >= n.start + {d} AS after_{j}" for j, d in enumerate(delays)),
        ]
    )
    surface_join = "JOIN surfaces sf ON s.surface = sf.code" if segments.surfaces is not None else ""
    sets = ["(pair, day, truth)", "(note)"] + [f"(pair, lv_{k}, truth)" for k in range(len(levels))]
    aggregates = ",\n".join(
        [
            f"GROUPING({', '.join(keys)}) AS gid",
            "count(*) AS n",
            "sum(w) AS w",
            *(f"count(*) FILTER (WHERE gone_{i}) AS r_{i}" for i in range(len(arms))),
            *(f"sum(w) FILTER (WHERE gone_{i}) AS wr_{i}" for i in range(len(arms))),
            *(f"count(*) FILTER (WHERE after_{j}) AS a_{j}" for j in range(len(delays))),
        ]
    )
    query = f"""
        WITH rows AS (
            SELECT {rows_sql}
            FROM spill s JOIN notes n ON s.note = n.note {surface_join}
        )
        SELECT {", ".join(keys)}, {aggregates}
        FROM rows
        GROUP BY GROUPING SETS ({", ".join(sets)})
    """
    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        relation = con.sql(query)
        # duckdb 2 names it to_arrow_table; 1.x fetch_arrow_table
        result = (getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table)()
    finally:
        con.close()
    out = {c: result.column(c).fill_null(0).to_numpy(zero_copy_only=False) for c in result.column_names if c in keys}
    sums = {
        c: result.column(c).fill_null(0).to_numpy(zero_copy_only=False)
        for c in result.column_names
        if c not in keys and c != "gid"
    }
    gid = result.column("gid").to_numpy(zero_copy_only=False)

    def grouped_by(*names: str) -> np.ndarray:
        """Rows of the grouping set of exactly these keys (GROUPING's bit is 0 for a key grouped by)."""
        mask = 0
        for position, key in enumerate(reversed(keys)):
            if key not in names:
                mask |= 1 << position
        return gid == mask

    weighted = label_weight is not None
    buckets = settings.user_buckets
    shape = (buckets, n_nb, n_days, 3)
    main = grouped_by("pair", "day", "truth")
    cell = (out["pair"][main] * n_days + out["day"][main]) * 3 + out["truth"][main]

    def scatter(values: np.ndarray, index: np.ndarray, size: int, dtype) -> np.ndarray:
        full = np.zeros(size, dtype=dtype)
        full[index] = values
        return full

    n_cells = buckets * n_nb * n_days * 3
    counts = scatter(sums["n"][main], cell, n_cells, np.int64).reshape(shape)
    removed = {a: scatter(sums[f"r_{i}"][main], cell, n_cells, np.int64).reshape(shape) for i, a in enumerate(arms)}
    weighted_cells = None
    if weighted:
        weighted_cells = (
            scatter(sums["w"][main], cell, n_cells, np.float64).reshape(shape),
            {a: scatter(sums[f"wr_{i}"][main], cell, n_cells, np.float64).reshape(shape) for i, a in enumerate(arms)},
        )
    per_note = grouped_by("note")
    note_rows = out["note"][per_note]
    after_counts = {d: scatter(sums[f"a_{j}"][per_note], note_rows, n_notes, np.int64) for j, d in enumerate(delays)}

    segment_cells = {}
    seg_type = np.float64 if weighted else np.int64
    total, prefix = ("w", "wr_") if weighted else ("n", "r_")
    for k, (dim, (_, n)) in enumerate(levels.items()):
        rows = grouped_by("pair", f"lv_{k}", "truth")
        index = (out["pair"][rows] * n + out[f"lv_{k}"][rows]) * 3 + out["truth"][rows]
        size = buckets * n_nb * n * 3
        seg_shape = (buckets, n_nb, n, 3)
        segment_cells[dim] = (
            scatter(sums[total][rows], index, size, seg_type).reshape(seg_shape),
            {
                a: scatter(sums[f"{prefix}{i}"][rows], index, size, seg_type).reshape(seg_shape)
                for i, a in enumerate(arms)
            },
        )
    return Cells(counts, removed, after_counts, segment_cells, weighted_cells)
