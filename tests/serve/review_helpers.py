"""Helpers of the review-console tests (imported by name: tests/serve is on sys.path): a policy that sends every
note to review, queueing notes through the service's own /v1/classify, and a console client over raw HTTP."""

from __future__ import annotations

import re
from typing import Any

import httpx
from serve_helpers import Service

from redone_sdk.policy import CategoryRule, Policy

# every note past a 0.0 review threshold and under 1.0 to block: the service answers `review` for all of them
TRIAGE = Policy(name="triage", default=CategoryRule(review=0.0, block=1.0))
PASSWORD = "correct horse battery staple"


def queue_notes(service: Service, key: str, notes: list[dict[str, Any]]) -> Any:
    """Classify `notes` with the triage policy: the service queues each one for review."""
    response = service.post("/v1/classify", {"input": notes, "policy": "triage"}, key=key)
    assert response.status_code == 200, response.text
    assert {r["action"] for r in response.json()["results"]} == {"review"}
    return response.json()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Console:
    """A reviewer's browserless session on the console (cookies kept by httpx; run with Secure cookies off)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.client = httpx.Client(base_url=service.url, timeout=30, follow_redirects=False)

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        page = self.client.get("/review/login")
        return self.client.post(
            "/review/login", data={"csrf": csrf_of(page.text), "username": username, "password": password}
        )

    def queue(self, **params: Any) -> httpx.Response:
        return self.client.get("/review", params=params)

    def item_id(self, html: str) -> int | None:
        found = re.search(r'data-item="(\d+)"', html)
        return int(found.group(1)) if found else None

    def decide(self, item_id: int, decision: str, category: str | None = None, **extra: Any) -> httpx.Response:
        html = self.queue().text
        data = {"csrf": csrf_of(html), "decision": decision, **({"category": category} if category else {}), **extra}
        return self.client.post(f"/review/items/{item_id}/decide", data=data)

    def close(self) -> None:
        self.client.close()
