"""Every route but the probes needs a caller: `/metrics`, `/docs` (and its files), `/openapi.json` and unknown paths
answer 401 without an API key or a review-console session, 200 with either; `/v1/*` takes keys only; `/healthz`
and `/readyz` stay open. Failed console logins are throttled per username and per client (429, Retry-After)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from review_helpers import PASSWORD, Console, csrf_of
from serve_helpers import Service

from redone_sdk.serve.review import ReviewStore
from redone_sdk.serve.review.throttle import LoginThrottle

GUARDED = ["/metrics", "/docs", "/openapi.json", "/docs/assets/swagger-ui.css", "/docs/oauth2-redirect"]
OPEN = ["/healthz", "/readyz", "/review/login", "/review/static/review.css"]


def _add_reviewer(service: Service, name: str) -> None:
    ReviewStore(service.store.database).add_reviewer(name, PASSWORD)


@pytest.fixture
def console_service(make_service: Callable[..., Service]) -> Service:
    return make_service(review_cookie_secure=False)  # httpx keeps Secure cookies only over HTTPS


def test_every_route_but_the_probes_needs_a_key(console_service: Service) -> None:
    service = console_service
    key = service.key("scraper")
    for path in [*GUARDED, "/no-such-page", "/v1/no-such-route"]:
        refused = httpx.get(service.url + path, timeout=30)
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "invalid_api_key", path
        assert "Authorization: Bearer" in refused.json()["error"]["message"], path
        wrong = httpx.get(service.url + path, headers={"Authorization": "Bearer rdn_wrong"}, timeout=30)
        assert wrong.status_code == 401, path
    assert "/review/login" in httpx.get(service.url + "/metrics", timeout=30).json()["error"]["message"]

    auth = {"Authorization": f"Bearer {key}"}
    for path in GUARDED:
        assert httpx.get(service.url + path, headers=auth, timeout=30).status_code == 200, path
    assert "redone_serve_requests_total" in httpx.get(service.url + "/metrics", headers=auth, timeout=30).text
    assert "/v1/moderations" in httpx.get(service.url + "/openapi.json", headers=auth, timeout=30).json()["paths"]
    assert httpx.get(service.url + "/no-such-page", headers=auth, timeout=30).status_code == 404

    for path in OPEN:
        assert httpx.get(service.url + path, timeout=30).status_code == 200, path
    assert httpx.get(service.url + "/review", timeout=30).status_code == 303  # the console's own login redirect
    assert service.post("/v1/moderations", {"input": "x"}).status_code == 401

    service.store.revoke(key)
    assert httpx.get(service.url + "/metrics", headers=auth, timeout=30).status_code == 401


def test_a_console_session_opens_the_docs_and_metrics_but_not_the_api(console_service: Service) -> None:
    service = console_service
    _add_reviewer(service, "alice")
    console = Console(service)
    try:
        assert console.login("alice").status_code == 303
        for path in GUARDED:  # the session cookie (Path=/) is sent to these by the client itself
            assert console.client.get(path).status_code == 200, path
        assert console.client.post("/v1/moderations", json={"input": "x"}).status_code == 401  # keys only
        cookie = console.client.cookies["redone_review"]
        page = console.queue()
        assert console.client.post("/review/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
        replayed = httpx.get(service.url + "/metrics", cookies={"redone_review": cookie}, timeout=30)
        assert replayed.status_code == 401  # logged out: the cookie opens nothing any more
    finally:
        console.close()
    forged = httpx.get(service.url + "/docs", cookies={"redone_review": "made-up.sig"}, timeout=30)
    assert forged.status_code == 401


def test_without_auth_only_the_console_keeps_its_login(make_service: Callable[..., Service]) -> None:
    service = make_service(auth=False)
    for path in GUARDED:
        assert httpx.get(service.url + path, timeout=30).status_code == 200, path
    assert httpx.get(service.url + "/review", timeout=30).status_code == 303


def test_without_the_console_a_key_is_the_only_way(make_service: Callable[..., Service]) -> None:
    service = make_service(review=False)
    refused = httpx.get(service.url + "/docs", timeout=30)
    assert refused.status_code == 401 and "/review/login" not in refused.json()["error"]["message"]
    assert httpx.get(service.url + "/review/login", timeout=30).status_code == 401  # no console: not an open page
    assert httpx.get(service.url + "/healthz", timeout=30).status_code == 200


def test_failed_logins_are_throttled_per_username(console_service: Service) -> None:
    _add_reviewer(console_service, "alice")
    _add_reviewer(console_service, "bob")
    console = Console(console_service)
    try:
        for _ in range(5):
            assert console.login("alice", "wrong password").status_code == 401
        throttled = console.login(" Alice ", PASSWORD)  # the right password, the same name: refused all the same
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["Retry-After"]) <= 900
        assert "Too many failed logins" in throttled.text and "15 minutes" in throttled.text
        assert "redone_review" not in console.client.cookies
        assert console.login("bob", PASSWORD).status_code == 303  # another name from this client still works
    finally:
        console.close()


def test_the_login_limits_are_settings(make_service: Callable[..., Service]) -> None:
    """REDONE_SERVE_REVIEW_LOGIN_* (or ServeSettings): two failures of a name within a minute, then 429."""
    service = make_service(review_cookie_secure=False, review_login_max_per_user=2, review_login_window_s=60.0)
    _add_reviewer(service, "erin")
    console = Console(service)
    try:
        for _ in range(2):
            assert console.login("erin", "wrong password").status_code == 401
        throttled = console.login("erin", PASSWORD)
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert "try again in 1 minute." in throttled.text
    finally:
        console.close()


def test_failed_logins_are_throttled_per_client(console_service: Service) -> None:
    _add_reviewer(console_service, "carol")
    console = Console(console_service)
    try:
        for i in range(20):  # a spray over many names: each one under its own limit
            assert console.login(f"guess{i}", "wrong password").status_code == 401
        assert console.login("carol", PASSWORD).status_code == 429
    finally:
        console.close()


def test_the_throttle_window_and_what_a_success_clears() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_per_user=2, max_per_client=3, window_s=60.0, clock=lambda: now[0])
    throttle.failed("alice", "10.0.0.1")
    now[0] += 10
    throttle.failed("alice", "10.0.0.2")
    assert throttle.retry_after("alice", "10.0.0.3") == pytest.approx(50.0)  # the first failure ages out at 1060
    assert throttle.retry_after("bob", "10.0.0.1") == 0.0
    throttle.succeeded("ALICE")
    assert throttle.retry_after("alice", "10.0.0.3") == 0.0
    throttle.failed("bob", "10.0.0.1")
    throttle.failed("carol", "10.0.0.1")
    assert throttle.retry_after("dave", "10.0.0.1") == pytest.approx(50.0)  # three from one client
    now[0] += 50
    assert throttle.retry_after("dave", "10.0.0.1") == 0.0
