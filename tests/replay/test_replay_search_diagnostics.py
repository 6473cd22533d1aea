"""Search replay: identification diagnostics, the replay (IPS) estimate beside the click model's, refitted
intervals, BM25, out-of-core reading, timings and the search figures."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from test_replay_search import grade_scorer, simulated  # the simulated log with a known click model

from redone_sdk.replay import SearchSettings, replay_search, write_report
from redone_sdk.replay import search as search_module
from redone_sdk.replay.cli import main
from redone_sdk.replay.notes import read_notes
from redone_sdk.replay.search_bm25 import bm25_scorer, tokens
from redone_sdk.replay.search_log import spill_sessions


def reverse_scorer(grades):
    """Ranks by the opposite of the grade: reorders every page, and makes things worse."""
    return lambda pairs: [-grades[(q, n.note_id)] - int(n.note_id.rsplit("n", 1)[1]) * 1e-6 for q, n in pairs]


def test_unvarying_order_is_flagged(write_rows) -> None:
    paths, grades, _, _ = simulated(write_rows, sessions=1500, noise=0.0)
    result = replay_search(
        paths["sessions"], paths["notes"], reverse_scorer(grades), settings=SearchSettings(bootstrap=30)
    )
    d = result.diagnostics
    assert result.sessions_reordered == 1.0
    assert d.rank_spread == 0.0 and d.multi_rank_impressions == 0.0 and d.reordered_varied == 0.0
    assert d.rank_components == 6  # no pair links two ranks
    assert not d.identified and len(d.warnings) == 3
    assert "hardly varies" in d.warnings[0]
    # The replay finds no logged page view ranked like the new ranking: no estimate rather than a wrong one.
    assert result.ips.change.value is None and result.ips.reordered_coverage == 0.0
    assert result.estimators_agree is None


def test_varying_order_is_identified_and_both_estimators_agree(write_rows) -> None:
    paths, grades, true_logged, true_new = simulated(write_rows, sessions=4000, noise=1.5, seed=3)
    result = replay_search(
        paths["sessions"], paths["notes"], grade_scorer(grades), settings=SearchSettings(bootstrap=100)
    )
    d = result.diagnostics
    assert d.identified and d.warnings == [] and not d.accepted_unidentified
    assert d.rank_spread > 0.3 and d.rank_components == 1 and d.reordered_varied == 1.0
    true_change = true_new / true_logged - 1
    assert result.change.contains(true_change)
    # The replay (no click model) sees the same improvement, from the page views ranked like the matcher's.
    assert result.ips.accepted > 0 and result.ips.coverage > 0.9
    assert result.ips.change.lo > 0 and result.ips.change.contains(true_change)
    assert result.estimators_agree is True


def test_refitted_interval_includes_the_click_model_error(write_rows) -> None:
    # Sparse: 300 page views over 40 queries, where the click model's own error matters.
    paths, grades, true_logged, true_new = simulated(write_rows, sessions=300, queries=40, seed=5)
    settings = SearchSettings(bootstrap=200)
    refit = replay_search(paths["sessions"], paths["notes"], grade_scorer(grades), settings=settings)
    fixed = replay_search(
        paths["sessions"],
        paths["notes"],
        grade_scorer(grades),
        settings=settings.model_copy(update={"refit_model": False}),
    )
    assert refit.change.value == fixed.change.value
    assert refit.change_model_fixed == fixed.change  # the fixed-model interval is also reported
    assert refit.change.hi - refit.change.lo > 1.5 * (fixed.change.hi - fixed.change.lo)
    assert refit.change.contains(true_new / true_logged - 1)
    assert refit.refits_converged is not None and refit.refits_converged > 0.9
    assert fixed.refits_converged is None


def test_relevance_attractiveness_was_dropped() -> None:
    with pytest.raises(ValidationError):
        SearchSettings(attractiveness="relevance")


def _cli_log(write_rows, noise: float):
    paths, grades, _, _ = simulated(write_rows, sessions=600, queries=20, noise=noise)
    return paths, reverse_scorer(grades)


@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_cli_exit_status_follows_the_diagnostics(write_rows, tmp_path: Path, monkeypatch, capsys, noise) -> None:
    from redone_sdk.matcher import NoteQueryMatcher

    paths, scorer = _cli_log(write_rows, noise)
    monkeypatch.setattr(NoteQueryMatcher, "load", classmethod(lambda cls, *a, **k: scorer))
    out = tmp_path / "out"
    argv = ["search", "--sessions", str(paths["sessions"]), "--notes", str(paths["notes"]), "--out", str(out)]
    argv += ["--bootstrap", "20", "--no-cache", "--bm25"]
    if noise == 0.0:
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "WARNING: the logged order hardly varies" in err and "--accept-unidentified" in err
        saved = json.loads((out / "search.json").read_text())
        assert saved["diagnostics"]["identified"] is False and not saved["diagnostics"]["accepted_unidentified"]
        assert main([*argv, "--accept-unidentified"]) == 0
        saved = json.loads((out / "search.json").read_text())
        assert saved["diagnostics"]["warnings"] and saved["diagnostics"]["accepted_unidentified"] is True
        assert "the change is NOT identified" in (out / "report.md").read_text()
    else:
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert "WARNING" not in captured.err and "bm25: change" in captured.out
        saved = json.loads((out / "search.json").read_text())
        assert saved["diagnostics"]["identified"] is True and saved["diagnostics"]["warnings"] == []
        assert [b["name"] for b in saved["baselines"]] == ["bm25"]
        assert "NOT identified" not in (out / "report.md").read_text()


def test_streaming_keeps_chunks_bounded_and_results_equal(write_rows, tmp_path: Path) -> None:
    paths, grades, _, _ = simulated(write_rows, sessions=3000, queries=30, seed=2)
    notes = read_notes(paths["notes"])
    spill = tmp_path / "spill"
    spill.mkdir()
    log = spill_sessions(paths["sessions"], notes=notes, max_page=100, chunk_sessions=64, spill_dir=spill)
    try:
        assert log.sessions == 3000 and log.largest_write <= 64  # never more than a chunk held before a write
        chunks = list(log.chunks())
        assert sum(c.sessions for c in chunks) == 3000 and max(c.sessions for c in chunks) == 64
        assert log.largest_chunk == 64
        assert len(log.pairs) == 30 * 6 and len(log.queries) == 30  # what grows is the distinct pairs only
        assert isinstance(log._map("pair", log.observations), np.memmap)  # the page views live on disk
    finally:
        log.close()
    assert list(spill.iterdir()) == []
    settings = SearchSettings(bootstrap=50, refit_passes="exact")  # auto would linearize the chunked run
    small = replay_search(
        paths["sessions"],
        paths["notes"],
        grade_scorer(grades),
        settings=settings.model_copy(update={"chunk_sessions": 64, "spill_dir": str(spill)}),
    )
    whole = replay_search(paths["sessions"], paths["notes"], grade_scorer(grades), settings=settings)
    assert list(spill.iterdir()) == []  # the temporary columns are removed
    for field in ("model_cpr_logged", "model_cpr_new", "observed_cpr_logged", "change", "change_model_fixed"):
        a, b = getattr(small, field), getattr(whole, field)
        assert (a.value, a.lo, a.hi) == pytest.approx((b.value, b.lo, b.hi), rel=1e-6), field
    assert small.ips == whole.ips
    assert small.diagnostics == whole.diagnostics  # counts, the same in any chunking


def test_duplicate_session_ids_across_chunks(write_rows) -> None:
    notes = write_rows("notes.jsonl", [{"note_id": n, "content": f"about {n}"} for n in ("a", "b")])
    rows = [{"session_id": f"s{i % 7}", "query": "q", "notes": ["a", "b"], "clicks": [i % 2, 0]} for i in range(20)]
    log = spill_sessions(write_rows("s.jsonl", rows), notes=read_notes(notes), max_page=10, chunk_sessions=3)
    try:
        assert log.kept_sessions == 7 and log.issues.reasons == {"duplicate session_id": 13}
        assert log.issues.rows_used == 7
        kept = [c for chunk in log.chunks() for c in np.add.reduceat(chunk.click, chunk.starts[:-1])]
        assert kept == [0, 1, 0, 1, 0, 1, 0]  # the first occurrence of each id
    finally:
        log.close()


def test_estimate_timing_leaves_out_the_click_model(write_rows, monkeypatch) -> None:
    paths, grades, _, _ = simulated(write_rows, sessions=300, queries=10)
    fit = search_module.fit_pbm_cells

    def slow_fit(*args, **kwargs):
        time.sleep(0.5)
        return fit(*args, **kwargs)

    monkeypatch.setattr(search_module, "fit_pbm_cells", slow_fit)
    result = replay_search(
        paths["sessions"], paths["notes"], grade_scorer(grades), settings=SearchSettings(bootstrap=0)
    )
    t = result.timings_s
    assert t["click_model"] >= 0.5
    assert t["estimate"] < 0.5 and t["bootstrap"] < 0.5 and t["pass"] < 0.5
    assert sum(v for k, v in t.items() if k != "total") <= t["total"] + 1e-3


def test_search_figures(write_rows, tmp_path: Path) -> None:
    paths, grades, _, _ = simulated(write_rows, sessions=1000, queries=20)
    result = replay_search(
        paths["sessions"],
        paths["notes"],
        grade_scorer(grades),
        baselines={"bm25": bm25_scorer()},
        settings=SearchSettings(bootstrap=50),
    )
    write_report(tmp_path / "out", search=result)
    figures = tmp_path / "out" / "figures"
    exam = json.loads((figures / "search_examination.json").read_text())
    ctr = json.loads((figures / "search_ctr.json").read_text())
    # Examination (θ, top = 1) and click-through (a few %) no longer share an axis.
    assert [s["name"] for s in exam["series"]] == ["examination θ (fitted)"] and max(exam["series"][0]["y"]) == 1.0
    assert [s["name"] for s in ctr["series"]] == ["observed", "predicted"]
    assert ctr["series"][0]["y"] == [r.observed_ctr for r in result.ranks]
    assert ctr["series"][1]["y"] == [r.predicted_ctr for r in result.ranks]
    change = json.loads((figures / "search_change.json").read_text())
    (series,) = change["series"]
    assert change["reference_y"] == 0.0
    assert series["x"][:2] == [f"{result.matcher} · click model", f"{result.matcher} · replay (IPS)"]
    assert series["y"][:2] == [result.change.value, result.ips.change.value]
    assert series["lo"][0] == result.change.lo and series["hi"][0] == result.change.hi
    assert series["x"][2:] == ["bm25 · click model", "bm25 · replay (IPS)"]
    assert series["y"][2] == result.baselines[0].change.value
    assert (figures / "search_change.png").stat().st_size > 0


def test_bm25_ranks_the_matching_note_first() -> None:
    from redone_sdk.schemas import Note

    notes = [
        Note(note_id="a", content="best hiking routes near Hangzhou"),
        Note(note_id="b", content="egg waffle recipe, crispy egg waffles at home"),
        Note(note_id="c", content="鸡蛋仔的做法 在家做鸡蛋仔"),
        Note(note_id="d", content="杭州徒步路线推荐"),
    ]
    score = bm25_scorer()
    s = score([("egg waffle recipe", n) for n in notes[:2]] + [("鸡蛋仔做法", n) for n in notes[2:]])
    assert s[1] > s[0] == 0.0 and s[2] > s[3]
    assert "鸡蛋" in tokens("鸡蛋仔") and "hiking" in tokens("Hiking!")


def test_linearized_refits_match_exact_ones(write_rows) -> None:
    # The delta method (no pass over the log per replicate) against a pass per replicate, on a sparse log.
    paths, grades, _, _ = simulated(write_rows, sessions=400, queries=40, seed=7)
    noisy = {k: v + (hash(k) % 7 - 3) * 0.3 for k, v in grades.items()}  # a matcher that errs
    settings = SearchSettings(bootstrap=150, refit_passes="exact")
    exact = replay_search(paths["sessions"], paths["notes"], grade_scorer(noisy), settings=settings)
    linear = replay_search(
        paths["sessions"],
        paths["notes"],
        grade_scorer(noisy),
        settings=settings.model_copy(update={"refit_passes": "linearized"}),
    )
    assert exact.bootstrap_refit == "exact" and linear.bootstrap_refit == "linearized"
    assert linear.change.value == exact.change.value
    width = exact.change.hi - exact.change.lo
    assert abs(linear.change.lo - exact.change.lo) < 0.1 * width
    assert abs(linear.change.hi - exact.change.hi) < 0.1 * width
    assert abs(linear.model_cpr_logged.lo - exact.model_cpr_logged.lo) < 0.1 * width
    # auto: exact while the log is one chunk, linearized once it spans several.
    auto = replay_search(
        paths["sessions"],
        paths["notes"],
        grade_scorer(noisy),
        settings=settings.model_copy(update={"refit_passes": "auto", "chunk_sessions": 100}),
    )
    assert auto.bootstrap_refit == "linearized"
    assert (auto.change.lo, auto.change.hi) == pytest.approx((linear.change.lo, linear.change.hi), rel=1e-6)
