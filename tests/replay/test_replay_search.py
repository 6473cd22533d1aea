import math
from pathlib import Path

import numpy as np
import pytest

from redone_sdk.replay import ReplayInputError, ScoreCache, SearchSettings, replay_search

THETA = 1.0 / np.arange(1, 7) ** 0.8
ALPHA = {0: 0.03, 1: 0.15, 2: 0.4, 3: 0.7}


def simulated(write_rows, *, sessions: int = 6000, queries: int = 50, noise: float = 1.5, seed: int = 0):
    """Sessions clicked by a known PBM; returns paths, grades per (query, note), and the true CPRs."""
    rng = np.random.default_rng(seed)
    page = len(THETA)
    grades: dict[tuple[str, str], int] = {}
    pages: dict[str, list[str]] = {}
    for q in range(queries):
        query = f"query {q}"
        pages[query] = [f"q{q}n{k}" for k in range(page)]
        for note in pages[query]:
            grades[(query, note)] = int(rng.integers(0, 4))
    notes = [{"note_id": n, "content": f"text of {n}"} for p in pages.values() for n in p]
    rows, true_logged, true_new = [], [], []
    picks = rng.integers(0, queries, size=sessions)
    for s, q in enumerate(picks):
        query = f"query {q}"
        g = np.array([grades[(query, n)] for n in pages[query]], dtype=float)
        order = np.argsort(-(g + rng.normal(0, noise, page)), kind="stable") if noise else np.argsort(-g, kind="stable")
        shown = [pages[query][i] for i in order]
        attract = np.array([ALPHA[grades[(query, n)]] for n in shown])
        clicks = (rng.random(page) < THETA * attract).astype(int)
        rows.append({"session_id": f"s{s}", "query": query, "notes": shown, "clicks": clicks.tolist()})
        true_logged.append(1 - np.prod(1 - THETA * attract))
        best = np.sort(attract)[::-1]  # the matcher below ranks by grade: attractiveness in decreasing order
        true_new.append(1 - np.prod(1 - THETA * best))
    paths = {"sessions": write_rows("sessions.jsonl", rows), "notes": write_rows("notes.jsonl", notes)}
    return paths, grades, float(np.mean(true_logged)), float(np.mean(true_new))


def grade_scorer(grades: dict[tuple[str, str], int]):
    def score(pairs):
        # Expected relevance from the true grade; a tiny id-based tie-break keeps the ranking strict.
        return [grades[(q, n.note_id)] / 3 - int(n.note_id.rsplit("n", 1)[1]) * 1e-6 for q, n in pairs]

    return score


def test_estimate_matches_the_true_click_page_rate(write_rows) -> None:
    paths, grades, true_logged, true_new = simulated(write_rows)
    result = replay_search(
        paths["sessions"], paths["notes"], grade_scorer(grades), settings=SearchSettings(bootstrap=300)
    )
    true_change = true_new / true_logged - 1
    assert result.em_converged
    assert result.model_cpr_logged.value == pytest.approx(true_logged, abs=0.02)
    assert result.observed_cpr_logged.value == pytest.approx(true_logged, abs=0.02)
    assert result.model_cpr_new.value == pytest.approx(true_new, abs=0.03)
    assert result.change.value == pytest.approx(true_change, abs=0.05)
    assert result.change.contains(true_change)
    assert result.change.lo > 0  # ranking by the true grade is a clear improvement
    assert result.sessions_reordered > 0.5
    assert [r.rank for r in result.ranks] == list(range(1, 7))
    assert abs(result.ranks[2].examination - THETA[2]) < 0.07


def test_same_ranking_gives_zero_change(write_rows) -> None:
    paths, grades, _, _ = simulated(write_rows, sessions=800, noise=0.0)
    result = replay_search(
        paths["sessions"], paths["notes"], grade_scorer(grades), settings=SearchSettings(bootstrap=200)
    )
    assert result.sessions_reordered == 0.0
    assert result.change.value == 0.0
    assert result.change.lo == 0.0 and result.change.hi == 0.0
    assert result.model_cpr_new.value == result.model_cpr_logged.value


