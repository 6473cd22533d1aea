"""The review console in a real browser: headless Chromium from Debian's packages (/usr/bin/chromium, installed
by scripts/setup) driven by Playwright for Python; `playwright install` is never used. Marked `browser`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from review_helpers import PASSWORD, TRIAGE, queue_notes
from serve_helpers import Service

from redone_sdk.serve.review import ReviewStore

pytestmark = pytest.mark.browser


@pytest.fixture
def console(make_service: Callable[..., Service]) -> Service:
    """A service with Secure cookies (Chromium keeps them on http://127.0.0.1) and the triage policy."""
    service = make_service(policies={"triage": TRIAGE})
    store = ReviewStore(service.store.database)
    for name in ("alice", "bob"):
        store.add_reviewer(name, PASSWORD)
    return service


def page_of(browser, service: Service, name: str = "alice"):  # type: ignore[no-untyped-def]
    """A fresh browser context logged in as `name`; page errors and dialogs are collected on the page."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"error: {error}"))
    page.on("dialog", lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(service.url + "/review")
    assert page.url.endswith("/review/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#counts")
    return page


def store_of(service: Service) -> ReviewStore:
    return ReviewStore(service.store.database, categories=("offensive", "hate", "sexism"))


def act(page, how: str) -> None:  # type: ignore[no-untyped-def]
    """Click a selector (`#...`) or press a key, and wait for the page it leads to."""
    with page.expect_navigation():
        if how.startswith("#"):
            page.click(how)
        else:
            page.keyboard.press(how)


def shown_item(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.get_attribute("#note", "data-item"))


def test_decide_by_clicks_and_keys_relabel_and_log_out(  # type: ignore[no-untyped-def]
    browser, console: Service, tmp_path: Path, texts: list[str]
) -> None:
    # six real notes (COLD dev, tests/fixtures), sent to review by the triage policy
    queue_notes(console, console.key(), [{"note_id": f"cold-{i}", "content": texts[i]} for i in range(6)])
    page = page_of(browser, console)
    assert page.inner_text("#counts") == "6 pending · 0 decided"
    screenshot = tmp_path / "review-console.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("REDONE_REVIEW_SCREENSHOT"):  # docs/review-console.png is made this way (docs/review.md)
        shutil.copyfile(screenshot, os.environ["REDONE_REVIEW_SCREENSHOT"])

    done: dict[int, tuple[str, str | None]] = {}
    for how, decision, category in (
        ("#approve", "approve", None),
        ("#remove", "remove", None),
        ("a", "approve", None),
        ("r", "remove", None),
        ("2", "relabel", "hate"),
    ):
        item = shown_item(page)
        act(page, how)
        assert page.url.endswith("/review?notice=decided")
        done[item] = (decision, category)
    assert page.inner_text("#counts") == "1 pending · 5 decided"
    assert page.inner_text("#notice") == "Decision saved."

    store = store_of(console)
    for item_id, (decision, category) in done.items():
        item = store.get(item_id)
        assert item is not None and item.status == "decided" and item.decision == decision
        expected = {"approve": "safe", "remove": item.label, "relabel": category}[decision]
        assert item.reviewer_label == expected
    assert [e.username for e in store.audit_trail() if e.event == "decide"] == ["alice"] * 5

    # the first step of the training loop: these clicks become SFT rows (the reviewer's label as gold) and DPO
    # pairs where the reviewer and the model disagree (tests/training/test_feedback_loop.py runs the round)
    from redone_sdk.training.feedback import export_feedback

    export_feedback(console.store.database.url.render_as_string(hide_password=False), tmp_path / "feedback", holdout=0)
    items = {store.get(i).note_id: store.get(i) for i in done}  # type: ignore[union-attr]
    sft = [json.loads(line) for line in (tmp_path / "feedback" / "sft.jsonl").read_text().splitlines()]
    assert {row["note_id"]: row["label"] for row in sft} == {n: item.reviewer_label for n, item in items.items()}
    pairs = [json.loads(line) for line in (tmp_path / "feedback" / "dpo.jsonl").read_text().splitlines()]
    assert {(row["note_id"], row["chosen"], row["rejected"]) for row in pairs} == {
        (n, item.reviewer_label, item.label) for n, item in items.items() if item.reviewer_label != item.label
    }
    assert pairs and all("alice" not in json.dumps(row) for row in sft + pairs)  # no reviewer identities

    act(page, "#logout")
    assert page.url.endswith("/review/login")
    page.goto(console.url + "/review")
    assert page.url.endswith("/review/login")  # the session is over
    assert page.problems == []


def test_a_second_reviewer_does_not_get_a_claimed_note(browser, console: Service) -> None:  # type: ignore[no-untyped-def]
    queue_notes(console, console.key(), [{"note_id": "only", "content": "一条笔记"}])
    alice = page_of(browser, console, "alice")
    assert alice.inner_text("#note-id") == "only"
    bob = page_of(browser, console, "bob")
    assert bob.locator("#note").count() == 0 and bob.locator("#empty").count() == 1
    act(alice, "#skip")  # alice releases it: bob gets it now
    bob.reload()
    assert bob.inner_text("#note-id") == "only"
    alice.reload()
    assert alice.locator("#note").count() == 0


def test_decisions_survive_a_restart(browser, make_service: Callable[..., Service], console: Service) -> None:  # type: ignore[no-untyped-def]
    queue_notes(console, console.key(), [{"note_id": f"k{i}", "content": f"笔记{i}"} for i in range(3)])
    page = page_of(browser, console)
    first = shown_item(page)
    act(page, "r")
    page.context.close()
    console.stop()

    restarted = make_service(policies={"triage": TRIAGE})  # same database, new process state and cookie key
    page = page_of(browser, restarted)
    assert page.inner_text("#counts") == "2 pending · 1 decided"
    page.goto(restarted.url + "/review/decided")
    row = page.locator("#decided tr", has_text="k").first.inner_text()
    assert row.split("\t")[0] == str(first) and "remove" in row
    page.goto(restarted.url + "/review/agreement")
    assert page.locator("#agreement tr").count() == 2


HOSTILE = [
    ("script", "<script>window.__pwned = 'script'</script>看这里"),
    ("img", "<img src=x onerror=\"window.__pwned='img'\">图片"),
    ("link", "<a href=\"javascript:window.__pwned='link'\">点我</a> javascript:window.__pwned=1"),
    ("rlo", "正常文字 \u202etxt.exe\u202c 结尾"),
    ("title", '"><svg onload="window.__pwned=\'svg\'">'),
]


def test_hostile_notes_render_inert(browser, console: Service) -> None:  # type: ignore[no-untyped-def]
    queue_notes(
        console,
        console.key(),
        [{"note_id": f"h-{name}", "title": text if name == "title" else "", "content": text} for name, text in HOSTILE],
    )
    page = page_of(browser, console)
    seen = []
    for _ in HOSTILE:
        seen.append(page.inner_text("#note-id"))
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('[onerror], [onload]').length") == 0
        assert page.evaluate("document.querySelectorAll('#note img, #note svg, #note a, main script').length") == 0
        assert (
            page.evaluate("[...document.querySelectorAll('a')].filter(a => a.href.startsWith('javascript:')).length")
            == 0
        )
        shown = page.inner_text("#note-text")
        assert "\u202e" not in shown and "\u202c" not in shown
        if seen[-1] == "h-rlo":
            assert "[U+202E]txt.exe[U+202C]" in shown
        elif seen[-1] == "h-script":
            assert "<script>window.__pwned = 'script'</script>" in shown  # shown as text
        act(page, "s")  # skip to the next one
    assert sorted(seen) == sorted(f"h-{name}" for name, _ in HOSTILE)
    page.goto(console.url + "/review/audit")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.problems == []


def test_a_form_without_its_csrf_token_is_refused(browser, console: Service) -> None:  # type: ignore[no-untyped-def]
    queue_notes(console, console.key(), [{"note_id": "c1", "content": "一条笔记"}])
    page = page_of(browser, console)
    item = shown_item(page)
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    act(page, "#approve")
    assert "security token" in page.inner_text("#error")
    store = store_of(console)
    assert store.get(item).status == "pending"  # type: ignore[union-attr]
    page.goto(console.url + "/review")  # with the token, the same click works
    act(page, "#approve")
    assert store.get(item).status == "decided"  # type: ignore[union-attr]
