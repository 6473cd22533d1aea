"""The review queue and console without a browser: `review` verdicts of the service queued once, reviewer
accounts with Argon2id hashes, claim-and-release (atomic under a race), decisions and the audit trail, and the
console's HTTP guards (sessions, CSRF, Origin, CSP, cookie flags). On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from review_helpers import PASSWORD, TRIAGE, Console, csrf_of, queue_notes
from serve_helpers import Service
from sqlalchemy import select, text

from redone_sdk import Moderator
from redone_sdk.serve.db import Reviewer
from redone_sdk.serve.review import ClaimLostError, ReviewError, ReviewStore, SessionInfo


@pytest.fixture
def review_service(make_service: Callable[..., Service]) -> Service:
    return make_service(policies={"triage": TRIAGE}, review_cookie_secure=False)


def reviewers(service: Service, *names: str, **kwargs: Any) -> tuple[ReviewStore, list[SessionInfo]]:
    store = ReviewStore(service.store.database, categories=("offensive", "hate", "sexism"), **kwargs)
    sessions = []
    for name in names:
        store.add_reviewer(name, PASSWORD)
        found = store.login(name, PASSWORD)
        assert found is not None
        sessions.append(found[1])
    return store, sessions


def notes(n: int, prefix: str = "n") -> list[dict[str, str]]:
    return [{"note_id": f"{prefix}{i}", "content": f"第{i}条笔记 note number {i}"} for i in range(n)]


def test_review_verdicts_are_queued_once_with_what_the_console_shows(
    review_service: Service, moderator: Moderator, texts: list[str]
) -> None:
    key = review_service.key()
    answer = queue_notes(review_service, key, [{"note_id": "a", "title": "标题", "content": "正文"}, *notes(2)])
    queue_notes(review_service, key, notes(2))  # the same notes again: already queued
    # /v1/moderations with the bundle's own policy: texts it sends to review are queued under a digest id
    review_texts = [r.note_id for r in moderator.classify_batch(texts[:300]) if r.action == "review"][:3]
    assert review_texts, "no note of the test data gets `review` from the default bundle"
    sent = [texts[int(i)] for i in review_texts]
    for _ in range(2):
        assert review_service.post("/v1/moderations", {"input": sent}, key=key).status_code == 200
    # allowed notes are not queued
    allowed = review_service.post("/v1/classify", {"input": {"note_id": "ok", "content": "今天天气很好"}}, key=key)
    assert allowed.json()["results"][0]["action"] != "review"

    store, _ = reviewers(review_service)
    items = store.pending(limit=100)
    assert store.counts() == {"pending": 3 + len(set(sent))}
    first = next(i for i in items if i.note_id == "a")
    result = answer["results"][0]
    assert (first.title, first.content, first.label, first.policy, first.source) == (
        "标题", "正文", result["label"], "triage", "classify"
    )  # fmt: skip
    assert first.scores == pytest.approx(result["scores"])
    assert (first.bundle_name, first.bundle_version, first.bundle_digest) == (
        moderator.bundle.name, moderator.bundle.version, result["model"]["digest"]
    )  # fmt: skip
    from_text = [i for i in items if i.source == "moderations"]
    assert {i.content for i in from_text} == set(sent)
    assert all(i.note_id.startswith("text:") and i.policy == moderator.policy.name for i in from_text)


def test_passwords_are_stored_as_argon2id_hashes_and_checked(review_service: Service) -> None:
    store, _ = reviewers(review_service, "alice")
    with review_service.store.database.session() as session:
        stored = session.scalars(select(Reviewer.password_hash)).one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert store.login("alice", "wrong password") is None
    assert store.login("nobody", PASSWORD) is None
    with pytest.raises(ReviewError):
        store.add_reviewer("alice", PASSWORD)
    with pytest.raises(ReviewError):
        store.add_reviewer("bob", "short")
    token, _who = store.login("ALICE", PASSWORD) or pytest.fail("login refused")
    assert store.session(token) is not None
    store.disable_reviewer("alice")
    assert store.session(token) is None  # a disabled reviewer's sessions end
    assert store.login("alice", PASSWORD) is None
    assert [e.event for e in store.audit_trail()][:4] == ["login_failed", "reviewer_disable", "login", "login_failed"]


def test_claims_keep_two_reviewers_off_the_same_note(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(2))
    store, (alice, bob) = reviewers(review_service, "alice", "bob")
    mine = store.claim_next(alice)
    assert mine is not None
    assert store.claim_next(alice) == mine  # asking again returns the same claim
    other = store.claim_next(bob)
    assert other is not None and other.id != mine.id
    assert store.claim_next(bob) == other
    with pytest.raises(ClaimLostError):
        store.claim(mine.id, bob)
    with pytest.raises(ClaimLostError):
        store.decide(mine.id, bob, "approve")
    assert store.release(mine.id, alice)
    store.claim(mine.id, bob)
    with pytest.raises(ClaimLostError):
        store.decide(mine.id, alice, "remove")
    decided = store.decide(mine.id, bob, "remove")
    assert (decided.status, decided.decision, decided.reviewer_label) == ("decided", "remove", decided.label)
    with pytest.raises(ClaimLostError):  # decided once only
        store.decide(mine.id, bob, "approve")


def test_an_expired_claim_can_be_taken_over(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(1))
    store, (alice, bob) = reviewers(review_service, "alice", "bob", claim_s=0.5)
    item = store.claim_next(alice)
    assert item is not None and store.claim_next(bob) is None
    time.sleep(0.7)
    assert store.claim_next(bob) == store.get(item.id)
    with pytest.raises(ClaimLostError):
        store.decide(item.id, alice, "approve")
    store.decide(item.id, bob, "approve")


def test_a_race_for_one_note_has_one_winner(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(1))
    names = [f"r{i}" for i in range(8)]
    store, sessions = reviewers(review_service, *names)
    barrier = threading.Barrier(len(sessions))
    won: list[Any] = []

    def claim(who: SessionInfo) -> None:
        barrier.wait()
        won.append(store.claim_next(who))

    threads = [threading.Thread(target=claim, args=(who,)) for who in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == len(sessions)
    assert sum(item is not None for item in won) == 1
    assert [e.event for e in store.audit_trail()].count("claim") == 1


def test_decisions_labels_audit_and_agreement(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(3))
    store, (alice,) = reviewers(review_service, "alice")
    decided = []
    for decision, category in (("approve", None), ("remove", None), ("relabel", "hate")):
        item = store.claim_next(alice)
        assert item is not None
        if decision == "relabel":
            with pytest.raises(ReviewError):
                store.decide(item.id, alice, "relabel", "no-such-category")
        decided.append(store.decide(item.id, alice, decision, category))
    assert store.claim_next(alice) is None
    approve, remove, relabel = decided
    assert approve.reviewer_label == "safe"
    assert remove.reviewer_label == remove.label
    assert relabel.reviewer_label == "hate"
    trail = [e for e in store.audit_trail() if e.event == "decide"]
    assert len(trail) == 3 and all(e.username == "alice" and e.bundle_version for e in trail)
    assert {e.item_id for e in trail} == {d.id for d in decided}
    by_label, by_day = store.agreement()
    assert sum(a.decided for a in by_label) == 3
    assert sum(a.agreed for a in by_label) == 1 + int(relabel.label == "hate")
    assert len(by_day) == 1 and by_day[0][1] == 3


# -- the console over HTTP ----------------------------------------------------------------------------------


def test_every_console_page_needs_a_session(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(1))
    for path in ("/review", "/review/decided", "/review/agreement", "/review/audit"):
        response = httpx.get(review_service.url + path)
        assert response.status_code == 303 and response.headers["location"] == "/review/login", path
    posted = httpx.post(review_service.url + "/review/items/1/decide", data={"decision": "approve"})
    assert posted.status_code == 401
    assert httpx.get(review_service.url + "/healthz").status_code == 200
    # a made-up or tampered session cookie is no session
    for cookie in ("made-up", "abc.def"):
        response = httpx.get(review_service.url + "/review", cookies={"redone_review": cookie})
        assert response.status_code == 303


def test_forms_without_the_csrf_token_or_from_another_origin_are_refused(review_service: Service) -> None:
    queue_notes(review_service, review_service.key(), notes(1))
    reviewers(review_service, "alice")
    console = Console(review_service)
    # the login form too
    assert console.client.post("/review/login", data={"username": "alice", "password": PASSWORD}).status_code == 403
    assert console.login("alice").status_code == 303
    page = console.queue()
    item = console.item_id(page.text)
    assert item is not None
    for data, headers in (
        ({"decision": "approve"}, {}),
        ({"decision": "approve", "csrf": "forged"}, {}),
        ({"decision": "approve", "csrf": csrf_of(page.text)}, {"Origin": "http://evil.example"}),
    ):
        refused = console.client.post(f"/review/items/{item}/decide", data=data, headers=headers)
        assert refused.status_code == 403
        assert "security token" in refused.text or "wrong" in refused.text
    assert console.client.post("/review/logout", data={}).status_code == 403
    store, _ = reviewers(review_service)
    assert store.counts() == {"pending": 1}
    assert console.decide(item, "approve").headers["location"] == "/review?notice=decided"
    assert store.counts() == {"decided": 1}


def test_logout_ends_the_session_on_the_server(review_service: Service) -> None:
    reviewers(review_service, "alice")
    console = Console(review_service)
    console.login("alice")
    cookie = console.client.cookies["redone_review"]
    page = console.queue()
    assert page.status_code == 200 and "alice" in page.text
    assert console.client.post("/review/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    replayed = httpx.get(review_service.url + "/review", cookies={"redone_review": cookie})
    assert replayed.status_code == 303  # the old cookie, replayed, no longer opens the console


def test_pages_carry_a_strict_csp_and_notes_are_escaped(review_service: Service) -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)"> \u202eevil'
    queue_notes(review_service, review_service.key(), [{"note_id": "<b>id</b>", "content": hostile}])
    reviewers(review_service, "alice")
    console = Console(review_service)
    console.login("alice")
    page = console.queue()
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "onerror=" not in page.text.replace("onerror=&#34;", "")
    assert "<b>id</b>" not in page.text and "\u202e" not in page.text and "[U+202E]evil" in page.text
    assert "<script" not in page.text.replace('<script src="/review/static/review.js" defer></script>', "")


def test_cookies_are_httponly_samesite_strict_and_secure(make_service: Callable[..., Service]) -> None:
    service = make_service()  # the default settings: Secure cookies
    reviewers(service, "alice")
    client = httpx.Client(base_url=service.url)
    login_page = client.get("/review/login")
    flags = login_page.headers["set-cookie"].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "secure" in flags and "path=/review" in flags
    cookie = login_page.headers["set-cookie"].split(";")[0]
    response = client.post(
        "/review/login",
        data={"csrf": csrf_of(login_page.text), "username": "alice", "password": PASSWORD},
        headers={"Cookie": cookie},
    )
    assert response.status_code == 303
    session_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("redone_review="))
    assert all(flag in session_cookie.lower() for flag in ("httponly", "samesite=strict", "secure"))


def test_a_queue_failure_does_not_fail_moderation(review_service: Service) -> None:
    key = review_service.key()
    with review_service.store.database.engine.begin() as connection:  # the queue table is gone
        connection.execute(text("ALTER TABLE review_items RENAME TO review_items_away"))
    try:
        answer = review_service.post("/v1/classify", {"input": notes(2), "policy": "triage"}, key=key)
        assert answer.status_code == 200
        assert [r["action"] for r in answer.json()["results"]] == ["review", "review"]
        assert review_service.metric("redone_serve_errors_total", kind="review_enqueue") == 1
    finally:
        with review_service.store.database.engine.begin() as connection:
            connection.execute(text("ALTER TABLE review_items_away RENAME TO review_items"))
