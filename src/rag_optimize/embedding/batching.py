"""Coalesce concurrent single-text embedding calls into batched model calls.

Under load an application embeds one query per request, and a model that could embed 32
texts in little more time than one is called 32 times. :class:`BatchingEmbedder` wraps any
embedding model (the :class:`~rag_optimize.embedding.Embedder` shape) and gathers concurrent
``embed_query`` calls (threads) and ``aembed_query`` calls (asyncio tasks) into one model
call per batch.

How it works, in one place so sync and async callers never drift:

* every caller submits its text under one lock and receives a
  :class:`concurrent.futures.Future` of its own; a thread waits on it, an asyncio task awaits
  it through :func:`asyncio.wrap_future` (which hands the result to the task's loop with
  ``call_soon_threadsafe``), so the event loop never blocks;
* one dispatcher thread cuts batches: a batch leaves when it holds ``max_batch_size`` texts
  or when its oldest text has waited ``max_wait_ms`` (measured with the injected ``clock``),
  so a lone caller is delayed at most ``max_wait_ms``; texts that queued while every worker
  was busy get one ``max_wait_ms`` window after a worker frees up, so the callers released by
  the finished batch can join them and batches stay full under sustained load;
* batches run off the caller's thread and off the event loop, in a pool of ``max_in_flight``
  worker threads; the next batch fills while one runs, so the model idles at most that
  short window between batches;
* identical texts waiting or in flight share one slot; a small LRU cache answers recent texts
  without the model;
* a failed batch is retried one text at a time, so a bad input fails only its own callers;
  every caller receives its own copy of the vector or its own exception object;
* a cancelled task leaves the batch intact (its text is dropped if nobody else wants it);
* a full queue makes callers wait (threads block, tasks await) or raises
  :class:`~rag_optimize.errors.QueueFull` when ``block=False``;
* :meth:`close` (or leaving the ``with`` block) sends what is queued at once and waits for
  every batch to finish.

Vectors are returned exactly as the model produced them (as fresh lists): the wrapper only
checks that the model returned one vector per text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import TypedDict, TypeVar

from rag_optimize.embedding.batch_stats import BatchCounters, BatchStats
from rag_optimize.embedding.lru import LRUCache
from rag_optimize.embedding.protocol import Embedder, check_embedder
from rag_optimize.errors import (
    ConfigurationError,
    EmbeddingError,
    InvalidTypeError,
    QueueFull,
    RagOptimizeError,
)
from rag_optimize.tracing import stages
from rag_optimize.tracing.tracker import LatencyTracker, optional_span
from rag_optimize.validation import check_int

__all__ = ["BatchingEmbedder", "BatchingOptions", "ClosesOnExit", "EmbedderClosedError"]

Vector = Sequence[float]
BatchFunction = Callable[[list[str]], Sequence[Vector]]
_Outcome = tuple["Vector | None", "BaseException | None"]  # (vector, error) of one text


_IDLE_EXIT_S = 2.0  # an idle dispatcher thread ends after this long


class EmbedderClosedError(RagOptimizeError, RuntimeError):
    """The batching embedder was closed; it accepts no new texts."""


class _Slot:
    """One distinct text waiting for, or riding in, a batch, and the callers that want it."""

    __slots__ = ("text", "arrived", "waiters")

    def __init__(self, text: str, arrived: float) -> None:
        self.text = text
        self.arrived = arrived
        self.waiters: list[Future[Vector]] = []


class _Ticket:
    """What a submission got: a cached vector, a future result, or a wait for queue space."""

    __slots__ = ("value", "result", "space")

    def __init__(
        self,
        value: Vector | None = None,
        result: Future[Vector] | None = None,
        space: Future[None] | None = None,
    ) -> None:
        self.value = value
        self.result = result
        self.space = space


def _own_copy(vector: Vector) -> list[float]:
    """A fresh list per caller, so no caller can mutate another's (or the cache's) vector."""
    tolist = getattr(vector, "tolist", None)
    return list(tolist()) if callable(tolist) else list(vector)


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidTypeError(f"text to embed must be a str, got {type(text).__name__}")
    return text


def _resolve(future: Future[Vector], vector: Vector | None, error: BaseException | None) -> None:
    """Complete one caller's future; a caller that cancelled meanwhile is skipped."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(vector)  # type: ignore[arg-type]
    except InvalidStateError:
        pass  # cancelled by its caller


