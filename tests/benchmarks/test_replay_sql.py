"""benchmarks/replay_sql.py's pass 2 in SQL (`count_cells_duckdb`) computes what the replay's numpy pass does:
the same cells, and the same exposure.json numbers — counts exactly, label-weighted sums to float rounding — so
the benchmark times the same work."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest

pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from redone_sdk.benchmarks.replay_sql import count_cells_duckdb  # noqa: E402
from redone_sdk.policy import CategoryRule, Policy  # noqa: E402
from redone_sdk.replay import Arm, ExposureSettings, NoteScores, replay_exposure  # noqa: E402
from redone_sdk.replay import exposure as exposure_module  # noqa: E402
from redone_sdk.replay.synth import write_impressions  # noqa: E402

CATEGORIES = ("offensive", "hate", "sexism")


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> dict:
    """3,000 notes (some created before the log, some without created_at), 40,000 impressions over 5 days; a
    third of the notes unlabeled, labels with weights; two languages."""
    folder = tmp_path_factory.mktemp("sql-log")
    rng = np.random.default_rng(7)
    n, start_s, days = 3_000, 1_740_960_000, 5
    created = rng.uniform(start_s - 86_400, start_s + days * 86_400 - 3600, n).astype(np.int64)
    harmful = rng.random(n) < 0.2
    ids = [f"n{i:05d}" for i in range(n)]
    created_col = pa.array([None if i % 7 == 0 else int(c) for i, c in enumerate(created)], type=pa.int64())
    pq.write_table(
        pa.table(
            {
                "note_id": ids,
                "content": [f"note {i}" for i in range(n)],
                "created_at": created_col.cast(pa.timestamp("s", tz="UTC")),
                "lang": ["en" if i % 3 else "de" for i in range(n)],
            }
        ),
        folder / "notes.parquet",
    )
    labeled = [i for i in range(n) if i % 3 != 1]
    pq.write_table(
        pa.table(
            {
                "note_id": [ids[i] for i in labeled],
                "label": [("hate" if i % 2 else "offensive") if harmful[i] else "safe" for i in labeled],
                "weight": [1.0 + (i % 5) * 0.37 for i in labeled],
            }
        ),
        folder / "labels.parquet",
    )
    write_impressions(
        folder / "impressions.parquet",
        rng=rng,
        n_impressions=40_000,
        note_ids=ids,
        note_created=created,
        note_harmful=harmful,
        n_users=800,
        start_s=start_s,
        days=days,
        harmful_rate=0.08,
        slot_s=6 * 3600,
    )
    scores = np.clip(rng.beta(2, 8, (n, 3)) + harmful[:, None] * rng.beta(2, 3, (n, 3)), 0, 1)
    arms = [
        Arm.control("logged"),
        Arm(
            "default", policy=Policy(name="d", default=CategoryRule(review=0.5, block=0.9)), scores=_scores(ids, scores)
        ),
        Arm(
            "strict",
            policy=Policy(name="s", default=CategoryRule(review=0.3, block=0.6)),
            scores=_scores(ids, scores),
            review_delay=timedelta(hours=1),
        ),
        Arm(
            "blockonly",
            policy=Policy(name="b", default=CategoryRule(review=0.7, block=0.7)),
            scores=_scores(ids, scores),
        ),
    ]
    return {"folder": folder, "arms": arms}


def _scores(ids: list[str], matrix: np.ndarray) -> NoteScores:
    return NoteScores(pa.array(ids), CATEGORIES, matrix.astype(np.float32))


def _run(log: dict, engine: str, labels: str = "labels.parquet", **settings) -> dict:
    """The replay's exposure.json numbers (bar timings), with pass 2 in numpy or in SQL."""
    folder = log["folder"]
    with pytest.MonkeyPatch.context() as mp:
        if engine == "duckdb":
            mp.setattr(exposure_module, "count_cells", count_cells_duckdb)
        result = replay_exposure(
            folder / "impressions.parquet",
            folder / "notes.parquet",
            log["arms"],
            labels=folder / labels,
            settings=ExposureSettings(bootstrap=60, user_buckets=16, note_buckets=8, **settings),
        )
    data = json.loads(result.model_dump_json())
    data.pop("timings_s")
    return data


