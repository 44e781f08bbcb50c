"""The storage protocol behind :class:`~rag_optimize.cache.SemanticCache`.

Like httpx transports, a store only keeps and finds entries; the cache logic (keys,
thresholds, fail-open, stats) is written once in ``SemanticCache``. A store raises
:class:`~rag_optimize.errors.StoreError` when its backend fails; the cache turns that into a
miss or a dropped write. Every method has an ``a``-prefixed async twin that must not block
the event loop on I/O.

**The key a store sees.** An entry is addressed by three strings, each given separately:

* ``scope``: the user scope (tenant, user) exactly as the app named it. It is the unit of
  :meth:`Store.invalidate` and of data placement: a store may keep one scope's entries
  together (e.g. one Redis Cluster hash tag per scope), since no operation spans scopes
  except :meth:`Store.delete_where` with ``scope=None`` and :meth:`Store.clear`;
* ``partition``: the digest of the exact-match part of the call (model, system prompt,
  tools, other inputs; ``""`` for none), a sub-division *inside* a scope. Lookups
  (:meth:`Store.get_exact`, :meth:`Store.search`) only return entries of the same scope and
  partition; ``invalidate(scope)`` drops every partition of the scope;
* ``query_key``: the normalised query, the exact path's key inside a (scope, partition).

Entry ids are :func:`~rag_optimize.cache.keys.entry_id` of the three, so a store may answer
``get_exact`` with one lookup by id (and must still check the three fields it finds).

**One-call lookups (optional).** A remote store may answer the exact check and the search in
one call: it then has a ``lookup_in_one_call(scope, query_key, partition)`` method (no I/O)
and a ``lookup(scope, query_key, vector, k, now, *, partition, report)`` (and ``alookup``)
returning ``(entry, [])`` for a live exact entry, else ``(None, candidates)``. For each query
it says True for, :class:`SemanticCache` embeds the query first and makes that one call
(``RedisStore`` on Redis 8 does: one round trip instead of two); otherwise it checks the exact
key before it runs the model.

**Reporting.** A store never holds the caller's counters. What a call caused (entries
evicted past capacity, entries found expired, corrupt records skipped) is added to the
:class:`StoreReport` the caller passes as ``report=``; what the store noticed on its own
(a background sweep, loading at start) it keeps until :meth:`Store.drain_report` hands it
over (to exactly one caller). So two caches on one store each count only what they caused.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.embedding.vectors import FloatVector

__all__ = ["ReportLog", "Store", "StoreDefaults", "StoreReport", "SyncStoreMixin"]


@dataclass(slots=True)
class StoreReport:
    """What happened inside a store during one or more calls (filled in by the store)."""

    evicted: int = 0
    expired: int = 0
    corrupt: int = 0

    def add(self, other: StoreReport) -> None:
        """Add ``other``'s counts to this report."""
        self.evicted += other.evicted
        self.expired += other.expired
        self.corrupt += other.corrupt


class ReportLog:
    """Thread-safe holder of the events a store noticed with no caller (for
    :meth:`Store.drain_report`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = StoreReport()

    def add(self, report: StoreReport) -> None:
        """Keep ``report``'s counts until the next :meth:`drain`."""
        with self._lock:
            self._pending.add(report)

    def drain(self) -> StoreReport:
        """The counts kept since the last call, handed over once."""
        with self._lock:
            out, self._pending = self._pending, StoreReport()
        return out


