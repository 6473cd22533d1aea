"""Search inputs of a replay: logged page views (query, notes shown top first, clicks) and graded relevance
judgments, each row checked and every bad row counted by reason."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redone_sdk.replay.formats import iter_dict_rows, require_columns
from redone_sdk.replay.notes import NotesIndex
from redone_sdk.replay.schemas import TableIssues

__all__ = ["SearchSessions", "iter_sessions", "read_sessions", "read_judgments"]


@dataclass
class SearchSessions:
    """Valid search page views: the query, the logged ranking (note ids, top first) and clicks per position."""

    session_ids: list[str]
    queries: list[str]
    notes: list[list[str]]
    clicks: list[list[int]]
    issues: TableIssues

    def __len__(self) -> int:
        return len(self.queries)


def _session_problem(record: dict, notes: NotesIndex | None, max_page: int) -> tuple[str | None, tuple | None]:
    session_id, query = record.get("session_id"), record.get("query")
    shown, clicks = record.get("notes"), record.get("clicks")
    if isinstance(session_id, int) and not isinstance(session_id, bool):
        session_id = str(session_id)
    if not isinstance(session_id, str) or not session_id:
        return "missing session_id", None
    if not isinstance(query, str) or not query.strip():
        return "missing query", None
    if not isinstance(shown, list) or not shown:
        return "no notes shown", None
    if any(not isinstance(n, str) or not n for n in shown):
        return "note id not a non-empty string", None
    if len(set(shown)) != len(shown):
        return "note shown twice in one session", None
    if len(shown) > max_page:
        return f"more than {max_page} notes shown", None
    if not isinstance(clicks, list) or len(clicks) != len(shown):
        return "clicks not one per note shown", None
    if not all(isinstance(c, bool) or (isinstance(c, (int, float)) and c in (0, 1)) for c in clicks):
        return "click not 0/1", None
    if notes is not None and any(notes.position(n) is None for n in shown):
        return "note not in notes table", None
    return None, (session_id, query, list(shown), [int(c) for c in clicks])


def iter_sessions(
    path: str | Path,
    issues: TableIssues,
    *,
    notes: NotesIndex | None = None,
    max_page: int = 100,
    batch_rows: int = 65_536,
) -> Iterator[tuple[int, tuple[str, str, list[str], list[int]]]]:
    """Stream valid page views as (row, (session_id, query, notes, clicks)); bad rows are counted in `issues`.

    Duplicate session ids are not detected here (that needs every id seen): the caller does it."""
    path = Path(path)
    require_columns(path, ["session_id", "query", "notes", "clicks"], "search sessions")
    for row, record in iter_dict_rows(path, issues, ("session_id", "query", "notes", "clicks"), batch_rows):
        problem, parsed = _session_problem(record, notes, max_page)
        if problem is not None or parsed is None:
            issues.add(problem or "invalid", row=row, value=str(record.get("session_id", ""))[:80])
            continue
        yield row, parsed


def read_sessions(path: str | Path, *, notes: NotesIndex | None = None, max_page: int = 100) -> SearchSessions:
    """Read search sessions (`session_id`, `query`, `notes`: ids top first, `clicks`: 0/1 per note) in memory.

    `replay_search` streams them instead (`search_log.spill_sessions`); this is for small logs and tests."""
    issues = TableIssues(table="search sessions", source=str(path))
    out = SearchSessions([], [], [], [], issues)
    seen: set[str] = set()
    for row, parsed in iter_sessions(path, issues, notes=notes, max_page=max_page):
        if parsed[0] in seen:
            issues.add("duplicate session_id", row=row, value=parsed[0][:80])
            continue
        seen.add(parsed[0])
        out.session_ids.append(parsed[0])
        out.queries.append(parsed[1])
        out.notes.append(parsed[2])
        out.clicks.append(parsed[3])
    issues.rows_used = len(out)
    return out


def read_judgments(path: str | Path) -> tuple[dict[tuple[str, str], int], TableIssues]:
    """Graded relevance {(query, note_id): grade in -1 … 3} and the accounting of its rows."""
    path = Path(path)
    issues = TableIssues(table="judgments", source=str(path))
    require_columns(path, ["query", "note_id", "grade"], "judgments")
    grades: dict[tuple[str, str], int] = {}
    for row, record in iter_dict_rows(path, issues, ("query", "note_id", "grade"), 65_536):
        query, note_id, grade = record.get("query"), record.get("note_id"), record.get("grade")
        if not isinstance(query, str) or not query.strip() or not isinstance(note_id, str) or not note_id:
            issues.add("missing query or note_id", row=row)
        elif isinstance(grade, bool) or not isinstance(grade, int) or not -1 <= grade <= 3:
            issues.add("grade not an integer in -1..3", row=row, value=repr(grade))
        elif (query, note_id) in grades:
            issues.add("duplicate judgment", row=row, value=note_id)
        else:
            grades[(query, note_id)] = grade
    issues.rows_used = len(grades)
    return grades, issues
