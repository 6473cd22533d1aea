"""Native endpoints, probes, metrics and the OpenAPI page, against the library's own answers."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from serve_helpers import Service

from redone_sdk import Moderator, NoteQueryMatcher
from redone_sdk.policy import CategoryRule, Policy


def test_classify_notes_with_a_named_policy(
    make_service: Callable[..., Service], moderator: Moderator, texts: list[str]
) -> None:
    strict = Policy(name="strict", default=CategoryRule(review=0.0, block=None))
    service = make_service(policies={"strict": strict})
    key = service.key()
    notes = [{"note_id": f"n{i}", "title": "标题", "content": text} for i, text in enumerate(texts[:6])]

    default = service.post("/v1/classify", {"input": notes}, key=key)
    assert default.status_code == 200, default.text
    want = [r.model_dump(mode="json") for r in moderator.classify_batch(notes)]
    body = default.json()
    model = f"{moderator.bundle.name}-{moderator.bundle.version}"
    assert body["policy"] == moderator.policy.name and body["model"] == model
    assert [r["note_id"] for r in body["results"]] == [f"n{i}" for i in range(6)]
    for got, expected in zip(body["results"], want, strict=True):
        assert got["action"] == expected["action"] and got["label"] == expected["label"]
        assert got["scores"] == {k: abs_close(v, got["scores"][k]) for k, v in expected["scores"].items()}

    one = service.post("/v1/classify", {"input": notes[0], "policy": "strict"}, key=key).json()
    assert one["policy"] == "strict"
    assert [r["action"] for r in one["results"]] == ["review"]  # every score passes a review threshold of 0

    unknown = service.post("/v1/classify", {"input": notes[0], "policy": "nope"}, key=key)
    assert unknown.status_code == 422 and "no policy 'nope'" in unknown.json()["error"]["message"]


def abs_close(want: float, got: float) -> float:
    """`got` when it is within 1e-6 of `want` (so that dict equality reports the key that differs)."""
    return got if abs(got - want) <= 1e-6 else want


def test_match_and_rank_follow_the_matcher(service: Service, moderator: Moderator, texts: list[str]) -> None:
    matcher = NoteQueryMatcher(moderator.bundle, options=moderator.options)
    key = service.key()
    notes = [{"note_id": f"n{i}", "content": text} for i, text in enumerate(texts[:8])]
    query = texts[3][:20]

    ranked = service.post("/v1/rank", {"query": query, "notes": notes, "top_k": 3}, key=key)
    assert ranked.status_code == 200, ranked.text
    want = matcher.rank(query, notes, top_k=3)
    assert [r["note_id"] for r in ranked.json()["results"]] == [r.note_id for r in want]

    pairs = [{"query": query, "note": note} for note in notes[:2]]
    matched = service.post("/v1/match", {"input": pairs}, key=key).json()["results"]
    want_pairs = matcher.score_pairs([(query, note) for note in notes[:2]])
    assert [r["grade"] for r in matched] == [r.grade for r in want_pairs]
    assert [round(r["score"], 5) for r in matched] == [round(r.score, 5) for r in want_pairs]

    bad = service.post("/v1/rank", {"query": "", "notes": notes}, key=key)
    assert bad.status_code == 422 and "query" in bad.json()["error"]["message"]


def test_probes_metrics_and_openapi(service: Service, moderator: Moderator, texts: list[str]) -> None:
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(service.url + "/readyz")
    assert ready.status_code == 200
    model = f"{moderator.bundle.name}-{moderator.bundle.version}"
    assert ready.json() == {"ready": True, "model": model, "draining": False, "database": True}

    key = service.key()
    assert service.post("/v1/moderations", {"input": texts[:3]}, key=key).status_code == 200
    assert service.post("/v1/moderations", {"input": "x"}, key="rdn_wrong").status_code == 401
    assert service.metric("redone_serve_requests_total", route="/v1/moderations", status="200") == 1
    assert service.metric("redone_serve_requests_total", route="/v1/moderations", status="401") == 1
    assert service.metric("redone_serve_errors_total", kind="invalid_api_key") == 1
    assert service.metric("redone_serve_batch_notes_sum") == 3
    assert service.metric("redone_serve_request_seconds_count", route="/v1/moderations") == 2
    assert sum(service.metric("redone_serve_notes_total", action=a) for a in ("allow", "review", "block")) == 3
    assert service.metric("redone_serve_queue_notes") == 0

    auth = {"Authorization": f"Bearer {key}"}  # every route but the probes needs a key (test_route_auth.py)
    spec = httpx.get(service.url + "/openapi.json", headers=auth).json()
    assert {"/v1/moderations", "/v1/classify", "/v1/match", "/v1/rank", "/readyz"} <= set(spec["paths"])
    assert {"Note", "ModerationResult", "MatchResult", "ModerationRequest", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )
    assert httpx.get(service.url + "/docs", headers=auth).status_code == 200


def test_without_auth_no_key_is_needed(make_service: Callable[..., Service]) -> None:
    service = make_service(auth=False)
    response = service.post("/v1/moderations", {"input": "今天天气不错"})
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_notes_are_logged_only_when_asked(
    make_service: Callable[..., Service], texts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    quiet, chatty = make_service(), make_service(log_notes=True)
    with caplog.at_level(logging.DEBUG):
        assert quiet.post("/v1/moderations", {"input": texts[5]}, key=quiet.key()).status_code == 200
        assert texts[5] not in caplog.text
        assert chatty.post("/v1/moderations", {"input": texts[5]}, key=chatty.key()).status_code == 200
    logged = [r for r in caplog.records if r.name == "redone_sdk.serve.notes"]
    assert len(logged) == 1 and texts[5] in logged[0].getMessage()