@runtime_checkable
class Store(Protocol):
    """Where cache entries live. ``now`` is the caller's clock reading (seconds).

    ``report`` (keyword, optional) receives what the call caused (see the module docs).
    """

    @property
    def dim(self) -> int | None:
        """The vector dimension of the stored entries, ``None`` while empty and unset."""
        ...

    def get_exact(
        self,
        scope: str,
        query_key: str,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> CacheEntry | None:
        """The live entry stored for exactly this normalised query in ``scope`` and
        ``partition``."""
        ...

    def search(
        self,
        scope: str,
        vector: FloatVector,
        k: int,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> list[Candidate]:
        """Up to ``k`` live entries of ``scope`` and ``partition`` most similar to
        ``vector``, best first."""
        ...

    def fetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """The full entry (marks it used for LRU), or ``None`` if gone or expired."""
        ...

    def put(self, entry: CacheEntry, now: float, *, report: StoreReport | None = None) -> None:
        """Insert or replace ``entry``; evicts past the store's capacity."""
        ...

    def put_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Insert or replace several entries, in order (later ones win on equal ids)."""
        ...

    def delete(self, entry_ids: list[str]) -> int:
        """Remove these entries; returns how many existed."""
        ...

    def invalidate(self, scope: str) -> int:
        """Remove every entry of ``scope`` (all its partitions); returns how many."""
        ...

    def delete_where(self, scope: str | None, metadata_key: str, values: list[str]) -> int:
        """Remove entries (of ``scope``, or of every scope if ``None``) whose
        ``metadata[metadata_key]`` (a str or a list of str) is or contains one of ``values``.
        Used for source-document and index-version invalidation; returns how many."""
        ...

    def clear(self) -> None:
        """Remove every entry the store holds."""
        ...

    def count(self) -> int:
        """Number of entries held."""
        ...

    def drain_report(self) -> StoreReport:
        """What the store noticed on its own (no caller) since the last call, handed over
        once: background expiry sweeps, corrupt records met while loading."""
        ...

    async def aget_exact(
        self,
        scope: str,
        query_key: str,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> CacheEntry | None:
        """Async twin of :meth:`get_exact`."""
        ...

    async def asearch(
        self,
        scope: str,
        vector: FloatVector,
        k: int,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> list[Candidate]:
        """Async twin of :meth:`search`."""
        ...

    async def afetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """Async twin of :meth:`fetch`."""
        ...

    async def aput(
        self, entry: CacheEntry, now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of :meth:`put`."""
        ...

    async def aput_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of :meth:`put_many`."""
        ...

    async def adelete(self, entry_ids: list[str]) -> int:
        """Async twin of :meth:`delete`."""
        ...

    async def ainvalidate(self, scope: str) -> int:
        """Async twin of :meth:`invalidate`."""
        ...

    async def adelete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> int:
        """Async twin of :meth:`delete_where`."""
        ...

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        ...


class StoreDefaults:
    """Defaults a store may inherit: bulk puts as a loop of puts, nothing to drain.

    A store with a faster bulk path (one round trip, one index rebuild) overrides
    ``put_many``/``aput_many``."""

    def put_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Insert or replace ``entries`` one by one."""
        for entry in entries:
            self.put(entry, now, report=report)  # type: ignore[attr-defined]

    async def aput_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of ``put_many``: one ``aput`` after the other."""
        for entry in entries:
            await self.aput(entry, now, report=report)  # type: ignore[attr-defined]

    def drain_report(self) -> StoreReport:
        """Nothing happens in this store without a caller: always an empty report."""
        return StoreReport()


class SyncStoreMixin(StoreDefaults):
    """Async twins for a store whose sync methods never do I/O (e.g. in-process)."""

    async def aget_exact(
        self,
        scope: str,
        query_key: str,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> CacheEntry | None:
        """Async twin of ``get_exact``; in-process, so it runs inline."""
        return self.get_exact(  # type: ignore[attr-defined]
            scope, query_key, now, partition=partition, report=report
        )

    async def asearch(
        self,
        scope: str,
        vector: FloatVector,
        k: int,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> list[Candidate]:
        """Async twin of ``search``."""
        return self.search(  # type: ignore[attr-defined]
            scope, vector, k, now, partition=partition, report=report
        )

    async def afetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """Async twin of ``fetch``."""
        return self.fetch(entry_id, now, report=report)  # type: ignore[attr-defined]

    async def aput(
        self, entry: CacheEntry, now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of ``put``."""
        self.put(entry, now, report=report)  # type: ignore[attr-defined]

    async def aput_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of ``put_many``."""
        self.put_many(entries, now, report=report)

    async def adelete(self, entry_ids: list[str]) -> int:
        """Async twin of ``delete``."""
        return self.delete(entry_ids)  # type: ignore[attr-defined]

    async def ainvalidate(self, scope: str) -> int:
        """Async twin of ``invalidate``."""
        return self.invalidate(scope)  # type: ignore[attr-defined]

    async def adelete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> int:
        """Async twin of ``delete_where``."""
        return self.delete_where(  # type: ignore[attr-defined]
            scope, metadata_key, values
        )

    async def aclear(self) -> None:
        """Async twin of ``clear``."""
        self.clear()  # type: ignore[attr-defined]
