"""Dynamic batching: concurrent requests' notes gathered into shared `classify_batch` passes.

`Batcher` keeps one asyncio queue of requests. A worker takes the first waiting request, then keeps taking
more until the pass holds `max_batch` notes or `max_wait_ms` have passed since it started gathering, and runs
the pass on a thread (the event loop keeps accepting requests meanwhile). Up to `max_passes` passes run at once:
while one is in the model, the worker gathers the next and starts it, so its notes are tokenized and queued on
the model's workers before the running pass ends, and answering one pass's requests (HTTP, JSON) overlaps
another's forward passes instead of leaving the cores idle. It waits only while the HTTP layer holds other
requests than those gathered and those in running passes (`arriving`), so a lone client pays no wait. Each
request gets its own slice of its pass's results, in order; when a note's model output is not finite
(`ModelOutputError`), each request of the pass is rescored alone, so only the request holding that note gets the
error. Requests whose caller is gone before their pass starts are skipped. `DirectRunner` is the same interface
without gathering: one pass per request, on a thread pool (the baseline of the benchmark).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from redone_sdk.errors import ModelOutputError
from redone_sdk.schemas import ModerationResult, Note

from .errors import QueueFullError, ShuttingDownError
from .metrics import ServeMetrics

__all__ = ["Batcher", "Classify", "DirectRunner", "Runner"]

Classify = Callable[[list[Note]], list[ModerationResult]]


@dataclass
class _Request:
    notes: Sequence[Note]
    future: asyncio.Future[list[ModerationResult]] = field(repr=False)


class Runner:
    """What the app needs: `submit` notes, get their results; `start` and `stop` around serving."""

    def __init__(self, classify: Classify, *, max_queue: int, metrics: ServeMetrics) -> None:
        self._classify = classify
        self._max_queue = max_queue
        self._metrics = metrics
        self._pending = 0  # notes accepted and not yet answered
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    def _admit(self, count: int) -> None:
        if self._closed:
            raise ShuttingDownError("the service is shutting down", retry_after=1)
        if self._pending and self._pending + count > self._max_queue:
            raise QueueFullError(
                f"the service is busy ({self._pending} notes queued, at most {self._max_queue}); retry shortly",
                retry_after=1,
            )
        self._pending += count
        self._metrics.queue_notes.set(self._pending)

    def _release(self, count: int) -> None:
        self._pending -= count
        self._metrics.queue_notes.set(self._pending)

    def _run_pass(self, notes: list[Note]) -> list[ModerationResult]:
        started = time.perf_counter()
        results = self._classify(notes)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_notes.observe(len(notes))
        return results

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def submit(self, notes: Sequence[Note]) -> list[ModerationResult]:
        raise NotImplementedError


class Batcher(Runner):
    """Gathers requests into passes of at most `max_batch` notes, waiting at most `max_wait_ms` to fill one, with
    up to `max_passes` passes in flight at once (the next one gathered and started while others run)."""

    def __init__(
        self,
        classify: Classify,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: ServeMetrics,
        arriving: Callable[[], int] | None = None,
        max_passes: int = 1,
    ) -> None:
        super().__init__(classify, max_queue=max_queue, metrics=metrics)
        if max_passes < 1:
            raise ValueError("max_passes must be at least 1")
        self._arriving = arriving
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_passes = max_passes
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._slots: asyncio.Semaphore | None = None  # made in start(): it belongs to the serving event loop
        self._passes: set[asyncio.Task[None]] = set()
        self._in_passes = 0  # requests in the passes now running
        self._executor = ThreadPoolExecutor(max_workers=max_passes, thread_name_prefix="redone-serve-batch")
        self._worker: asyncio.Task[None] | None = None

    @property
    def max_passes(self) -> int:
        return self._max_passes

    async def start(self) -> None:
        self._closed = False
        self._slots = asyncio.Semaphore(self._max_passes)
        self._worker = asyncio.create_task(self._loop(), name="redone-serve-batcher")

    async def stop(self) -> None:
        """Stop taking requests; those already queued are still classified, and every running pass finishes."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def submit(self, notes: Sequence[Note]) -> list[ModerationResult]:
        self._admit(len(notes))
        request = _Request(notes, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._wakeup.set()
        try:
            return await request.future
        finally:
            self._release(len(notes))

    async def _gather(self) -> list[_Request]:
        """The next pass's requests: the first waiting one, then more until full or `max_wait_ms` is up."""
        loop = asyncio.get_running_loop()
        batch = [self._queue.popleft()]
        size = len(batch[0].notes)
        deadline = loop.time() + self._max_wait_s
        while size < self._max_batch:
            if self._queue:
                if size + len(self._queue[0].notes) > self._max_batch:
                    break
                request = self._queue.popleft()
                batch.append(request)
                size += len(request.notes)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed or not self._more_coming(len(batch)):
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run_alone(self, request: _Request) -> None:
        """One request's notes in a pass of their own, its result or error set on its future."""
        if request.future.done():
            return
        try:
            part = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_pass, list(request.notes))
        except Exception as exc:
            if not request.future.done():
                request.future.set_exception(exc)
        else:
            if not request.future.done():
                request.future.set_result(part)

    def _more_coming(self, gathered: int) -> bool:
        """Whether the HTTP layer holds requests besides those gathered and those in running passes: ones on their
        way in, or just answered (their clients tend to send the next one at once). Without any, waiting only adds
        latency (a lone client, or one whose other requests are already being classified)."""
        return self._arriving is None or self._arriving() > gathered + self._in_passes

    async def _loop(self) -> None:
        assert self._slots is not None
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._slots.acquire()  # at most `max_passes` passes run; the queue only grows meanwhile
                batch = await self._gather()
                live = [r for r in batch if not r.future.done()]  # done before its pass: the caller is gone
                skipped = sum(len(r.notes) for r in batch if r.future.done())
                if skipped:
                    self._metrics.skipped_notes.inc(skipped)
                if not live:
                    self._slots.release()
                    continue
                self._in_passes += len(live)
                self._metrics.passes_in_flight.inc()
                task = asyncio.create_task(self._pass(live), name="redone-serve-pass")
                self._passes.add(task)
                task.add_done_callback(self._passes.discard)
        finally:
            if self._passes:  # stopping: the passes already started still answer their requests
                await asyncio.gather(*self._passes, return_exceptions=True)

    async def _pass(self, live: list[_Request]) -> None:
        """Classify the gathered requests' notes in one pass and hand each request its own slice (or the error)."""
        assert self._slots is not None
        try:
            await self._classify_gathered(live)
        finally:
            self._in_passes -= len(live)
            self._metrics.passes_in_flight.dec()
            self._slots.release()

    async def _classify_gathered(self, live: list[_Request]) -> None:
        notes = [note for request in live for note in request.notes]
        self._metrics.batch_requests.observe(len(live))
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_pass, notes)
        except ModelOutputError as exc:
            # a note's output was not finite: only its request fails; the others' notes are rescored alone
            for request in live:
                if len(live) > 1:
                    await self._run_alone(request)
                elif not request.future.done():
                    request.future.set_exception(exc)
            return
        except Exception as exc:  # handed to every request of the pass, which answers it
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in live:
            part = results[start : start + len(request.notes)]
            start += len(request.notes)
            if not request.future.done():
                request.future.set_result(part)


class DirectRunner(Runner):
    """No gathering: each request is one pass of its own, up to `concurrency` passes at once on a thread pool."""

    def __init__(self, classify: Classify, *, concurrency: int, max_queue: int, metrics: ServeMetrics) -> None:
        super().__init__(classify, max_queue=max_queue, metrics=metrics)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="redone-serve-direct")

    async def start(self) -> None:
        self._closed = False

    async def stop(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)

    async def submit(self, notes: Sequence[Note]) -> list[ModerationResult]:
        self._admit(len(notes))
        try:
            self._metrics.batch_requests.observe(1)
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run_pass, list(notes))
        finally:
            self._release(len(notes))
