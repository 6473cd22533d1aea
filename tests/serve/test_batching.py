"""Dynamic batching: concurrent requests share classify passes, each gets its own results, a full queue is 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import Service

from redone_sdk import Moderator


def _concurrently(service: Service, key: str, bodies: list[object]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bodies))

    def send(body: object) -> httpx.Response:
        barrier.wait()
        return service.post("/v1/classify", body, key=key)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_concurrent_requests_share_passes(
    make_service: Callable[..., Service], moderator: Moderator, texts: list[str]
) -> None:
    service = make_service(max_batch=64, max_wait_ms=200)
    key = service.key()
    notes = [[{"note_id": f"r{r}-n{i}", "content": texts[r * 3 + i]} for i in range(3)] for r in range(16)]
    answers = _concurrently(service, key, [{"input": request} for request in notes])

    for request, answer in zip(notes, answers, strict=True):
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["note_id"] for r in results] == [n["note_id"] for n in request]  # its own slice, in order
        want = moderator.classify_batch(request)
        assert [r["action"] for r in results] == [w.action for w in want]
    passes = service.metric("redone_serve_batch_notes_count")
    assert service.metric("redone_serve_batch_notes_sum") == 48
    assert passes < 16, "16 concurrent requests were not gathered into fewer passes"
    assert service.metric("redone_serve_batch_requests_sum") == 16


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_batching_each_request_is_its_own_pass(make_service: Callable[..., Service], texts: list[str]) -> None:
    service = make_service(batching=False)
    key = service.key()
    answers = _concurrently(service, key, [{"input": {"note_id": f"n{i}", "content": texts[i]}} for i in range(8)])
    assert all(a.status_code == 200 for a in answers)
    assert service.metric("redone_serve_batch_notes_count") == 8
    assert service.metric("redone_serve_batch_notes_sum") == 8


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("batching", [True, False])
def test_a_full_queue_answers_429(make_service: Callable[..., Service], texts: list[str], batching: bool) -> None:
    service = make_service(max_queue=200, batching=batching)
    key = service.key()
    big = {"input": [{"note_id": f"n{i}", "content": texts[i % len(texts)]} for i in range(200)]}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(service.post, "/v1/classify", big, key=key)
        deadline = time.monotonic() + 10
        while service.metric("redone_serve_queue_notes") < 200:
            assert time.monotonic() < deadline and not first.done(), "the big request never queued"
            time.sleep(0.005)
        refused = service.post("/v1/moderations", {"input": "好"}, key=key)
        assert first.result().status_code == 200
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "queue_full"
    assert "200 notes queued" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert service.post("/v1/moderations", {"input": "好"}, key=key).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lone_client_does_not_wait_for_company(make_service: Callable[..., Service]) -> None:
    # behaviour, not speed: with a 1 s gathering window, five requests one after another would take 5 s if each
    # waited for others; nothing else is in flight, so each pass starts at once
    service = make_service(max_wait_ms=1000)
    key = service.key()
    started = time.perf_counter()
    for _ in range(5):
        assert service.post("/v1/moderations", {"input": "好"}, key=key).status_code == 200
    assert time.perf_counter() - started < 4.0
    assert service.metric("redone_serve_batch_notes_count") == 5
