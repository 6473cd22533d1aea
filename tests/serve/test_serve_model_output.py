"""The service fails closed on non-finite model outputs (issue #20, point 7): a 500 with code `model_output_error`,
never an `allow`; with a policy that says review, a `review` result marked `invalid_output`. The model is the real
shipped bundle whose ONNX backend's logits are made NaN for notes that hold a marker character."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import Service

from redone_sdk import ModelOutputError, ModerationResult, Moderator, Note, Policy
from redone_sdk.serve import Database, KeyStore, ServeSettings, create_app
from redone_sdk.serve.batching import Batcher
from redone_sdk.serve.metrics import ServeMetrics

MARKER = "鼋"  # a rare character, one token of its own


class _Poisoned:
    """The real backend; rows holding the marker's token get NaN logits."""

    def __init__(self, real: object, marker: int) -> None:
        self._real, self._marker = real, marker
        self.name, self.info, self.workers = real.name, real.info, real.workers  # type: ignore[attr-defined]

    def executor(self) -> object:
        return self._real.executor()  # type: ignore[attr-defined]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = np.array(self._real(input_ids, attention_mask), copy=True)  # type: ignore[operator]
        logits[(input_ids == self._marker).any(axis=1)] = np.nan
        return logits


@pytest.fixture(scope="module")
def moderator(default_bundle: Path) -> Iterator[Moderator]:
    """Overrides conftest's: a moderator of its own, so poisoning its engine touches no other test."""
    model = Moderator.load(default_bundle, workers=1)
    engine = model._engine
    (marker,) = set(engine.encoder.encode_batch([{"text": f"x{MARKER}"}])[0].ids) - set(
        engine.encoder.encode_batch([{"text": "x"}])[0].ids
    )
    real = engine._backend
    engine._backend = _Poisoned(real, marker)  # type: ignore[assignment]
    yield model
    engine._backend = real


CLEAN = {"note_id": "clean", "content": "周末去哪儿玩"}
BAD = {"note_id": "bad", "content": f"一条{MARKER}笔记"}


def _review(moderator: Moderator) -> Policy:
    return Policy.from_dict({**moderator.policy.model_dump(), "on_invalid_output": "review"})


def test_a_non_finite_output_is_a_500_model_output_error(
    make_service: Callable[..., Service], moderator: Moderator
) -> None:
    service = make_service(policies={"reviewing": _review(moderator)})
    key = service.key()
    assert service.post("/v1/classify", {"input": [CLEAN]}, key=key).status_code == 200
    for path, body in (
        ("/v1/classify", {"input": [CLEAN, BAD]}),
        ("/v1/classify", {"input": BAD, "policy": "reviewing"}),  # the moderator's own policy already refused
        ("/v1/moderations", {"input": ["fine", BAD["content"]]}),
    ):
        answer = service.post(path, body, key=key)
        assert answer.status_code == 500, (path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["type"]) == ("model_output_error", "server_error")
        assert "not finite" in error["message"] and "'bad'" not in error["message"]  # positions, never values
    assert service.metric("redone_serve_errors_total", kind="model_output_error") >= 3
    assert "input[1]" in service.post("/v1/classify", {"input": [CLEAN, BAD]}, key=key).json()["error"]["message"]


def test_a_reviewing_policy_answers_review_never_allow(db_url: str, moderator: Moderator, tmp_path: Path) -> None:
    settings = ServeSettings(db=db_url, key_cache_s=0.0)
    db = Database(settings.db)
    db.connect()
    store = KeyStore(db, cache_s=0.0, grace_s=settings.key_grace_s)
    strict = Policy.from_dict({**moderator.policy.model_dump(), "name": "strict"})
    service = Service(
        create_app(moderator.with_policy(_review(moderator)), settings, store, policies={"strict": strict}),
        store,
        settings,
    )
    service.start()
    try:
        key = service.key()
        answer = service.post("/v1/classify", {"input": [CLEAN, BAD]}, key=key)
        assert answer.status_code == 200, answer.text
        clean, bad = answer.json()["results"]
        assert clean["invalid_output"] is False
        assert (bad["action"], bad["flagged"], bad["invalid_output"]) == ("review", True, True)
        assert all(v is None for v in bad["scores"].values())
        # OpenAI's shape: flagged, the categories whose score is unknown flagged, scores still numbers
        (openai,) = service.post("/v1/moderations", {"input": BAD["content"]}, key=key).json()["results"]
        assert openai["flagged"] is True and openai["redone"]["invalid_output"] is True
        assert openai["categories"]["harassment"] is True and openai["redone"]["action"] == "review"
        assert all(isinstance(v, float) for v in openai["category_scores"].values())
        # a named policy that errors on invalid output still fails closed for that request
        refused = service.post("/v1/classify", {"input": [BAD], "policy": "strict"}, key=key)
        assert refused.status_code == 500 and refused.json()["error"]["code"] == "model_output_error"
    finally:
        service.stop()


def test_batcher_fails_only_the_request_that_holds_the_bad_note(moderator: Moderator) -> None:
    passes: list[list[str]] = []

    def classify(notes: list[Note]) -> list[ModerationResult]:
        passes.append([n.note_id for n in notes])
        return moderator.classify_batch(notes)

    async def run() -> list[list[ModerationResult] | BaseException]:
        batcher = Batcher(
            classify, max_batch=64, max_wait_ms=500, max_queue=100, metrics=ServeMetrics(), arriving=lambda: 2
        )
        await batcher.start()
        try:
            clean_notes = [Note(**CLEAN), Note(**{**CLEAN, "note_id": "c2"})]
            return await asyncio.gather(
                batcher.submit(clean_notes), batcher.submit([Note(**BAD)]), return_exceptions=True
            )
        finally:
            await batcher.stop()

    good, bad = asyncio.run(run())
    assert passes[0] == ["clean", "c2", "bad"]  # gathered into one pass, which failed
    assert isinstance(bad, ModelOutputError) and "note_id 'bad'" in str(bad)
    assert isinstance(good, list) and [r.note_id for r in good] == ["clean", "c2"]
    assert all(not r.invalid_output for r in good)
