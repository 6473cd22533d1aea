"""The official `openai` client pointed at the service: the same verdicts as the library, OpenAI's shapes."""

from __future__ import annotations

import openai
import pytest
from serve_helpers import Service

from redone_sdk import Moderator
from redone_sdk.serve.openai_compat import OPENAI_CATEGORIES


def _client(service: Service, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_moderations_match_the_library(service: Service, moderator: Moderator, texts: list[str]) -> None:
    batch = texts[:12]
    response = _client(service, service.key()).moderations.create(model="omni-moderation-latest", input=batch)
    expected = moderator.classify_batch(batch)

    assert response.model == f"{moderator.bundle.name}-{moderator.bundle.version}"
    assert response.id.startswith("modr-")
    assert len(response.results) == len(batch)
    for got, want in zip(response.results, expected, strict=True):
        assert got.flagged == want.flagged
        scores = got.category_scores
        assert scores.harassment == pytest.approx(want.scores["offensive"], abs=1e-6)
        assert scores.hate == pytest.approx(max(want.scores["hate"], want.scores["sexism"]), abs=1e-6)
        assert scores.violence == 0.0 and got.categories.violence is False  # not modelled
        offensive_action = moderator.policy.rule_for("offensive").action(want.scores["offensive"])
        assert got.categories.harassment == (offensive_action != "allow")
        dumped = got.model_dump(by_alias=True)
        assert set(OPENAI_CATEGORIES) <= set(dumped["categories"])
        assert got.model_extra is not None  # the service's own verdict, kept by the client as an extra field
        assert got.model_extra["redone"]["action"] == want.action and got.model_extra["redone"]["label"] == want.label
    assert any(r.flagged for r in expected) and not all(r.flagged for r in expected), "the sample needs both kinds"


def test_a_single_string_and_text_items(service: Service, moderator: Moderator, texts: list[str]) -> None:
    client = _client(service, service.key())
    single = client.moderations.create(input=texts[0])
    items = client.moderations.create(input=[{"type": "text", "text": texts[0]}])
    want = moderator.classify(texts[0]).scores["offensive"]
    assert len(single.results) == len(items.results) == 1
    assert single.results[0].category_scores.harassment == pytest.approx(want, abs=1e-6)
    assert items.results[0].category_scores.harassment == pytest.approx(want, abs=1e-6)


def test_client_errors_are_typed(service: Service) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        _client(service, "rdn_not-a-key").moderations.create(input="你好")
    assert "invalid or revoked API key" in wrong.value.message

    client = _client(service, service.key())
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        client.moderations.create(input="   ")
    assert "input[0] is empty" in empty.value.message
    with pytest.raises(openai.UnprocessableEntityError) as image:
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert "text only" in image.value.message