_Closable = TypeVar("_Closable", bound="ClosesOnExit")


class ClosesOnExit:
    """``with`` and ``async with`` for an object with ``close()``: leaving the block closes it.

    Shared by :class:`BatchingEmbedder` and the framework adapters that own one.
    """

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Async twin of ``close()`` (waits in a worker thread, not on the event loop)."""
        await asyncio.to_thread(self.close)

    def __enter__(self: _Closable) -> _Closable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: _Closable) -> _Closable:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BatchingOptions(TypedDict, total=False):
    """The keyword options of :class:`BatchingEmbedder` (each described there), as one type:
    the adapters' wrappers (``BatchingEmbeddings``, ``BatchingEmbedding``) take exactly these
    and refuse any other with :class:`~rag_optimize.errors.UnknownOptionError`."""

    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    cache_size: int
    max_in_flight: int
    block: bool
    embed_batch: BatchFunction | None
    clock: Callable[[], float]
    tracker: LatencyTracker | None
    wait_when_idle: bool


class BatchingEmbedder(ClosesOnExit):
    """Wrap ``embedder`` so concurrent single-text calls share batched model calls.

    Args:
        embedder: any object with ``embed_query(str)`` and ``embed_documents(list[str])``
            (a LangChain ``Embeddings``; LlamaIndex models through ``llama_index_rag_optimize``).
        max_batch_size: most texts per model call.
        max_wait_ms: longest a text waits for its batch to fill once the model has a free
            worker; a lone caller is delayed at most this long.
        max_queue: most distinct texts waiting for a batch; beyond it callers wait for room
            (``block=True``) or get :class:`QueueFull`.
        cache_size: entries of the LRU cache of recent query vectors (0 disables it).
        max_in_flight: batches the model may run at the same time (worker threads). The
            default 1 suits a local CPU model: a second batch would only compete for the
            same cores and split the load into smaller batches (measured on all-MiniLM-L6-v2
            at 128 callers: mean batch 32 and 34 texts/s with 1, 28.7 texts/s with 2). Raise
            it for a remote API or a GPU server that serves concurrent requests, and for a
            runtime that overlaps concurrent calls but gains little from batches (the int8
            ONNX MiniLM on 2 cores: ``max_batch_size=4, max_in_flight=8``; see BENCHMARKS.md).
        block: what a caller does when the queue is full: wait (True) or raise ``QueueFull``.
        embed_batch: the function that embeds a batch of *queries*; defaults to the model's
            ``embed_documents``. Pass your own when the model embeds queries differently from
            documents (a query instruction or an ``input_type``), e.g.
            ``lambda texts: model.embed_documents(["query: " + t for t in texts])``.
        clock: seconds, monotonic; injected so waits can be tested without sleeping.
        wait_when_idle: with False, a text that finds nothing queued and the model idle is
            sent at once from the caller's thread (a lone caller never waits); texts that
            arrive while a batch runs still queue and batch. For apps whose queries mostly
            arrive one at a time; the default waits ``max_wait_ms`` for company.
        tracker: a :class:`~rag_optimize.tracing.LatencyTracker` that receives each query's
            ``embedding`` time (queue wait included) in the caller's current run.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        cache_size: int = 10_000,
        max_in_flight: int = 1,
        block: bool = True,
        embed_batch: BatchFunction | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracker: LatencyTracker | None = None,
        wait_when_idle: bool = True,
    ) -> None:
        check_embedder(embedder)
        self.tracker = tracker
        self.wait_when_idle = bool(wait_when_idle)
        for name, value, low in (
            ("max_batch_size", max_batch_size, 1),
            ("max_queue", max_queue, 1),
            ("cache_size", cache_size, 0),
            ("max_in_flight", max_in_flight, 1),
        ):
            check_int(name, value, low)
        if not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms < float("inf"):
            raise ConfigurationError(
                f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}"
            )
        self._embedder = embedder
        self._embed_batch: BatchFunction = embed_batch or embedder.embed_documents
        self.max_batch_size = max_batch_size
        self.max_wait_ms = float(max_wait_ms)
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self.block = block
        self._max_wait = self.max_wait_ms / 1000.0
        self._clock = clock

        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: OrderedDict[str, _Slot] = OrderedDict()  # waiting, oldest first
        self._in_flight: dict[str, _Slot] = {}
        self._batches_running = 0
        self._worker_free_since = float("-inf")  # when a batch last finished
        self._space_waiters: list[Future[None]] = []
        self._cache: LRUCache[str, Vector] = LRUCache(cache_size)
        self._counters = BatchCounters()
        self._closed = False
        self._dispatcher: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ public API

    @property
    def embedder(self) -> Embedder:
        """The wrapped model."""
        return self._embedder

    @property
    def closed(self) -> bool:
        return self._closed

    def embed_query(self, text: str) -> list[float]:
        """Embed one text, sharing a batched model call with concurrent callers."""
        with optional_span(self.tracker, stages.EMBEDDING):
            return self._embed_query(text)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of :meth:`embed_query`; never blocks the event loop."""
        with optional_span(self.tracker, stages.EMBEDDING):
            return await self._aembed_query(text)

    def _embed_query(self, text: str) -> list[float]:
        while True:
            ticket = self._submit(text)
            if ticket.space is not None:
                ticket.space.result()
                continue
            if ticket.result is not None:
                return _own_copy(ticket.result.result())
            assert ticket.value is not None
            return _own_copy(ticket.value)

    async def _aembed_query(self, text: str) -> list[float]:
        while True:
            ticket = self._submit(text)
            if ticket.space is not None:
                await asyncio.wrap_future(ticket.space)
                continue
            if ticket.result is not None:
                return _own_copy(await asyncio.wrap_future(ticket.result))
            assert ticket.value is not None
            return _own_copy(ticket.value)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a list directly with the model, in chunks of at most ``max_batch_size``.

        The list is already a batch, so it skips the queue and the query cache (documents
        and queries may be embedded differently). The model's own exceptions propagate.
        """
        for text in texts:
            _check_text(text)
        self._ensure_open()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.max_batch_size):
            chunk = list(texts[start : start + self.max_batch_size])
            got = self._call_model(self._embedder.embed_documents, chunk)
            vectors.extend(_own_copy(v) for v in got)
        return vectors

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of :meth:`embed_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    def stats(self) -> BatchStats:
        """Counters so far: batches, mean batch size, cache and dedup hits, queue waits."""
        with self._lock:
            return self._counters.snapshot()

    def cache_clear(self) -> None:
        """Forget every cached vector (for example after swapping the model)."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Stop accepting texts, send what is queued at once, and wait for every batch.

        Callers already waiting get their results; later calls raise
        :class:`EmbedderClosedError`. Calling it again does nothing.
        """
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
            space = self._take_space_waiters()
            dispatcher, workers = self._dispatcher, self._workers
        for waiter in space:
            _resolve_space(waiter)
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join()
        if workers is not None:
            workers.shutdown(wait=True)

    def __repr__(self) -> str:
        return (
            f"BatchingEmbedder({type(self._embedder).__name__}, max_batch_size="
            f"{self.max_batch_size}, max_wait_ms={self.max_wait_ms:g}, max_in_flight="
            f"{self.max_in_flight})"
        )

    # ------------------------------------------------------------------ submission

    def _ensure_open(self) -> None:
        if self._closed:
            raise EmbedderClosedError("BatchingEmbedder is closed; create a new one")

    def _submit(self, text: str) -> _Ticket:
        _check_text(text)
        with self._lock:
            self._ensure_open()
            cached = self._cache.get(text)
            if cached is not None:
                self._counters.requests += 1
                self._counters.cache_hits += 1
                return _Ticket(value=cached)
            slot = self._queue.get(text) or self._in_flight.get(text)
            if slot is not None:
                self._counters.dedup_hits += 1
            else:
                if len(self._queue) >= self.max_queue:
                    if not self.block:
                        raise QueueFull(
                            f"{len(self._queue)} texts are waiting (max_queue={self.max_queue})"
                        )
                    space: Future[None] = Future()
                    self._space_waiters.append(space)
                    return _Ticket(space=space)
                slot = _Slot(text, self._clock())
                self._queue[text] = slot
                self._start_threads()
                if not self.wait_when_idle and self._batches_running == 0 and len(
                    self._queue
                ) == 1:
                    # Nothing else queued and the model idle: send it now, from this thread
                    # (no wait, no dispatcher hop); later callers queue behind it and batch.
                    assert self._workers is not None
                    self._queue.popitem(last=False)
                    self._launch([slot])
                    self._workers.submit(self._run_batch, [slot])
                elif len(self._queue) == 1 or len(self._queue) >= self.max_batch_size:
                    self._wakeup.notify()
            self._counters.requests += 1
            future: Future[Vector] = Future()
            slot.waiters.append(future)
        future.add_done_callback(partial(self._on_caller_done, slot))
        return _Ticket(result=future)

    def _on_caller_done(self, slot: _Slot, future: Future[Vector]) -> None:
        """Forget a cancelled caller; drop its text if it was queued and nobody else wants it."""
        if not future.cancelled():
            return
        with self._lock:
            self._counters.cancelled += 1
            if future in slot.waiters:
                slot.waiters.remove(future)
            if slot.waiters or self._queue.get(slot.text) is not slot:
                return
            del self._queue[slot.text]
            space = self._take_space_waiters()
        for waiter in space:
            _resolve_space(waiter)

    def _take_space_waiters(self) -> list[Future[None]]:
        # Wake every waiter: each retries, and one that no longer needs room (its text got
        # cached meanwhile) must not leave others asleep next to free room.
        waiters, self._space_waiters = self._space_waiters, []
        return waiters

    def _start_threads(self) -> None:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(
                self.max_in_flight, thread_name_prefix="rag-optimize-embed"
            )
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="rag-optimize-batcher", daemon=True
            )
            self._dispatcher.start()

    # ------------------------------------------------------------------ dispatcher

    def _dispatch_loop(self) -> None:
        workers = self._workers
        assert workers is not None
        while True:
            with self._lock:
                batch = self._next_batch()
                if batch is None:
                    return
                self._launch(batch)
                space = self._take_space_waiters()
            for waiter in space:
                _resolve_space(waiter)
            workers.submit(self._run_batch, batch)

    def _launch(self, batch: list[_Slot]) -> None:
        """Count ``batch`` as in flight (lock held); the caller hands it to a worker."""
        now = self._clock()
        for slot in batch:
            self._in_flight[slot.text] = slot
            self._counters.queue_waits.add(max(0.0, now - slot.arrived))
        self._batches_running += 1
        self._counters.batches += 1
        self._counters.texts_embedded += len(batch)

    def _next_batch(self) -> list[_Slot] | None:
        """Wait (lock held) until a batch may leave; ``None`` once closed and drained."""
        while True:
            if self._queue and self._batches_running < self.max_in_flight:
                if self._closed or len(self._queue) >= self.max_batch_size:
                    break
                oldest = next(iter(self._queue.values())).arrived
                # Texts that queued behind a running batch get one max_wait window once a
                # worker is free, for the callers that batch released to join them: under
                # sustained load batches stay full instead of splitting into halves.
                start = max(oldest, self._worker_free_since)
                remaining = start + self._max_wait - self._clock()
                if remaining <= 0:
                    break
                # With an injected clock the deadline is re-checked at least every max_wait.
                self._wakeup.wait(min(remaining, self._max_wait))
            elif self._closed and not self._queue:
                return None
            elif self._queue or self._batches_running:
                self._wakeup.wait()  # for a batch to finish
            elif not self._wakeup.wait(_IDLE_EXIT_S) and not (
                self._queue or self._batches_running or self._closed
            ):
                # Idle: let the thread end, so a batcher nobody closed can be collected
                # (its worker threads end with it); the next text starts a new dispatcher.
                self._dispatcher = None
                return None
        size = min(len(self._queue), self.max_batch_size)
        return [self._queue.popitem(last=False)[1] for _ in range(size)]

    # ------------------------------------------------------------------ workers

    def _call_model(self, function: BatchFunction, texts: list[str]) -> Sequence[Vector]:
        vectors = function(texts)
        count = len(vectors) if hasattr(vectors, "__len__") else -1
        if count != len(texts):
            raise EmbeddingError(
                f"embedding model returned {count if count >= 0 else 'no list of'} vectors "
                f"for {len(texts)} texts; expected one vector per text"
            )
        return vectors

    def _embed_one_by_one(self, batch: list[_Slot]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for slot in batch:
            with self._lock:
                if not slot.waiters:  # every caller cancelled: spare the model
                    if self._in_flight.get(slot.text) is slot:
                        del self._in_flight[slot.text]  # so nobody joins a dropped slot
                    outcomes.append((None, None))
                    continue
                self._counters.item_retries += 1
            try:
                outcomes.append((self._call_model(self._embed_batch, [slot.text])[0], None))
            except Exception as exc:  # the item's own failure, handed to its callers
                outcomes.append((None, exc))
        return outcomes

    def _run_batch(self, batch: list[_Slot]) -> None:
        outcomes: list[_Outcome] = []
        try:
            try:
                vectors = self._call_model(self._embed_batch, [slot.text for slot in batch])
                outcomes = [(vectors[i], None) for i in range(len(batch))]
            except Exception as exc:
                with self._lock:
                    self._counters.failed_batches += 1
                if len(batch) == 1:
                    outcomes = [(None, exc)]
                else:
                    outcomes = self._embed_one_by_one(batch)
        finally:
            if len(outcomes) != len(batch):  # interrupted by a BaseException
                stop = EmbeddingError("embedding worker was interrupted")
                outcomes = [(None, stop)] * len(batch)
            self._finish(batch, outcomes)

    def _finish(self, batch: list[_Slot], outcomes: list[_Outcome]) -> None:
        deliveries: list[tuple[list[Future[Vector]], str, Vector | None, BaseException | None]]
        deliveries = []
        with self._lock:
            for slot, (vector, error) in zip(batch, outcomes, strict=True):
                if self._in_flight.get(slot.text) is slot:
                    del self._in_flight[slot.text]
                if vector is not None:
                    self._cache.put(slot.text, vector)
                deliveries.append((list(slot.waiters), slot.text, vector, error))
            self._batches_running -= 1
            self._worker_free_since = self._clock()
            self._wakeup.notify()
        for waiters, text, vector, error in deliveries:
            for future in waiters:
                _resolve(future, vector, _caller_error(text, error) if error else None)


def _caller_error(text: str, cause: BaseException) -> EmbeddingError:
    """A fresh exception per caller, chained to the model's own."""
    preview = text if len(text) <= 60 else text[:57] + "..."
    error = EmbeddingError(
        f"embedding model failed on text {preview!r}: {type(cause).__name__}: {cause}"
    )
    error.__cause__ = cause
    return error


def _resolve_space(waiter: Future[None]) -> None:
    try:
        waiter.set_result(None)
    except InvalidStateError:
        pass  # its task was cancelled while waiting for room
