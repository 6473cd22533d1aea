"""The FastAPI app: OpenAI-compatible `/v1/moderations`, native `/v1/classify`, `/v1/match`, `/v1/rank`, probes
and `/metrics`, around one loaded model shared by every request."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from redone_sdk import __version__
from redone_sdk.errors import InvalidInputError, ModelOutputError, RedOneError
from redone_sdk.matcher import NoteQueryMatcher
from redone_sdk.moderator import Moderator
from redone_sdk.policy import Policy
from redone_sdk.schemas import ModerationResult, Note, coerce_note

from .auth import KEY_SCOPE, Authenticator, RouteGuard
from .batching import Batcher, DirectRunner, Runner
from .docs_ui import add_docs
from .errors import (
    BadRequestError,
    DatabaseUnavailableError,
    HTTPError,
    InvalidModelOutputError,
    NotFoundError,
    UnavailableError,
    UnprocessableError,
)
from .keys import KeyInfo, KeyStore
from .lifecycle import Gate, Lifecycle
from .limits import BodyGuard, Receive, Scope, Send
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .openai_compat import CategoryMap
from .ratelimit import RateLimiter
from .review import ReviewStore, add_review_routes
from .review.throttle import LoginThrottle
from .schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorBody,
    ImageInput,
    MatchRequest,
    MatchResponse,
    ModerationRequest,
    ModerationResponse,
    RankRequest,
    RankResponse,
    ReadyResponse,
)
from .settings import ServeSettings

__all__ = ["ServeState", "create_app"]

_log = logging.getLogger("redone_sdk.serve")
_notes_log = logging.getLogger("redone_sdk.serve.notes")

T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Body not JSON or not UTF-8"),
        (401, "Missing, invalid or revoked API key"),
        (413, "Body over the size limit"),
        (422, "Valid JSON, invalid request"),
        (429, "Rate limit or queue full (Retry-After)"),
        (503, "Shutting down, database unavailable or timed out (Retry-After)"),
    )
}


async def _caller(request: Request) -> KeyInfo | None:
    """The request's API key, checked by the app's `Authenticator` (a FastAPI dependency): the one `RouteGuard`
    checked already, else (the app called without its middleware) checked now."""
    if KEY_SCOPE in request.scope:
        return request.scope[KEY_SCOPE]  # type: ignore[no-any-return]
    state: ServeState = request.app.state.serve
    return await state.authenticate(request)


Caller = Annotated[KeyInfo | None, Depends(_caller)]


class _ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


@dataclass
class ServeState:
    """What the handlers share: the model, the policies by name, keys, limits, metrics and the runner."""

    settings: ServeSettings
    moderator: Moderator
    policies: dict[str, Policy]
    store: KeyStore
    matcher: NoteQueryMatcher
    authenticate: Authenticator
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    runner: Runner | None = None
    review: ReviewStore | None = None

    @property
    def model_name(self) -> str:
        bundle = self.moderator.bundle
        return f"{bundle.name}-{bundle.version}"


def create_app(
    moderator: Moderator,
    settings: ServeSettings,
    store: KeyStore,
    *,
    policies: Mapping[str, Policy] | None = None,
    matcher: NoteQueryMatcher | None = None,
) -> FastAPI:
    """The ASGI app (wrapped in its middleware) for a loaded model; `app.state.serve` holds its `ServeState`.

    `policies`: extra policies by name, selectable per request on `/v1/classify`; `default` is the moderator's.
    """
    for name, policy in (policies or {}).items():
        policy.check_categories(moderator.categories)
        if name == "default":
            raise ValueError("the policy name 'default' is the bundle's own policy")
    state = ServeState(
        settings=settings,
        moderator=moderator,
        policies={"default": moderator.policy, **(policies or {})},
        store=store,
        matcher=matcher or NoteQueryMatcher(moderator.bundle, options=moderator.options),
        authenticate=Authenticator(
            store,
            RateLimiter(rate=settings.rate_limit, burst=settings.rate_burst),
            enabled=settings.auth,
            rate=settings.rate_limit,
        ),
    )
    if settings.review:
        state.review = ReviewStore(
            store.database,
            categories=moderator.categories,
            claim_s=settings.review_claim_s,
            session_s=settings.review_session_s,
        )
    categories = CategoryMap(moderator.categories)
    # response ids: unique per process start and request, without a system call per request
    id_prefix = secrets.token_hex(8)
    ids = (f"{id_prefix}{n:08x}" for n in itertools.count())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.batching:
            runner: Runner = Batcher(
                moderator.classify_batch,
                max_batch=settings.max_batch,
                max_wait_ms=settings.max_wait_ms,
                max_queue=settings.max_queue,
                metrics=state.metrics,
                arriving=lambda: state.lifecycle.in_flight,
                max_passes=settings.max_passes or moderator.workers,
            )
        else:
            runner = DirectRunner(
                moderator.classify_batch,
                concurrency=os.cpu_count() or 1,
                max_queue=settings.max_queue,
                metrics=state.metrics,
            )
        await runner.start()
        state.runner = runner
        try:
            yield
        finally:
            state.runner = None
            await runner.stop()

    app = FastAPI(
        title="redone serve",
        version=__version__,
        description="Moderate notes and match them to queries with a RedOne-style model; OpenAI-compatible "
        "`/v1/moderations`. See docs/serve.md.",
        lifespan=lifespan,
        responses=_ERRORS,
        docs_url=None,  # add_docs: Swagger UI served from the package, not a CDN
        redoc_url=None,  # ReDoc's page loads its script from a CDN; /docs covers the same document
    )
    add_docs(app, title="redone serve")
    app.state.serve = state
    metrics = state.metrics

    async def send_error(error: HTTPError, scope: Scope, receive: Receive, send: Send) -> None:
        await _error_response(error, metrics)(scope, receive, send)

    @app.exception_handler(HTTPError)
    async def _http_error(_request: Request, exc: HTTPError) -> Response:
        return _error_response(exc, metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return _error_response(BadRequestError(f"the request body is not valid JSON: {reason}"), metrics)
        return _error_response(UnprocessableError(_validation_message(errors), param=_param(errors)), metrics)

    @app.exception_handler(InvalidInputError)
    async def _invalid_input(_request: Request, exc: InvalidInputError) -> Response:
        return _error_response(UnprocessableError(str(exc)), metrics)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(_request: Request, exc: StarletteHTTPException) -> Response:
        error = NotFoundError(str(exc.detail)) if exc.status_code == 404 else BadRequestError(str(exc.detail))
        error.status = exc.status_code  # type: ignore[misc]  # 405 and the like keep their status
        return _error_response(error, metrics)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        _log.error("internal error: %s", type(exc).__name__)
        return _error_response(HTTPError("internal error; see the service's log"), metrics)

    @app.exception_handler(ModelOutputError)
    async def _model_output(_request: Request, exc: ModelOutputError) -> Response:
        # no note id or text in the log (only --log-notes logs notes); the answer names the input's position
        _log.error("classification failed closed: the model's output was not finite (task %s)", exc.task)
        where = "a note" if exc.index is None else f"input[{exc.index}]"
        message = (
            f"the model's output for {where} is not finite (NaN or infinity): no verdict is given rather than a "
            "wrong one; the model may be corrupted (a policy with on_invalid_output=review answers review instead)"
        )
        return _error_response(InvalidModelOutputError(message, param="input"), metrics)

    @app.exception_handler(RedOneError)
    async def _sdk_error(_request: Request, exc: RedOneError) -> Response:
        _log.error("classification failed: %s", type(exc).__name__)
        error = HTTPError(f"the model could not answer: {exc}")
        return _error_response(error, metrics)

    async def answer(request: Request, work: Awaitable[T]) -> T:
        """`work`'s result; 503 after `request_timeout_s`; cancelled when the client disconnects."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait(
                {task, watch}, timeout=settings.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watch.cancel()
        if task in done:
            return task.result()
        task.cancel()
        if watch in done:
            metrics.disconnects.inc()
            raise _ClientGoneError
        raise UnavailableError(f"no result within {settings.request_timeout_s:g} s; retry later", retry_after=1)

    async def moderate(request: Request, notes: Sequence[Note]) -> list[ModerationResult]:
        if state.runner is None:
            raise UnavailableError("the service is not started yet", retry_after=1)
        results = await answer(request, state.runner.submit(notes))
        for result in results:
            metrics.notes.labels(result.action).inc()
        if settings.log_notes:
            for note, result in zip(notes, results, strict=True):
                _notes_log.info("note %s: %s %s: %r", note.note_id, result.action, result.label, note.text)
        return results

    async def enqueue(notes: Sequence[Note], results: Sequence[ModerationResult], policy: str, source: str) -> None:
        """Queue the `review` verdicts for the console; a database failure is logged, never fails moderation."""
        if state.review is None or not any(result.action == "review" for result in results):
            return
        try:
            await run_in_threadpool(state.review.enqueue, notes, results, policy=policy, source=source)
        except DatabaseUnavailableError as exc:
            metrics.errors.labels("review_enqueue").inc()
            _log.error("could not queue review verdicts: %s", exc)

    @app.exception_handler(_ClientGoneError)
    async def _gone(_request: Request, _exc: _ClientGoneError) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    def check_count(count: int, what: str) -> None:
        if count == 0:
            raise UnprocessableError(f"{what} is an empty list: send at least one item", param=what)
        if count > settings.max_inputs:
            raise UnprocessableError(
                f"{what} holds {count} items; at most {settings.max_inputs} per request (--max-inputs)", param=what
            )

    @app.post("/v1/moderations", response_model=ModerationResponse, tags=["OpenAI-compatible"])
    async def moderations(body: ModerationRequest, request: Request, _key: Caller) -> ModerationResponse:
        """Classify text(s) like OpenAI's moderation endpoint (category names: see docs/serve.md)."""
        texts = _texts(body.input)
        check_count(len(texts), "input")
        notes = [_note(text, i) for i, text in enumerate(texts)]
        results = await moderate(request, notes)
        policy = state.policies["default"]
        await enqueue([_text_note(note) for note in notes], results, policy.name, "moderations")
        return _json(
            ModerationResponse(
                id=f"modr-{next(ids)}",
                model=state.model_name,
                results=[categories.convert(result, policy) for result in results],
            )
        )

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["native"])
    async def classify(body: ClassifyRequest, request: Request, _key: Caller) -> ClassifyResponse:
        """Classify notes into the bundle's categories and decide an action with a policy."""
        notes = body.input if isinstance(body.input, list) else [body.input]
        check_count(len(notes), "input")
        name = body.policy or "default"
        policy = state.policies.get(name)
        if policy is None:
            raise UnprocessableError(f"no policy {name!r}; the loaded ones: {sorted(state.policies)}", param="policy")
        results = await moderate(request, notes)
        if name != "default":
            results = [_decide(result, policy) for result in results]
        await enqueue(notes, results, policy.name, "classify")
        return _json(ClassifyResponse(model=state.model_name, policy=policy.name, results=results))

    @app.post("/v1/match", response_model=MatchResponse, tags=["native"])
    async def match(body: MatchRequest, request: Request, _key: Caller) -> MatchResponse:
        """Grade how relevant each note is to its query."""
        pairs = body.input if isinstance(body.input, list) else [body.input]
        check_count(len(pairs), "input")
        work = run_in_threadpool(state.matcher.score_pairs, [(p.query, p.note) for p in pairs])
        return _json(MatchResponse(model=state.model_name, results=await answer(request, work)))

    @app.post("/v1/rank", response_model=RankResponse, tags=["native"])
    async def rank(body: RankRequest, request: Request, _key: Caller) -> Response:
        """Notes sorted by relevance to the query, best first."""
        check_count(len(body.notes), "notes")
        work = run_in_threadpool(state.matcher.rank, body.query, body.notes, body.top_k)
        return _json(RankResponse(model=state.model_name, query=body.query, results=await answer(request, work)))

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyResponse, tags=["probes"], responses={503: {"model": ReadyResponse}})
    async def readyz() -> Response:
        """Ready for traffic: model loaded, runner started, not draining. `database` is informative only."""
        try:
            await run_in_threadpool(store.ping)
            database = True
        except DatabaseUnavailableError:
            database = False
        ready = state.runner is not None and not state.lifecycle.draining
        body = ReadyResponse(ready=ready, model=state.model_name, draining=state.lifecycle.draining, database=database)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    session = None
    if state.review is not None:
        throttle = LoginThrottle(
            max_per_user=settings.review_login_max_per_user,
            max_per_client=settings.review_login_max_per_client,
            window_s=settings.review_login_window_s,
        )
        session = add_review_routes(
            app,
            state.review,
            secret=settings.review_secret,
            secure_cookie=settings.review_cookie_secure,
            throttle=throttle,
        )

    # every route but the probes needs a caller (serve/auth.py); checked after the body guard (413/408 first)
    routes = RouteGuard(app, authenticate=state.authenticate, session=session, send_error=send_error)
    guarded = BodyGuard(
        routes, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s, send_error=send_error
    )
    outer = Gate(guarded, lifecycle=state.lifecycle, metrics=metrics, send_error=send_error)
    app.state.asgi = outer
    return app


