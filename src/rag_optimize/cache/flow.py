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
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Protocol, TypeVar

from rag_optimize.cache.decision.learning import OutcomeLearner
from rag_optimize.cache.decision.shadow import Observation
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.stats import StatsCounter
from rag_optimize.cache.store import Store, StoreReport
from rag_optimize.embedding.protocol import Embedder, aembed_documents, aembed_query
from rag_optimize.errors import StoreError

__all__ = [
    "Embed",
    "EmbedMany",
    "Faults",
    "Judge",
    "Op",
    "Plan",
    "Runtime",
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
    per kind of dependency, and the stores' reports."""

    def __init__(self, stats: StatsCounter) -> None:
        self.stats = stats
        self.store = IncidentLog(logger, "cache store")
        self.embedder = IncidentLog(logger, "embedding model")
        self.logs = {"store": self.store, "embedder": self.embedder}
        self._seen_failure = False  # until the first failure no success needs logging

    def failure(self, log: str, counter: str, exc: BaseException) -> None:
        """Count a failure of ``log``'s dependency and log it if it starts an incident."""
        self.stats.add(counter)
        self._seen_failure = True
        self.logs[log].failure(exc)

    def success(self, log: str) -> None:
        """Record a success of ``log``'s dependency (logs the end of an incident)."""
        if self._seen_failure:  # the hot path skips the rest until something ever failed
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
    """Call ``store.<method>(*args)`` (``a<method>`` when async). ``partition`` is passed for
    lookups that take one; ``reports`` passes the run's :class:`StoreReport`. A
    :class:`StoreError` returns ``default``."""

    __slots__ = ("method", "args", "default", "partition", "reports")
    absorbs = (StoreError,)
    counter = "store_errors"
    log = "store"

    def __init__(
        self,
        method: str,
        *args: Any,
        default: Any = None,
        partition: str | None = None,
        reports: bool = False,
    ) -> None:
        self.method = method
        self.args = args
        self.default = default
        self.partition = partition
        self.reports = reports

    def _invoke(self, fn: Any, report: StoreReport) -> Any:
        if not self.reports:
            return fn(*self.args)
        if self.partition is None:
            return fn(*self.args, report=report)
        return fn(*self.args, partition=self.partition, report=report)

    def call(self, runtime: Runtime, report: StoreReport) -> Any:
        """The blocking store method."""
        return self._invoke(getattr(runtime.store, self.method), report)

    async def acall(self, runtime: Runtime, report: StoreReport) -> Any:
        """The store's async twin."""
        return await self._invoke(getattr(runtime.store, "a" + self.method), report)


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
    report = StoreReport()
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
                faults.success(op.log)
    finally:
        faults.count(report)


async def arun(plan: Plan[T], runtime: Runtime, faults: Faults) -> T:
    """Run ``plan`` to its result, awaiting each operation (never blocks the loop on I/O)."""
    report = StoreReport()
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
                faults.success(op.log)
    finally:
        faults.count(report)
