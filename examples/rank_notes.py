"""Rank notes for a search query with the default bundle's query-note matcher.

python examples/rank_notes.py "周末 杭州 去哪儿"
"""

from __future__ import annotations

import json
import sys

from redone_sdk import Note, NoteQueryMatcher

query = sys.argv[1] if len(sys.argv) > 1 else "marathon training plan"
with open("examples/notes.jsonl", encoding="utf-8") as handle:
    notes = [Note.model_validate(json.loads(line)) for line in handle if line.strip()]

matcher = NoteQueryMatcher.load()
for result in matcher.rank(query, notes, top_k=5):
    coverage = "" if result.lexical_coverage is None else f"  query terms found {result.lexical_coverage:.0%}"
    print(f"{result.score:.3f}  grade {result.grade:+d}  {result.note_id}{coverage}")
