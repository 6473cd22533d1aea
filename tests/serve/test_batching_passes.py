"""Dynamic batching with several passes in flight (`Batcher(max_passes=N)`): the next pass is gathered and started
while another runs, never more than N at once, and every guarantee of one pass at a time still holds (each
request its own slice in order, a full queue refused, stop finishes what was accepted, a non-finite output fails
only its request). The classify function is a stand-in that blocks until the test lets a pass finish, so the
tests watch what overlaps without timing anything."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from redone_sdk import ModelOutputError, ModerationResult, Note
from redone_sdk.schemas import ModelInfo
from redone_sdk.serve.batching import Batcher
from redone_sdk.serve.errors import QueueFullError, ShuttingDownError
from redone_sdk.serve.metrics import ServeMetrics

WAIT_S = 30.0  # how long a test waits for something that must happen (a hang fails; nothing is timed)
_MODEL = ModelInfo(name="stand-in", version="0")


class GatedClassify:
    """A classify function whose passes each block until `open_pass(i)` (or `open_all`); records what ran."""

    def __init__(self, bad: str | None = None) -> None:
        self.passes: list[list[str]] = []
        self.started: list[threading.Event] = [threading.Event() for _ in range(32)]
        self.gates: list[threading.Event] = [threading.Event() for _ in range(32)]
        self.running = 0
        self.peak = 0
        self.bad = bad
        self._lock = threading.Lock()

    def __call__(self, notes: list[Note]) -> list[ModerationResult]:
        with self._lock:
            index = len(self.passes)
            self.passes.append([n.note_id for n in notes])
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.started[index].set()
        try:
            assert self.gates[index].wait(WAIT_S), f"pass {index} was never let through"
            if self.bad is not None and len(notes) > 1 and any(n.note_id == self.bad for n in notes):
                position = [n.note_id for n in notes].index(self.bad)
                raise ModelOutputError("not finite", index=position, note_id=self.bad, task="moderation")
            if self.bad is not None and [n.note_id for n in notes] == [self.bad]:
                raise ModelOutputError("not finite", index=0, note_id=self.bad, task="moderation")
            return [_result(note) for note in notes]
        finally:
            with self._lock:
                self.running -= 1

    def open_pass(self, index: int) -> None:
        self.gates[index].set()

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()

    async def wait_started(self, index: int) -> bool:
        return await asyncio.to_thread(self.started[index].wait, WAIT_S)


def _result(note: Note) -> ModerationResult:
    return ModerationResult(
        note_id=note.note_id, flagged=False, label="safe", scores={}, action="allow", model=_MODEL, truncated=False
    )


def _notes(prefix: str, count: int) -> list[Note]:
    return [Note(note_id=f"{prefix}-{i}", content=f"note {prefix} {i}") for i in range(count)]


def _run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def _batcher(classify: GatedClassify, **kwargs: Any) -> Batcher:
    settings: dict[str, Any] = {"max_batch": 64, "max_wait_ms": 0.0, "max_queue": 1000, "metrics": ServeMetrics()}
    return Batcher(classify, **{**settings, **kwargs})


def test_the_next_pass_starts_while_one_runs() -> None:
    classify = GatedClassify()

    async def body() -> tuple[list[ModerationResult], list[ModerationResult], float]:
        metrics = ServeMetrics()
        batcher = _batcher(classify, max_passes=2, metrics=metrics)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(_notes("a", 3)))
            assert await classify.wait_started(0)
            second = asyncio.ensure_future(batcher.submit(_notes("b", 2)))
            # the first pass is still blocked in the model: the second must start beside it
            assert await classify.wait_started(1), "the second pass did not start while the first was running"
            in_flight = metrics.registry.get_sample_value("redone_serve_passes_in_flight")
            classify.open_all()
            return await first, await second, in_flight
        finally:
            classify.open_all()
            await batcher.stop()

    first, second, in_flight = _run(body)
    assert classify.passes == [["a-0", "a-1", "a-2"], ["b-0", "b-1"]]
    assert classify.peak == 2 and in_flight == 2
    assert [r.note_id for r in first] == ["a-0", "a-1", "a-2"]
    assert [r.note_id for r in second] == ["b-0", "b-1"]


def test_never_more_passes_than_max_passes() -> None:
    classify = GatedClassify()

    async def body() -> list[list[ModerationResult]]:
        batcher = _batcher(classify, max_passes=2, max_batch=2)
        await batcher.start()
        try:
            tasks = [asyncio.ensure_future(batcher.submit(_notes(f"r{i}", 2))) for i in range(5)]
            assert await classify.wait_started(0) and await classify.wait_started(1)
            for _ in range(50):  # let the loop run: a third pass, if it were allowed, would start now
                await asyncio.sleep(0)
            assert not classify.started[2].is_set(), "a third pass started with max_passes=2"
            classify.open_pass(0)
            assert await classify.wait_started(2)  # a slot freed: the next pass starts
            classify.open_all()
            return list(await asyncio.gather(*tasks))
        finally:
            classify.open_all()
            await batcher.stop()

    answers = _run(body)
    assert classify.peak == 2 and len(classify.passes) == 5
    for i, answer in enumerate(answers):
        assert [r.note_id for r in answer] == [f"r{i}-0", f"r{i}-1"]


def test_one_pass_at_a_time_when_max_passes_is_1() -> None:
    classify = GatedClassify()

    async def body() -> list[list[ModerationResult]]:
        batcher = _batcher(classify, max_passes=1)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(_notes("a", 1)))
            assert await classify.wait_started(0)
            rest = [asyncio.ensure_future(batcher.submit(_notes(f"q{i}", 1))) for i in range(3)]
            for _ in range(50):
                await asyncio.sleep(0)
            assert not classify.started[1].is_set(), "a second pass started with max_passes=1"
            classify.open_all()
            return [await first, *await asyncio.gather(*rest)]
        finally:
            classify.open_all()
            await batcher.stop()

    answers = _run(body)
    assert classify.peak == 1
    # what queued meanwhile was gathered into one pass once the first had finished
    assert classify.passes == [["a-0"], ["q0-0", "q1-0", "q2-0"]]
    assert [[r.note_id for r in a] for a in answers] == [["a-0"], ["q0-0"], ["q1-0"], ["q2-0"]]


def test_each_request_gets_its_own_slice_when_passes_finish_out_of_order() -> None:
    classify = GatedClassify()

    async def body() -> list[list[ModerationResult]]:
        batcher = _batcher(classify, max_passes=2, max_wait_ms=60_000.0, arriving=lambda: 5)
        await batcher.start()
        try:
            head = asyncio.ensure_future(batcher.submit(_notes("h", 1)))
            # gathering for the first pass waits (5 requests held by the HTTP layer) until it has them all
            others = [asyncio.ensure_future(batcher.submit(_notes(f"o{i}", i + 1))) for i in range(4)]
            assert await classify.wait_started(0)
            late = [asyncio.ensure_future(batcher.submit(_notes(f"l{i}", 2))) for i in range(2)]
            assert await classify.wait_started(1)
            classify.open_pass(1)  # the second pass finishes first
            done = await asyncio.gather(*late)
            assert not head.done()
            classify.open_pass(0)
            return [await head, *await asyncio.gather(*others), *done]
        finally:
            classify.open_all()
            await batcher.stop()

    answers = _run(body)
    assert classify.passes[0] == ["h-0", "o0-0", "o1-0", "o1-1", "o2-0", "o2-1", "o2-2", *[f"o3-{i}" for i in range(4)]]
    assert classify.passes[1] == ["l0-0", "l0-1", "l1-0", "l1-1"]
    expected = [["h-0"], *[[f"o{i}-{j}" for j in range(i + 1)] for i in range(4)], ["l0-0", "l0-1"], ["l1-0", "l1-1"]]
    assert [[r.note_id for r in a] for a in answers] == expected


def test_no_wait_for_requests_already_in_a_running_pass() -> None:
    # the HTTP layer holds two requests: one in the running pass and the one just queued. Nothing else is coming,
    # so the second pass starts at once rather than waiting out its (minute-long) gathering window.
    classify = GatedClassify()
    held = {"count": 0}

    async def body() -> None:
        batcher = _batcher(classify, max_passes=2, max_wait_ms=60_000.0, arriving=lambda: held["count"])
        await batcher.start()
        try:
            held["count"] = 1
            first = asyncio.ensure_future(batcher.submit(_notes("a", 1)))
            assert await classify.wait_started(0)
            held["count"] = 2
            second = asyncio.ensure_future(batcher.submit(_notes("b", 1)))
            assert await classify.wait_started(1), "the second pass waited for requests that were already in a pass"
            classify.open_all()
            await asyncio.gather(first, second)
        finally:
            classify.open_all()
            await batcher.stop()

    _run(body)
    assert classify.passes == [["a-0"], ["b-0"]]


def test_a_full_queue_is_refused_while_passes_run() -> None:
    classify = GatedClassify()

    async def body() -> QueueFullError:
        batcher = _batcher(classify, max_passes=2, max_batch=2, max_queue=4)
        await batcher.start()
        try:
            tasks = [asyncio.ensure_future(batcher.submit(_notes(f"r{i}", 2))) for i in range(2)]
            assert await classify.wait_started(0) and await classify.wait_started(1)
            with pytest.raises(QueueFullError) as refused:
                await batcher.submit(_notes("x", 1))
            classify.open_all()
            await asyncio.gather(*tasks)
            assert [r.note_id for r in await batcher.submit(_notes("y", 1))] == ["y-0"]  # room again
            return refused.value
        finally:
            classify.open_all()
            await batcher.stop()

    refused = _run(body)
    assert refused.status == 429 and refused.retry_after == 1 and "4 notes queued" in str(refused)


def test_stop_finishes_running_and_queued_passes() -> None:
    classify = GatedClassify()

    async def body() -> tuple[list[list[ModerationResult]], BaseException | None]:
        batcher = _batcher(classify, max_passes=2, max_batch=1)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(_notes(f"r{i}", 1))) for i in range(4)]
        assert await classify.wait_started(0) and await classify.wait_started(1)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0)
        late: BaseException | None = None
        try:
            await batcher.submit(_notes("late", 1))
        except ShuttingDownError as exc:
            late = exc
        classify.open_all()
        await stopping
        assert all(task.done() for task in tasks)  # stop returned only after every accepted request had its answer
        return [task.result() for task in tasks], late

    answers, late = _run(body)
    assert isinstance(late, ShuttingDownError)
    assert [[r.note_id for r in a] for a in answers] == [["r0-0"], ["r1-0"], ["r2-0"], ["r3-0"]]
    assert sorted(p[0] for p in classify.passes) == ["r0-0", "r1-0", "r2-0", "r3-0"]


def test_a_non_finite_output_fails_only_its_request_beside_another_pass() -> None:
    classify = GatedClassify(bad="bad")
    held = {"count": 1}

    async def body() -> list[Any]:
        batcher = _batcher(classify, max_passes=2, max_wait_ms=60_000.0, arriving=lambda: held["count"])
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(_notes("a", 2)))
            assert await classify.wait_started(0)
            held["count"] = 3  # the first request, in its pass, and the two below
            clean = asyncio.ensure_future(batcher.submit(_notes("c", 2)))
            bad = asyncio.ensure_future(batcher.submit([Note(note_id="bad", content="x")]))
            assert await classify.wait_started(1)
            classify.open_all()  # the first pass is still running when the second fails
            return list(await asyncio.gather(first, clean, bad, return_exceptions=True))
        finally:
            classify.open_all()
            await batcher.stop()

    first, clean, bad = _run(body)
    assert classify.passes[1] == ["c-0", "c-1", "bad"]  # gathered together; the pass failed, so each alone
    assert sorted(map(tuple, classify.passes[2:])) == [("bad",), ("c-0", "c-1")]
    assert [r.note_id for r in first] == ["a-0", "a-1"]
    assert [r.note_id for r in clean] == ["c-0", "c-1"]
    assert isinstance(bad, ModelOutputError) and bad.note_id == "bad"


def test_max_passes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_passes"):
        _batcher(GatedClassify(), max_passes=0)