def _differences(a, b, path: str = "", rel: float = 0.0) -> list[str]:
    """Paths where two JSON values differ (floats within `rel`, when given)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}", rel)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]", rel)]
    if isinstance(a, float) and isinstance(b, float) and rel:
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=1e-12) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_unweighted_results_are_identical(log):
    """Counts, rates, intervals, p-values, sweeps and segments (note language, ground-truth category, user
    cohort, surface): exactly equal."""
    unweighted = log["folder"] / "labels-unweighted.parquet"
    pq.write_table(pq.read_table(log["folder"] / "labels.parquet").drop_columns(["weight"]), unweighted)
    segments = ("lang", "category", "cohort", "surface")
    python = _run(log, "python", labels=unweighted.name, segments=segments, unlabeled_review="remove")
    duck = _run(log, "duckdb", labels=unweighted.name, segments=segments, unlabeled_review="remove")
    assert python["logged_exposures"] > 30_000 and python["segments"]
    assert any(a["removed_by_review"] > 0 for a in python["arms"]) and any(
        a["removed_by_block"] > 0 for a in python["arms"]
    )
    assert _differences(python, duck) == []


def test_label_weighted_results_match_to_float_rounding(log):
    """With label weights the weighted sums are added in another order: every number within 1e-9."""
    python = _run(log, "python", segments=("lang", "cohort"), review_clock="first_exposure")
    duck = _run(log, "duckdb", segments=("lang", "cohort"), review_clock="first_exposure")
    assert python["label_weighting"] is not None
    assert _differences(python, duck, rel=1e-9) == []
    counts = ("logged_exposures", "labeled_exposures", "harmful_exposures", "distinct_notes")
    assert [python[k] for k in counts] == [duck[k] for k in counts]


def test_cells_equal_the_python_pass(log):
    """The arrays pass 2 hands to the metrics, compared directly (catches a wrong cell that the metrics hide)."""
    captured: dict[str, object] = {}

    def spy(name, function):
        def wrapped(*args, **kwargs):
            captured[name] = function(*args, **kwargs)
            return captured[name]

        return wrapped

    folder = log["folder"]
    for name, function in (("python", exposure_module.count_cells), ("duckdb", count_cells_duckdb)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(exposure_module, "count_cells", spy(name, function))
            replay_exposure(
                folder / "impressions.parquet",
                folder / "notes.parquet",
                log["arms"],
                labels=folder / "labels.parquet",
                settings=ExposureSettings(bootstrap=0, user_buckets=16, note_buckets=8, segments=("surface",)),
            )
    python, duck = captured["python"], captured["duckdb"]
    assert python.logged.sum() > 0
    np.testing.assert_array_equal(python.logged, duck.logged)
    assert python.removed.keys() == duck.removed.keys()
    for arm in python.removed:
        np.testing.assert_array_equal(python.removed[arm], duck.removed[arm])
    assert python.after_counts.keys() == duck.after_counts.keys() and len(python.after_counts) == 2
    for delay in python.after_counts:
        np.testing.assert_array_equal(python.after_counts[delay], duck.after_counts[delay])
    np.testing.assert_allclose(python.weighted[0], duck.weighted[0], rtol=1e-12)
    surface_python, surface_duck = python.segments["surface"], duck.segments["surface"]
    np.testing.assert_allclose(surface_python[0], surface_duck[0], rtol=1e-12)
    for arm in python.removed:
        np.testing.assert_allclose(surface_python[1][arm], surface_duck[1][arm], rtol=1e-12)
        np.testing.assert_allclose(python.weighted[1][arm], duck.weighted[1][arm], rtol=1e-12)
