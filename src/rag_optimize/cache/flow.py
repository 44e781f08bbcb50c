"""The cache's flows written once, run by a sync and an async driver (the httpx pattern).

Every :class:`~rag_optimize.cache.SemanticCache` operation that touches the model or the store
(lookup, write, bulk write, feedback, invalidation, clear) is a *plan*: a generator that
yields operations and receives their results. :func:`run` performs each operation with a
blocking call, :func:`arun` with an ``await`` (the store's ``a``-methods, the model's
``aembed_*`` or a worker thread), so the sync and the async API cannot drift apart: the
decisions live in the plan, the drivers only do I/O.

The failure policy is applied here, the same in both drivers: an operation names the errors
it absorbs and the value that replaces its result then (a store's
:class:`~rag_optimize.errors.StoreError`: a miss, a dropped write; any model error: no
vector), each failure counted and logged once per incident by :class:`Faults`. Everything
else (wrong input, a vector of the wrong dimension) propagates to the caller.

What a store reports about a call (evictions, expirations, corrupt records: a
:class:`~rag_optimize.cache.store.StoreReport`) is collected per plan run and counted into
the cache's own counters when the plan ends.

The exact-repeat lookup is the hot path (a few microseconds), so the machinery is kept
cheap: the store operations are typed classes that call the store method directly (no
``getattr`` or keyword packing per call), a run borrows an empty report from
:class:`Faults` instead of allocating one, and success bookkeeping is skipped until a
failure was ever seen. (callgrind: about 58k instructions per exact repeat, against 60k
before the one-flow rewrite with its hand-written sync/async twins; see BENCHMARKS.md.)
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Protocol, TypeVar

from rag_optimize.cache.decision.learning import OutcomeLearner
from rag_optimize.cache.decision.shadow import Observation
from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.stats import StatsCounter
from rag_optimize.cache.store import Store, StoreReport
from rag_optimize.embedding.protocol import Embedder, aembed_documents, aembed_query
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import StoreError

__all__ = [
    "Embed",
    "EmbedMany",
    "Faults",
    "Fetch",
    "GetExact",
    "Judge",
    "Lookup",
    "Op",
    "Plan",
    "Put",
    "PutMany",
    "Runtime",
    "Search",
    "StoreCall",
    "arun",
    "run",
]

T = TypeVar("T")

logger = logging.getLogger("rag_optimize.cache")


class Runtime(Protocol):
    """What the drivers perform operations against (a ``SemanticCache``)."""

    store: Store
    embedder: Embedder

    @property
    def learner(self) -> OutcomeLearner:
        """The outcome learner, whose judge the :class:`Judge` operation calls."""
        ...


class Faults:
    """Counts and logs the failures the drivers absorb: one counter and one incident log
    per kind of dependency, and the stores' reports.

    It also lends each plan run its :class:`StoreReport`: a report that comes back empty
    (the usual case) is kept for the next run instead of allocating one per call."""

    def __init__(self, stats: StatsCounter) -> None:
        self.stats = stats
        self.store = IncidentLog(logger, "cache store")
        self.embedder = IncidentLog(logger, "embedding model")
        self.logs = {"store": self.store, "embedder": self.embedder}
        self.seen_failure = False  # until the first failure no success needs logging
        self._spare: list[StoreReport] = []

    def failure(self, log: str, counter: str, exc: BaseException) -> None:
        """Count a failure of ``log``'s dependency and log it if it starts an incident."""
        self.stats.add(counter)
        self.seen_failure = True
        self.logs[log].failure(exc)

    def success(self, log: str) -> None:
        """Record a success of ``log``'s dependency (logs the end of an incident)."""
        if self.seen_failure:  # the hot path skips the rest until something ever failed
            incidents = self.logs.get(log)
            if incidents is not None and incidents.failing:
                incidents.success()

    def count(self, report: StoreReport) -> None:
        """Add a store's report to the counters."""
        if report.evicted:
            self.stats.add("evictions", report.evicted)
        if report.expired:
            self.stats.add("expirations", report.expired)
        if report.corrupt:
            self.stats.add("corrupt_entries", report.corrupt)

    def take_report(self) -> StoreReport:
        """An empty report for one plan run (a spare one when there is one)."""
        try:
            return self._spare.pop()  # list.pop is atomic: safe across threads and tasks
        except IndexError:
            return StoreReport()

    def give_report(self, report: StoreReport) -> None:
        """Count what ``report`` holds and keep it, emptied, for a later run."""
        if report.evicted or report.expired or report.corrupt:
            self.count(report)
            report.evicted = report.expired = report.corrupt = 0
        self._spare.append(report)