def _json(body: BaseModel) -> Response:
    """The response as it stands: the model is already validated (the route's response_model documents it)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _error_response(error: HTTPError, metrics: ServeMetrics) -> JSONResponse:
    metrics.errors.labels(error.code).inc()
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, ImageInput):
            raise UnprocessableError(f"input[{i}] is an image; this service classifies text only", param="input")
        else:
            texts.append(item.text)
    return texts


def _note(text: str, index: int) -> Note:
    if not text.strip():
        raise UnprocessableError(f"input[{index}] is empty: a text needs a non-blank character", param="input")
    try:
        return coerce_note(text, index=index)
    except InvalidInputError as exc:
        raise UnprocessableError(f"input[{index}]: {exc}", param="input") from None


def _text_note(note: Note) -> Note:
    """A bare text's note for the review queue: its id is the text's digest (its position in a request is not
    an identity: two requests' input[0] are different notes)."""
    digest = hashlib.sha256(note.content.encode("utf-8")).hexdigest()[:32]
    return note.model_copy(update={"note_id": f"text:{digest}"})


def _decide(result: ModerationResult, policy: Policy) -> ModerationResult:
    label, action = policy.decide(result.scores)
    return result.model_copy(update={"label": label, "action": action, "flagged": action != "allow"})


def _validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for item in errors[:10]:
        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return "invalid request: " + "; ".join(parts) + more


def _param(errors: Sequence[Any]) -> str | None:
    loc = [str(p) for p in errors[0].get("loc", ()) if p != "body"] if errors else []
    return loc[0] if loc else None


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
