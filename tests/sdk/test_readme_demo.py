"""The README's demo output is what `scripts/demo` prints with the shipped default bundle, and the example notes
issue #16 names come out right: the sourdough note allowed, the sexist note `sexism`, the racist note `hate`.
(The English dehumanising note n012 is still allowed; the README says so, and no assertion pretends otherwise.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redone_sdk import Moderator
from redone_sdk.schemas import Note

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- demo-output -->\s*```text\n(.*?)```", re.DOTALL)
LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+) (\d\.\d\d)$")


def _readme_verdicts() -> dict[str, tuple[str, str, str, float]]:
    match = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md lacks the <!-- demo-output --> block"
    verdicts = {}
    for line in match.group(1).strip().splitlines():
        parsed = LINE.match(line.strip())
        assert parsed, f"unreadable demo line: {line!r}"
        note_id, label, action, top, score = parsed.groups()
        verdicts[note_id] = (label, action, top, float(score))
    return verdicts


def render(result) -> str:
    """One README line of a verdict: note id, label, action, the top harmful category and its score."""
    top = max(result.scores, key=result.scores.get)
    return f"{result.note_id:<5} {result.label:<9} {result.action:<6} {top} {result.scores[top]:.2f}"


@pytest.fixture(scope="module")
def demo_results():
    notes = [
        Note.model_validate_json(line)
        for line in (ROOT / "examples" / "notes.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return Moderator.load().classify_batch(notes)


def test_readme_shows_what_the_demo_prints(demo_results) -> None:
    readme = _readme_verdicts()
    expected = "\n".join(render(r) for r in demo_results)
    assert set(readme) == {r.note_id for r in demo_results}, f"README demo block should read:\n{expected}"
    for result in demo_results:
        label, action, top, score = readme[result.note_id]
        assert (result.label, result.action, max(result.scores, key=result.scores.get)) == (label, action, top), (
            f"README demo block should read:\n{expected}"
        )
        # int8 kernels differ a little between CPUs: the printed score may move in its last digit
        assert abs(result.scores[top] - score) <= 0.02, f"README demo block should read:\n{expected}"


def test_the_example_notes_come_out_right(demo_results) -> None:
    verdict = {r.note_id: r for r in demo_results}
    assert verdict["n007"].action == "allow" and not verdict["n007"].flagged  # sourdough starter
    assert verdict["n004"].label == "sexism"  # "women should stay home and cook"
    assert verdict["n005"].label == "hate"  # a racist generalisation, in Chinese
    readme = _readme_verdicts()
    assert readme["n007"][1] == "allow" and readme["n004"][0] == "sexism" and readme["n005"][0] == "hate"