class Op:
    """One operation of a plan: ``call`` does it blocking, ``acall`` awaits it. ``absorbs``
    are the errors that turn into ``default`` (counted in ``counter``, logged in the
    :class:`Faults` log named ``log``)."""

    __slots__ = ()
    absorbs: tuple[type[BaseException], ...] = ()
    counter = ""
    log = ""
    default: Any = None

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """Perform the operation with blocking calls."""
        raise NotImplementedError

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """Perform the operation without blocking the event loop."""
        raise NotImplementedError


class StoreCall(Op):
    """Call ``store.<method>(*args)`` (``a<method>`` when async), for the store calls that
    report nothing (delete, invalidate, clear). A :class:`StoreError` returns ``default``.
    The lookups and writes have their own operations below (:class:`GetExact`,
    :class:`Search`, :class:`Fetch`, :class:`Put`, :class:`PutMany`): they pass the run's
    :class:`StoreReport` and are called directly, which keeps the hot path cheap."""

    __slots__ = ("method", "args", "default")
    absorbs = (StoreError,)
    counter = "store_errors"
    log = "store"

    def __init__(self, method: str, *args: Any, default: Any = None) -> None:
        self.method = method
        self.args = args
        self.default = default

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking store method."""
        return getattr(runtime.store, self.method)(*self.args)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """The store's async twin."""
        return await getattr(runtime.store, "a" + self.method)(*self.args)


class _StoreOp(Op):
    """A store call that reports into the run's :class:`StoreReport`; a
    :class:`StoreError` returns ``default``."""

    __slots__ = ()
    absorbs = (StoreError,)
    counter = "store_errors"
    log = "store"


class GetExact(_StoreOp):
    """``store.get_exact``: the live entry for exactly this key, else ``None``."""

    __slots__ = ("scope", "query_key", "now", "partition")

    def __init__(self, scope: str, query_key: str, now: float, partition: str) -> None:
        self.scope = scope
        self.query_key = query_key
        self.now = now
        self.partition = partition

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``get_exact``."""
        return runtime.store.get_exact(
            self.scope, self.query_key, self.now, partition=self.partition, report=report
        )

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``aget_exact``."""
        return await runtime.store.aget_exact(
            self.scope, self.query_key, self.now, partition=self.partition, report=report
        )


class Search(_StoreOp):
    """``store.search``: the nearest candidates, ``[]`` when the store fails."""

    __slots__ = ("scope", "vector", "k", "now", "partition", "default")

    def __init__(
        self, scope: str, vector: FloatVector, k: int, now: float, partition: str
    ) -> None:
        self.scope = scope
        self.vector = vector
        self.k = k
        self.now = now
        self.partition = partition
        self.default: list[Candidate] = []

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``search``."""
        return runtime.store.search(
            self.scope, self.vector, self.k, self.now, partition=self.partition, report=report
        )

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``asearch``."""
        return await runtime.store.asearch(
            self.scope, self.vector, self.k, self.now, partition=self.partition, report=report
        )


class Lookup(_StoreOp):
    """``store.lookup``: the exact entry for the key, else the nearest candidates, in one
    store call (a store whose ``lookup_in_one_call`` says so: one round trip on a remote
    store); ``(None, [])`` when the store fails."""

    __slots__ = ("scope", "query_key", "vector", "k", "now", "partition", "default")

    def __init__(
        self, scope: str, query_key: str, vector: FloatVector, k: int, now: float,
        partition: str,
    ) -> None:
        self.scope = scope
        self.query_key = query_key
        self.vector = vector
        self.k = k
        self.now = now
        self.partition = partition
        self.default: tuple[None, list[Candidate]] = (None, [])

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``lookup``."""
        return runtime.store.lookup(  # type: ignore[attr-defined]
            self.scope, self.query_key, self.vector, self.k, self.now,
            partition=self.partition, report=report,
        )

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``alookup``."""
        return await runtime.store.alookup(  # type: ignore[attr-defined]
            self.scope, self.query_key, self.vector, self.k, self.now,
            partition=self.partition, report=report,
        )


