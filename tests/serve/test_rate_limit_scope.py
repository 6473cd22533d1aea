"""What docs/serve.md says about the scope of rate limits: a key's token bucket lives in the memory of the process
that serves it. Two processes (replicas, workers) on one key database each let the key spend its whole burst, and
a restarted process starts with a full bucket; the key's own rate, stored in the database, applies in each."""

from __future__ import annotations

from collections.abc import Callable

from serve_helpers import Service

BODY = {"input": "今天天气不错"}
SLOW = 0.001  # requests/s: a spent token takes 1000 s to come back, so nothing here depends on timing


def _statuses(service: Service, key: str, count: int) -> list[int]:
    return [service.post("/v1/moderations", BODY, key=key).status_code for _ in range(count)]


def test_each_process_limits_a_key_on_its_own(make_service: Callable[..., Service]) -> None:
    first = make_service(rate_limit=SLOW, rate_burst=3)
    second = make_service(rate_limit=SLOW, rate_burst=3)  # another replica on the same key database
    key = first.key("shared")

    assert _statuses(first, key, 4) == [200, 200, 200, 429]
    # the first process has spent the key's burst; the second has its own bucket, full
    assert _statuses(second, key, 4) == [200, 200, 200, 429]
    refused = first.post("/v1/moderations", BODY, key=key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_restarted_process_starts_with_a_full_bucket(make_service: Callable[..., Service]) -> None:
    before = make_service(rate_limit=SLOW, rate_burst=2)
    key = before.key("restarted")
    assert _statuses(before, key, 3) == [200, 200, 429]
    before.stop()
    after = make_service(rate_limit=SLOW, rate_burst=2)  # the same settings and database, a new process state
    assert _statuses(after, key, 3) == [200, 200, 429]


def test_a_keys_own_rate_applies_in_every_process(make_service: Callable[..., Service]) -> None:
    first = make_service(rate_limit=1000.0, rate_burst=2)
    second = make_service(rate_limit=1000.0, rate_burst=2)
    key = first.key("slow", rate_limit=SLOW)  # stored with the key: every process reads it from the database
    for service in (first, second):
        assert _statuses(service, key, 3) == [200, 200, 429]  # the burst is the service's; the rate the key's
        answer = service.post("/v1/moderations", BODY, key=key)
        assert f"{SLOW:g} requests/s" in answer.json()["error"]["message"]
