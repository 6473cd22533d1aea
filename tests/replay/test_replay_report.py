import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from redone_sdk.policy import CategoryRule, Policy
from redone_sdk.replay import (
    Arm,
    ExposureSettings,
    NoteScores,
    SearchSettings,
    load_results,
    replay_exposure,
    replay_search,
    write_report,
)

CATS = ("offensive", "hate", "sexism")
VOID = {"meta", "img", "br", "hr", "link", "input"}


class TagBalance(HTMLParser):
    """Fails on any close tag that does not match the open one: the HTML is well formed."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


@pytest.fixture
def results(hand_log: dict[str, Path], write_rows):
    scores = NoteScores.from_mapping(
        {f"n{i}": {"offensive": v, "hate": 0.0, "sexism": 0.0} for i, v in enumerate([0.1, 0.95, 0.6, 0.7])}, CATS
    )
    arms = [
        Arm.control("logged"),
        Arm("strict", policy=Policy(default=CategoryRule(review=0.5, block=0.9)), scores=scores),
    ]
    exposure = replay_exposure(
        hand_log["impressions"],
        hand_log["notes"],
        arms,
        labels=hand_log["labels"],
        settings=ExposureSettings(review_delay=timedelta(hours=2), bootstrap=100),
    )
    rows = [
        {
            "session_id": f"s{i}",
            "query": "q <b>&",
            "notes": ["n0", "n1", "n2"],
            "clicks": [int(i % 3 == 0), int(i % 2 == 0), 0],
        }
        for i in range(40)
    ]
    sessions = write_rows(
        "sessions.jsonl", [*rows, {"session_id": "bad", "query": "q", "notes": ["n0"], "clicks": [5]}]
    )
    search = replay_search(
        sessions,
        hand_log["notes"],
        lambda pairs: [{"n0": 0.2, "n1": 0.9, "n2": 0.5}[n.note_id] for _, n in pairs],
        settings=SearchSettings(bootstrap=100),
    )
    return exposure, search


def test_report_renders(results, tmp_path: Path) -> None:
    exposure, search = results
    out = tmp_path / "report"
    html_path = write_report(out, exposure=exposure, search=search)
    parser = TagBalance()
    parser.feed(html_path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [] and {"html", "head", "body", "table", "h2", "img"} <= parser.seen
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert pngs == sorted(Path(src).name for src in parser.images)
    assert len(pngs) >= 7
    for name in pngs:
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        figure = json.loads((out / "figures" / name.replace(".png", ".json")).read_text())
        assert figure["series"] and all(len(s["x"]) == len(s["y"]) for s in figure["series"])
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## Exposure-rate replay" in markdown and "## Click-page-rate replay (search)" in markdown
    assert "| strict |" in markdown and "-100.00 %" in markdown
    assert "click not 0/1: 1" in markdown  # the bad session is reported
    assert "q <b>&" not in html_path.read_text()  # text is escaped in the HTML
    rate = json.loads((out / "figures" / "exposure_rate_by_arm.json").read_text())
    assert rate["series"][0]["y"] == pytest.approx([0.6, 0.0])


def test_results_round_trip_and_rerender(results, tmp_path: Path) -> None:
    exposure, search = results
    out = tmp_path / "r"
    write_report(out, exposure=exposure)
    write_report(out, search=search)  # the exposure results already in the folder join the report
    loaded_exposure, loaded_search = load_results(out)
    assert loaded_exposure == exposure and loaded_search == search
    assert "## Exposure-rate replay" in (out / "report.md").read_text()
    (out / "report.html").unlink()
    write_report(out)
    assert (out / "report.html").stat().st_size > 1000
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "empty")


def test_report_on_results_of_another_version_is_one_line(results, tmp_path: Path, capsys) -> None:
    """An old or damaged search.json / exposure.json: `redone replay report` says which file and why, exit 2."""
    from redone_sdk.cli import main as redone_main
    from redone_sdk.replay.cli import main as replay_main
    from redone_sdk.replay.schemas import ReplayInputError

    exposure, search = results
    out = tmp_path / "r"
    write_report(out, exposure=exposure, search=search)
    old = json.loads((out / "search.json").read_text())
    del old["sessions"]  # a field this version requires, as if written before it existed
    old["legacy_field"] = 1
    (out / "search.json").write_text(json.dumps(old))
    with pytest.raises(ReplayInputError, match=r"search\.json is not a SearchResult .*first: sessions: Field required"):
        load_results(out)
    for main, argv in ((replay_main, ["report", str(out)]), (redone_main, ["replay", "report", str(out)])):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "search.json" in err and "Traceback" not in err, err
    (out / "search.json").unlink()
    (out / "exposure.json").write_text('{"settings": ')  # cut short
    assert replay_main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exposure.json" in err and "not valid JSON" in err, err