class Fetch(_StoreOp):
    """``store.fetch``: the full entry (marked used), else ``None``."""

    __slots__ = ("entry_id", "now")

    def __init__(self, entry_id: str, now: float) -> None:
        self.entry_id = entry_id
        self.now = now

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``fetch``."""
        return runtime.store.fetch(self.entry_id, self.now, report=report)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``afetch``."""
        return await runtime.store.afetch(self.entry_id, self.now, report=report)


class Put(_StoreOp):
    """``store.put`` of one entry; returns ``default`` when the store fails."""

    __slots__ = ("entry", "now", "default")

    def __init__(self, entry: CacheEntry, now: float, *, default: Any = None) -> None:
        self.entry = entry
        self.now = now
        self.default = default

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``put``."""
        return runtime.store.put(self.entry, self.now, report=report)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``aput``."""
        return await runtime.store.aput(self.entry, self.now, report=report)


class PutMany(_StoreOp):
    """``store.put_many`` of a batch; returns ``default`` when the store fails."""

    __slots__ = ("entries", "now", "default")

    def __init__(self, entries: list[CacheEntry], now: float, *, default: Any = None) -> None:
        self.entries = entries
        self.now = now
        self.default = default

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking ``put_many``."""
        return runtime.store.put_many(self.entries, self.now, report=report)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """``aput_many``."""
        return await runtime.store.aput_many(self.entries, self.now, report=report)


class Embed(Op):
    """Embed one query (``embed_query``); a failing model returns ``None``."""

    __slots__ = ("text",)
    absorbs = (Exception,)
    counter = "embedder_errors"
    log = "embedder"

    def __init__(self, text: str) -> None:
        self.text = text

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The model's ``embed_query``."""
        return runtime.embedder.embed_query(self.text)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """The model's ``aembed_query``, else ``embed_query`` in a worker thread."""
        return await aembed_query(runtime.embedder, self.text)


class EmbedMany(Op):
    """Embed several texts in one ``embed_documents`` batch; a failing model returns
    ``None``."""

    __slots__ = ("texts",)
    absorbs = (Exception,)
    counter = "embedder_errors"
    log = "embedder"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The model's ``embed_documents``."""
        return runtime.embedder.embed_documents(self.texts)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """The model's ``aembed_documents``, else ``embed_documents`` in a worker thread."""
        return await aembed_documents(runtime.embedder, self.texts)


class Judge(Op):
    """Ask the learner's judge whether ``observation``'s stored answer matches ``fresh``;
    ``None`` when there is no verdict (the learner counts a failing judge itself)."""

    __slots__ = ("query", "observation", "fresh")

    def __init__(self, query: str, observation: Observation, fresh: Any) -> None:
        self.query = query
        self.observation = observation
        self.fresh = fresh

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The judge, called inline."""
        return runtime.learner.judged(self.query, self.observation, self.fresh)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """The judge's async form (or the judge in a worker thread)."""
        return await runtime.learner.ajudged(self.query, self.observation, self.fresh)


Plan = Generator[Op, Any, T]


def _failed(op: Op, faults: Faults, exc: BaseException) -> Any:
    faults.failure(op.log, op.counter, exc)
    return op.default


def run(plan: Plan[T], runtime: Runtime, faults: Faults) -> T:
    """Run ``plan`` to its result, performing each operation with a blocking call."""
    report = faults.take_report()
    send = plan.send
    reply: Any = None
    try:
        while True:
            try:
                op = send(reply)
            except StopIteration as done:
                return done.value
            try:
                reply = op.call(runtime, report)
            except op.absorbs as exc:
                reply = _failed(op, faults, exc)
            else:
                if faults.seen_failure:
                    faults.success(op.log)
    finally:
        faults.give_report(report)


async def arun(plan: Plan[T], runtime: Runtime, faults: Faults) -> T:
    """Run ``plan`` to its result, awaiting each operation (never blocks the loop on I/O)."""
    report = faults.take_report()
    send = plan.send
    reply: Any = None
    try:
        while True:
            try:
                op = send(reply)
            except StopIteration as done:
                return done.value
            try:
                reply = await op.acall(runtime, report)
            except op.absorbs as exc:
                reply = _failed(op, faults, exc)
            else:
                if faults.seen_failure:
                    faults.success(op.log)
    finally:
        faults.give_report(report)
