"""BatchingEmbedder: correctness under concurrency, batching rules, errors, cancellation,
backpressure and shutdown. A deterministic fake model records every batch it receives."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable

import pytest

from rag_optimize import BatchingEmbedder, EmbeddingError, QueueFull
from rag_optimize.embedding.batching import EmbedderClosedError
from rag_optimize.errors import ConfigurationError

WAIT = 10.0  # generous bound for anything that should happen "soon"


class FakeModel:
    """Deterministic model: a distinct 8-d vector per text. Records batches; can be held
    at a gate, slowed down, or made to fail on chosen texts."""

    def __init__(
        self,
        fail_on: tuple[str, ...] = (),
        delay: float = 0.0,
        gate: threading.Event | None = None,
        wrong_count: bool = False,
    ) -> None:
        self.fail_on = set(fail_on)
        self.delay = delay
        self.gate = gate
        self.wrong_count = wrong_count
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def vector(text: str) -> list[float]:
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return [b / 255.0 + 0.01 for b in digest]

    def seen(self) -> list[str]:
        with self._lock:
            return [t for batch in self.batches for t in batch]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.batches.append(list(texts))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.delay:
            time.sleep(self.delay)
        for text in texts:
            if text in self.fail_on:
                raise ValueError(f"cannot embed {text!r}")
        vectors = [self.vector(t) for t in texts]
        return vectors[:-1] if self.wrong_count else vectors

    def embed_query(self, text: str) -> list[float]:
        return self.vector(text)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition (synchronisation, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


# ---------------------------------------------------------------------- concurrency


async def test_thousand_mixed_callers_each_get_their_own_vector() -> None:
    model = FakeModel(delay=0.001)
    texts = [f"question number {i}" for i in range(1000)]
    results: dict[int, list[float]] = {}
    start = threading.Event()
    with BatchingEmbedder(model, max_batch_size=16, max_wait_ms=2, cache_size=0) as batcher:

        def thread_caller(i: int) -> None:
            start.wait(WAIT)
            results[i] = batcher.embed_query(texts[i])

        threads = [threading.Thread(target=thread_caller, args=(i,)) for i in range(0, 1000, 2)]
        for thread in threads:
            thread.start()

        async def task_caller(i: int) -> None:
            results[i] = await batcher.aembed_query(texts[i])

        start.set()
        await asyncio.gather(*(task_caller(i) for i in range(1, 1000, 2)))
        for thread in threads:
            thread.join(WAIT)
        stats = batcher.stats()

    assert len(results) == 1000
    for i, text in enumerate(texts):
        assert results[i] == model.embed_query(text), f"caller {i} got another's vector"
    sizes = [len(b) for b in model.batches]
    assert max(sizes) <= 16
    assert sorted(model.seen()) == sorted(texts)  # every text embedded exactly once
    assert stats.requests == 1000 and stats.batches == len(sizes)
    assert stats.mean_batch_size > 1.5  # concurrency actually produced batches


def test_callers_get_independent_copies_and_the_cache_stays_intact() -> None:
    model = FakeModel()
    with BatchingEmbedder(model) as batcher:
        first = batcher.embed_query("same text")
        first[0] = -99.0
        second = batcher.embed_query("same text")
    assert second == model.vector("same text")
    assert batcher.stats().cache_hits == 1
    assert model.seen() == ["same text"]


# ---------------------------------------------------------------------- batching rules


def test_batch_waits_for_the_injected_clock(clock: object) -> None:
    model = FakeModel()
    batcher = BatchingEmbedder(model, max_wait_ms=50, clock=clock)  # type: ignore[arg-type]
    thread, box = run_in_thread(lambda: batcher.embed_query("lonely"))
    wait_until(lambda: batcher.stats().requests == 1)
    thread.join(0.3)  # 6 real max_waits: the fake clock has not moved, so no batch yet
    assert thread.is_alive() and model.batches == []
    clock.advance(0.049)  # type: ignore[attr-defined]
    thread.join(0.2)
    assert thread.is_alive() and model.batches == []
    clock.advance(0.001)  # type: ignore[attr-defined]
    thread.join(WAIT)
    assert box["result"] == model.vector("lonely")
    stats = batcher.stats()
    assert stats.queue_wait_p50 == pytest.approx(0.05) and stats.batches == 1
    batcher.close()


def test_full_batch_leaves_without_waiting(clock: object) -> None:
    # The clock never moves, so only reaching max_batch_size can release these callers.
    model = FakeModel()
    batcher = BatchingEmbedder(model, max_batch_size=8, max_wait_ms=60_000, clock=clock)  # type: ignore[arg-type]
    started = [run_in_thread(lambda i=i: batcher.embed_query(f"t{i}")) for i in range(8)]
    for thread, _ in started:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert [len(b) for b in model.batches] == [8]
    assert {tuple(box["result"]) for _, box in started} == {  # type: ignore[arg-type]
        tuple(model.vector(f"t{i}")) for i in range(8)
    }
    batcher.close()


def test_lone_caller_is_answered_after_the_real_wait() -> None:
    # The real clock: a batch that can never fill still leaves once its 20 ms window is over
    # (a hang fails the join below); the window was honoured, not skipped.
    model = FakeModel()
    with BatchingEmbedder(model, max_wait_ms=20) as batcher:
        thread, box = run_in_thread(lambda: batcher.embed_query("alone"))
        thread.join(WAIT)  # synchronisation: only a caller never released gets here alive
        assert not thread.is_alive(), "a lone caller was never released"
        stats = batcher.stats()
    assert box["result"] == model.vector("alone")
    assert model.batches == [["alone"]]
    # it left when the window ended, not at once (the batcher's own rule, on its own clock;
    # less a float rounding)
    assert stats.queue_wait_p50 >= 0.020 - 1e-9


async def test_identical_texts_in_flight_share_one_slot_then_hit_the_cache() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    async with BatchingEmbedder(model, max_in_flight=1, max_wait_ms=0) as batcher:
        blocker = asyncio.create_task(batcher.aembed_query("first"))
        await asyncio.to_thread(model.entered.wait, WAIT)
        twins = [asyncio.create_task(batcher.aembed_query("twin")) for _ in range(5)]
        await asyncio.sleep(0)  # let the twins submit while "first" holds the model
        gate.set()
        results = await asyncio.gather(blocker, *twins)
        assert all(r == model.vector("twin") for r in results[1:])
        again = await batcher.aembed_query("twin")
        stats = batcher.stats()
    assert again == model.vector("twin")
    assert model.seen() == ["first", "twin"]
    assert stats.dedup_hits == 4 and stats.cache_hits == 1 and stats.requests == 7


def test_embed_documents_is_chunked_and_direct() -> None:
    model = FakeModel()
    texts = [f"doc {i}" for i in range(70)]
    with BatchingEmbedder(model, max_batch_size=32) as batcher:
        vectors = batcher.embed_documents(texts)
        assert batcher.embed_documents([]) == []
    assert [len(b) for b in model.batches] == [32, 32, 6]
    assert vectors == [model.vector(t) for t in texts]


async def test_aembed_documents_matches_the_model() -> None:
    model = FakeModel()
    async with BatchingEmbedder(model, max_batch_size=4) as batcher:
        vectors = await batcher.aembed_documents(["a", "b", "c", "d", "e"])
    assert vectors == [model.vector(t) for t in "abcde"]


# ---------------------------------------------------------------------- errors


def test_bad_input_fails_only_its_own_caller() -> None:
    model = FakeModel(fail_on=("poison",))
    texts = [f"fine {i}" for i in range(19)] + ["poison"]
    with BatchingEmbedder(model, max_batch_size=20, max_wait_ms=60_000) as batcher:
        started = {t: run_in_thread(lambda t=t: batcher.embed_query(t)) for t in texts}
        for thread, _ in started.values():
            thread.join(WAIT)
        stats = batcher.stats()
    for text, (_, box) in started.items():
        if text == "poison":
            error = box["error"]
            assert isinstance(error, EmbeddingError) and "poison" in str(error)
            assert isinstance(error.__cause__, ValueError)
        else:
            assert box["result"] == model.vector(text)
    assert len(model.batches[0]) == 20  # one full batch failed, then 20 single retries
    assert stats.failed_batches == 1 and stats.item_retries == 20


async def test_every_caller_gets_its_own_exception_object() -> None:
    gate = threading.Event()
    model = FakeModel(fail_on=("bad",), gate=gate)
    async with BatchingEmbedder(model, max_in_flight=1, max_wait_ms=0) as batcher:
        first = asyncio.create_task(batcher.aembed_query("hold"))
        await asyncio.to_thread(model.entered.wait, WAIT)
        bad = [asyncio.create_task(batcher.aembed_query("bad")) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(first, *bad, return_exceptions=True)
    errors = outcomes[1:]
    assert all(isinstance(e, EmbeddingError) for e in errors)
    assert len({id(e) for e in errors}) == 3


def test_wrong_number_of_vectors_is_an_embedding_error() -> None:
    with BatchingEmbedder(FakeModel(wrong_count=True)) as batcher:
        with pytest.raises(EmbeddingError, match="0 vectors for 1 texts"):
            batcher.embed_query("x")
        with pytest.raises(EmbeddingError, match="expected one vector per text"):
            batcher.embed_documents(["a", "b"])


def test_non_str_is_rejected_and_empty_string_passes_through() -> None:
    model = FakeModel()
    with BatchingEmbedder(model) as batcher:
        with pytest.raises(TypeError, match="must be a str, got int"):
            batcher.embed_query(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="got NoneType"):
            batcher.embed_documents(["ok", None])  # type: ignore[list-item]
        assert batcher.embed_query("") == model.vector("")
    assert model.seen() == [""]


@pytest.mark.parametrize(
    "options",
    [
        {"max_batch_size": 0},
        {"max_queue": 0},
        {"cache_size": -1},
        {"max_in_flight": 0},
        {"max_wait_ms": -1},
        {"max_wait_ms": float("nan")},
        {"max_batch_size": 2.5},
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, object]) -> None:
    name = next(iter(options))
    with pytest.raises(ConfigurationError, match=name):
        BatchingEmbedder(FakeModel(), **options)  # type: ignore[arg-type]


def test_object_without_the_embedder_methods_is_rejected() -> None:
    with pytest.raises(TypeError, match="lacks"):
        BatchingEmbedder(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- cancellation


async def test_cancelled_callers_do_not_break_the_batch() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    async with BatchingEmbedder(model, max_in_flight=1, max_wait_ms=0) as batcher:
        running = asyncio.create_task(batcher.aembed_query("in flight"))
        await asyncio.to_thread(model.entered.wait, WAIT)
        quitter_in_flight = asyncio.create_task(batcher.aembed_query("in flight"))
        shared_quitter = asyncio.create_task(batcher.aembed_query("shared"))
        shared_stayer = asyncio.create_task(batcher.aembed_query("shared"))
        lone_quitter = asyncio.create_task(batcher.aembed_query("nobody wants me"))
        await asyncio.sleep(0)
        for task in (quitter_in_flight, shared_quitter, lone_quitter):
            task.cancel()
        # asyncio passes a cancellation on to the batcher's future in a loop callback
        await asyncio.to_thread(wait_until, lambda: batcher.stats().cancelled == 3)
        gate.set()
        assert await running == model.vector("in flight")
        assert await shared_stayer == model.vector("shared")
        for task in (quitter_in_flight, shared_quitter, lone_quitter):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await batcher.aembed_query("in flight") == model.vector("in flight")
        stats = batcher.stats()
    assert "nobody wants me" not in model.seen()  # dropped while queued
    assert model.seen().count("shared") == 1
    assert stats.cancelled == 3 and stats.cache_hits == 1


async def test_wait_for_with_timeout_cancels_cleanly() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    async with BatchingEmbedder(model, max_in_flight=1, max_wait_ms=0) as batcher:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.aembed_query("slow"), timeout=0.05)
        gate.set()
        assert await batcher.aembed_query("after") == model.vector("after")


# ---------------------------------------------------------------------- backpressure


Started = tuple[threading.Thread, dict[str, object]]


def _saturate(batcher: BatchingEmbedder, model: FakeModel) -> list[Started]:
    """One text running (held at the gate) and max_queue=2 texts queued."""
    running = run_in_thread(lambda: batcher.embed_query("running"))
    assert model.entered.wait(WAIT)
    queued = [run_in_thread(lambda t=t: batcher.embed_query(t)) for t in ("q1", "q2")]
    wait_until(lambda: batcher.stats().requests == 3)
    return [running, *queued]


async def test_full_queue_blocks_threads_and_tasks_until_room() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(model, max_batch_size=1, max_in_flight=1, max_queue=2, max_wait_ms=0)
    early = await asyncio.to_thread(_saturate, batcher, model)
    blocked_thread, thread_box = run_in_thread(lambda: batcher.embed_query("thread waits"))
    blocked_task = asyncio.create_task(batcher.aembed_query("task waits"))
    await asyncio.to_thread(blocked_thread.join, 0.2)
    assert blocked_thread.is_alive() and not blocked_task.done()
    assert batcher.stats().requests == 3  # the two waiting callers were not admitted
    gate.set()
    assert await blocked_task == model.vector("task waits")
    await asyncio.to_thread(blocked_thread.join, WAIT)
    assert thread_box["result"] == model.vector("thread waits")
    for thread, box in early:
        thread.join(WAIT)
        assert "result" in box
    await batcher.aclose()


def test_full_queue_raises_queue_full_when_not_blocking() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(
        model, max_batch_size=1, max_in_flight=1, max_queue=2, max_wait_ms=0, block=False
    )
    early = _saturate(batcher, model)
    with pytest.raises(QueueFull, match="max_queue=2"):
        batcher.embed_query("one too many")
    duplicate = run_in_thread(lambda: batcher.embed_query("q1"))  # needs no room
    wait_until(lambda: batcher.stats().dedup_hits == 1)
    gate.set()
    for thread, box in [*early, duplicate]:
        thread.join(WAIT)
        assert "result" in box
    assert batcher.embed_query("now there is room") == model.vector("now there is room")
    batcher.close()


async def test_task_cancelled_while_waiting_for_room() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(model, max_batch_size=1, max_in_flight=1, max_queue=2, max_wait_ms=0)
    early = await asyncio.to_thread(_saturate, batcher, model)
    waiting = asyncio.create_task(batcher.aembed_query("gives up"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    for thread, _ in early:
        await asyncio.to_thread(thread.join, WAIT)
    await batcher.aclose()
    assert "gives up" not in model.seen()


# ---------------------------------------------------------------------- close


def test_close_sends_queued_work_at_once_and_waits_for_it(clock: object) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(model, max_wait_ms=60_000, clock=clock)  # type: ignore[arg-type]
    callers = [run_in_thread(lambda t=t: batcher.embed_query(t)) for t in ("a", "b", "c")]
    wait_until(lambda: batcher.stats().requests == 3)
    closer, _ = run_in_thread(batcher.close)
    assert model.entered.wait(WAIT)  # close() released the batch without the clock moving
    closer.join(0.1)
    assert closer.is_alive()  # still waiting for the batch held at the gate
    gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    for (thread, box), text in zip(callers, "abc", strict=True):
        thread.join(WAIT)
        assert box["result"] == model.vector(text)
    with pytest.raises(EmbedderClosedError):
        batcher.embed_query("late")
    with pytest.raises(EmbedderClosedError):
        batcher.embed_documents(["late"])
    batcher.close()  # idempotent


async def test_async_context_manager_closes() -> None:
    model = FakeModel()
    async with BatchingEmbedder(model) as batcher:
        assert await batcher.aembed_query("x") == model.vector("x")
    assert batcher.closed
    with pytest.raises(EmbedderClosedError):
        await batcher.aembed_query("y")


def test_unused_batcher_closes_without_threads() -> None:
    batcher = BatchingEmbedder(FakeModel())
    batcher.close()
    assert batcher.closed and "BatchingEmbedder(FakeModel" in repr(batcher)


def test_custom_query_batch_function_is_used() -> None:
    model = FakeModel()
    prefixed: list[list[str]] = []

    def embed_queries(texts: list[str]) -> list[list[float]]:
        prefixed.append(["query: " + t for t in texts])
        return model.embed_documents(["query: " + t for t in texts])

    with BatchingEmbedder(model, embed_batch=embed_queries) as batcher:
        assert batcher.embed_query("q") == model.vector("query: q")
        assert batcher.embed_documents(["d"]) == [model.vector("d")]
    assert prefixed == [["query: q"]]


def test_idle_batcher_nobody_closed_can_be_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import weakref

    from rag_optimize.embedding import batching

    monkeypatch.setattr(batching, "_IDLE_EXIT_S", 0.05)
    model = FakeModel()
    batcher = BatchingEmbedder(model, max_wait_ms=0)
    ref = weakref.ref(batcher)
    assert batcher.embed_query("a") == model.vector("a")
    wait_until(lambda: getattr(ref(), "_dispatcher", 0) is None)  # the idle dispatcher ended
    assert batcher.embed_query("b") == model.vector("b")  # and restarts on demand
    del batcher
    wait_until(lambda: gc.collect() >= 0 and ref() is None)


def test_texts_queued_behind_a_busy_model_get_one_refill_window(clock: object) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(model, max_wait_ms=50, clock=clock)  # type: ignore[arg-type]
    first = run_in_thread(lambda: batcher.embed_query("first"))
    wait_until(lambda: batcher.stats().requests == 1)
    clock.advance(0.05)  # type: ignore[attr-defined]
    assert model.entered.wait(WAIT)  # "first" runs, held at the gate
    queued = run_in_thread(lambda: batcher.embed_query("queued"))
    wait_until(lambda: batcher.stats().requests == 2)
    clock.advance(1.0)  # type: ignore[attr-defined]  # "queued" is long past max_wait
    gate.set()
    first[0].join(WAIT)
    queued[0].join(0.2)  # the worker is free now: one window for the released callers
    assert queued[0].is_alive() and model.seen() == ["first"]
    clock.advance(0.05)  # type: ignore[attr-defined]
    queued[0].join(WAIT)
    assert queued[1]["result"] == model.vector("queued")
    batcher.close()


def test_tracker_receives_embedding_time_per_caller_run() -> None:
    from rag_optimize.embedding import HashingEmbedder
    from rag_optimize.tracing import LatencyTracker

    tracker = LatencyTracker()

    async def main() -> list[str]:
        async def one(i: int) -> str:
            with tracker.run() as run_id:
                await batcher.aembed_query(f"text {i}")
            return run_id

        return list(await asyncio.gather(*(one(i) for i in range(5))))

    with BatchingEmbedder(HashingEmbedder(), max_wait_ms=1, tracker=tracker) as batcher:
        run_ids = asyncio.run(main())
        with tracker.run() as sync_run:
            batcher.embed_query("a sync caller")
    for run_id in [*run_ids, sync_run]:
        record = tracker.run_report(run_id)
        assert record is not None and record.counts.get("embedding") == 1
    assert tracker.report()["embedding"].count == 6
