"""Bad input and misbehaving clients over raw HTTP: each gets a JSON error with the right status, and the
service goes on answering."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from serve_helpers import Service


def _error(response: httpx.Response, status: int, *words: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


def _still_serves(service: Service, key: str) -> None:
    response = service.post("/v1/moderations", {"input": "今天天气不错"}, key=key)
    assert response.status_code == 200, response.text


def _raw(service: Service, body: bytes, key: str, path: str = "/v1/moderations") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(service.url + path, content=body, headers=headers, timeout=60)


def test_malformed_json_and_invalid_utf8(service: Service) -> None:
    key = service.key()
    assert _error(_raw(service, b'{"input": ', key), 400, "not valid JSON")["code"] == "invalid_json"
    _error(_raw(service, b"input=hello", key), 400, "not valid JSON")
    _error(_raw(service, '{"input": "好"}'.encode("gbk"), key), 400, "not valid UTF-8")
    _error(_raw(service, b'{"input": "\xff\xfe"}', key), 400, "not valid UTF-8", "offset 11")
    _still_serves(service, key)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": 5}, ["input must be a string or a list of strings, not a number"]),
        ({"input": ["好", 3]}, ["input[1] must be a string", "not a number"]),
        ({"input": {"text": "好"}}, ["not an object"]),
        ({"model": "omni-moderation-latest"}, ["input: Field required"]),
        ({"input": "好", "unknown": 1}, ["unknown: Extra inputs are not permitted"]),
        ({"input": ""}, ["input[0] is empty"]),
        ({"input": ["好", "  "]}, ["input[1] is empty"]),
        ({"input": []}, ["input is an empty list"]),
        ({"input": "好" * 100_001}, ["at most 100000 characters"]),
    ],
)
def test_wrong_types_and_empty_input(service: Service, body: object, words: list[str]) -> None:
    key = service.key()
    _error(service.post("/v1/moderations", body, key=key, headers={}), 422, *words)


def test_native_endpoints_validate_notes(service: Service) -> None:
    key = service.key()
    _error(service.post("/v1/classify", {"input": [{"note_id": "a", "content": 5}]}, key=key), 422, "content")
    _error(service.post("/v1/classify", {"input": [{"note_id": "a", "title": " "}]}, key=key), 422, "non-empty")
    _error(service.post("/v1/classify", {"input": []}, key=key), 422, "empty list")
    _error(service.post("/v1/rank", {"query": "q", "notes": [], "top_k": 0}, key=key), 422, "top_k")
    _error(service.post("/v1/match", {"input": {"query": "q"}}, key=key), 422, "note: Field required")


def test_ten_thousand_strings_are_refused_at_once(service: Service) -> None:
    key = service.key()
    started = time.perf_counter()
    response = service.post("/v1/moderations", {"input": ["好"] * 10_000}, key=key)
    _error(response, 422, "10000 items", "at most 256")
    assert time.perf_counter() - started < 10  # refused before any note reaches the model
    assert service.metric("redone_serve_batch_notes_count") == 0
    _still_serves(service, key)


def test_the_input_limit_is_a_setting(make_service: Callable[..., Service]) -> None:
    service = make_service(max_inputs=600)
    key = service.key()
    texts = [f"第{i}条" for i in range(601)]
    _error(service.post("/v1/moderations", {"input": texts}, key=key), 422, "601 items", "at most 600")
    response = service.post("/v1/moderations", {"input": texts[:600]}, key=key)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["results"]) == 600


def test_five_megabyte_bodies(service: Service) -> None:
    key = service.key()
    body = json.dumps({"input": "好" * (5_000_000 // 3)}).encode()
    assert len(body) > 5_000_000
    _error(_raw(service, body, key), 413, "the limit is 1048576")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    streamed = httpx.post(service.url + "/v1/moderations", content=chunks(), headers=headers, timeout=60)
    _error(streamed, 413, "over the limit of 1048576 bytes")
    _still_serves(service, key)


def test_keys_wrong_missing_and_revoked(service: Service) -> None:
    key = service.key("alice")
    _still_serves(service, key)
    _error(service.post("/v1/moderations", {"input": "好"}), 401, "no API key")
    _error(service.post("/v1/moderations", {"input": "好"}, key=key + "x"), 401, "invalid or revoked")
    basic = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    _error(service.post("/v1/moderations", {"input": "好"}, headers=basic), 401, "Bearer")
    revoked = service.store.revoke(key[:12])
    assert revoked is not None and revoked.name == "alice" and not revoked.active
    _error(service.post("/v1/moderations", {"input": "好"}, key=key), 401, "invalid or revoked")
    assert service.metric("redone_serve_batch_notes_sum") == 1  # refused requests never reach the model


def test_unknown_paths_and_methods(service: Service) -> None:
    auth = {"Authorization": f"Bearer {service.key()}"}  # without a key: 401 first (test_route_auth.py)
    _error(httpx.get(service.url + "/v1/nothing", headers=auth), 404, "Not Found")
    _error(httpx.get(service.url + "/v1/moderations", headers=auth), 405, "Method Not Allowed")


def test_a_flood_past_the_rate_limit(make_service: Callable[..., Service]) -> None:
    service = make_service(rate_limit=2.0, rate_burst=3)
    flooder, bystander = service.key("flooder"), service.key("bystander")
    answers = [service.post("/v1/moderations", {"input": "好"}, key=flooder) for _ in range(12)]
    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [200, 200, 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 7, statuses  # 12 requests in well under the 4.5 s the rate would need
    for answer in limited:
        assert _error(answer, 429, "rate limit exceeded", "2 requests/s")["code"] == "rate_limit_exceeded"
        assert int(answer.headers["Retry-After"]) >= 1
    _still_serves(service, bystander)  # a key's limit is its own
    time.sleep(0.6)
    _still_serves(service, flooder)  # tokens come back at the rate


def test_a_key_with_its_own_rate(make_service: Callable[..., Service]) -> None:
    service = make_service(rate_limit=1000.0, rate_burst=2)
    slow = service.key("slow", rate_limit=0.5)
    statuses = [service.post("/v1/moderations", {"input": "好"}, key=slow).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_a_body_that_never_arrives(make_service: Callable[..., Service]) -> None:
    service = make_service(body_timeout_s=0.5)
    key = service.key()
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"input": ')
        answer = sock.recv(65_536).decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within 0.5 s" in answer
    _still_serves(service, key)


def test_a_client_that_disconnects_mid_request(make_service: Callable[..., Service], texts: list[str]) -> None:
    service = make_service(max_passes=2)
    key = service.key()
    body = json.dumps({"input": (texts * 3)[:250]}).encode()
    host, port = service.url.removeprefix("http://").split(":")
    for _ in range(3):
        sock = socket.create_connection((host, int(port)), timeout=10)
        head = (
            f"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        sock.close()  # gone before the ~0.5 s the 250 notes take
    deadline = time.monotonic() + 30
    while service.metric("redone_serve_client_disconnects_total") < 3:
        assert time.monotonic() < deadline, "the service never noticed the clients had gone"
        time.sleep(0.05)
    # the first two passes (250 notes each, over max_batch: one pass per request, two at once) had started and
    # finish; the third request was still queued behind them when its client left: its notes are skipped
    while service.metric("redone_serve_batch_notes_sum") + service.metric("redone_serve_skipped_notes_total") < 750:
        assert time.monotonic() < deadline, "notes neither classified nor skipped"
        time.sleep(0.05)
    assert service.metric("redone_serve_skipped_notes_total") == 250
    assert service.metric("redone_serve_requests_total", route="/v1/moderations", status="499") == 3
    _still_serves(service, key)


def test_no_result_in_time_is_503(make_service: Callable[..., Service], texts: list[str]) -> None:
    service = make_service(request_timeout_s=0.05)
    key = service.key()
    slow = service.post("/v1/moderations", {"input": (texts * 3)[:250]}, key=key)  # ~0.5 s of work
    assert _error(slow, 503, "no result within 0.05 s")["code"] == "unavailable"
    assert int(slow.headers["Retry-After"]) >= 1