def test_ndcg_by_hand_and_bad_sessions(write_rows) -> None:
    notes = write_rows("notes.jsonl", [{"note_id": n, "content": f"about {n}"} for n in ("a", "b")])
    rows = [
        {"session_id": "s1", "query": "q", "notes": ["a", "b"], "clicks": [1, 0]},
        {"session_id": "s2", "query": "q", "notes": ["a", "b"], "clicks": [0, 1]},
        {"session_id": "s3", "query": "q", "notes": ["a", "c"], "clicks": [0, 1]},
        {"session_id": "s4", "query": "q", "notes": ["a"], "clicks": [0, 1]},
    ]
    sessions = write_rows("sessions.jsonl", rows)
    judgments = write_rows(
        "judgments.jsonl", [{"query": "q", "note_id": "a", "grade": 0}, {"query": "q", "note_id": "b", "grade": 3}]
    )
    scorer = lambda pairs: [1.0 if n.note_id == "b" else 0.0 for _, n in pairs]  # noqa: E731
    result = replay_search(sessions, notes, scorer, judgments=judgments, settings=SearchSettings(bootstrap=0))
    logged = (1 + 4 / math.log2(3)) / (4 + 1 / math.log2(3))
    assert result.ndcg_logged == pytest.approx(logged)
    assert result.ndcg_new == pytest.approx(1.0)
    assert result.judged_share == 1.0
    assert result.sessions == 2 and result.observed_cpr_logged.value == 1.0
    assert result.inputs["search sessions"].reasons == {
        "note not in notes table": 1,
        "clicks not one per note shown": 1,
    }
    assert result.change.lo is None  # no bootstrap asked for


def test_errors(write_rows) -> None:
    notes = write_rows("notes.jsonl", [{"note_id": "a", "content": "x"}])
    sessions = write_rows("sessions.jsonl", [{"session_id": "s", "query": "q", "notes": ["zz"], "clicks": [0]}])
    with pytest.raises(ReplayInputError, match="no valid search session"):
        replay_search(sessions, notes, lambda pairs: [0.0] * len(pairs))
    ok = write_rows("ok.jsonl", [{"session_id": "s", "query": "q", "notes": ["a"], "clicks": [0]}])
    with pytest.raises(ReplayInputError, match="returned"):
        replay_search(ok, notes, lambda pairs: [0.0, 1.0])
    with pytest.raises(ReplayInputError, match="NoteQueryMatcher"):
        replay_search(ok, notes, object())


def test_real_matcher_scores_each_pair_once(tiny_bundle: Path, write_rows, tmp_path: Path) -> None:
    from redone_sdk import NoteQueryMatcher

    texts = {"a": "egg waffle recipe at home", "b": "best hiking routes near Hangzhou", "c": "how to make egg waffles"}
    notes = write_rows("notes.jsonl", [{"note_id": k, "content": v} for k, v in texts.items()])
    rows = [
        {
            "session_id": f"s{i}",
            "query": "egg waffle",
            "notes": ["b", "a", "c"],
            "clicks": [0, int(i % 2 == 0), int(i % 3 == 0)],
        }
        for i in range(30)
    ]
    sessions = write_rows("sessions.jsonl", rows)
    matcher = NoteQueryMatcher.load(tiny_bundle)
    result = replay_search(
        sessions, notes, matcher, cache=ScoreCache(tmp_path / "cache"), settings=SearchSettings(bootstrap=50)
    )
    assert result.pairs == 3 and result.pairs_scored_by_model == 3
    assert result.matcher.startswith("redone-tiny")
    again = replay_search(
        sessions, notes, matcher, cache=ScoreCache(tmp_path / "cache"), settings=SearchSettings(bootstrap=50)
    )
    assert again.pairs_scored_by_model == 0
    assert again.model_cpr_new == result.model_cpr_new
    direct = {
        r.note_id: r.score for r in matcher.rank("egg waffle", [{"note_id": k, "content": v} for k, v in texts.items()])
    }
    expected_order = sorted(direct, key=lambda k: (-direct[k], ["b", "a", "c"].index(k)))
    assert (expected_order != ["b", "a", "c"]) == (result.sessions_reordered == 1.0)
