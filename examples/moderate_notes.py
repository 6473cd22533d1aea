"""Moderate notes with the default bundle and a stricter policy for `hate`, without retraining.

python examples/moderate_notes.py examples/notes.jsonl
"""

from __future__ import annotations

import json
import sys

from redone_sdk import CategoryRule, Moderator, Note

moderator = Moderator.load()  # the bundle shipped in the package; nothing is downloaded
strict = moderator.policy.with_rule("hate", CategoryRule(review=0.2, block=0.6))
strict_moderator = moderator.with_policy(strict)  # same model, other thresholds

path = sys.argv[1] if len(sys.argv) > 1 else "examples/notes.jsonl"
with open(path, encoding="utf-8") as handle:
    notes = [Note.model_validate(json.loads(line)) for line in handle if line.strip()]

for default, stricter in zip(moderator.classify_batch(notes), strict_moderator.classify_batch(notes), strict=True):
    top = max(default.scores, key=default.scores.get)
    print(f"{default.note_id}  {default.action:6} -> {stricter.action:6}  top={top} {default.scores[top]:.2f}")
