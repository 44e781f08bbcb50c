"""The storage protocol behind :class:`~rag_optimize.cache.SemanticCache`.

Like httpx transports, a store only keeps and finds entries; the cache logic (keys,
thresholds, fail-open, stats) is written once in ``SemanticCache``. A store raises
:class:`~rag_optimize.errors.StoreError` when its backend fails; the cache turns that into a
miss or a dropped write. Every method has an ``a``-prefixed async twin that must not block
the event loop on I/O.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.stats import StatsCounter
from rag_optimize.embedding.vectors import FloatVector


@runtime_checkable
class Store(Protocol):
    """Where cache entries live. ``now`` is the caller's clock reading (seconds)."""

    @property
    def dim(self) -> int | None:
        """The vector dimension of the stored entries, ``None`` while empty and unset."""
        ...

    def attach_stats(self, stats: StatsCounter) -> None:
        """Give the store the counters it reports evictions, expirations and faults into."""
        ...

    def get_exact(self, scope: str, query_key: str, now: float) -> CacheEntry | None:
        """The live entry stored for exactly this normalised query in ``scope``."""
        ...

    def search(self, scope: str, vector: FloatVector, k: int, now: float) -> list[Candidate]:
        """Up to ``k`` live entries of ``scope`` most similar to ``vector``, best first."""
        ...

    def fetch(self, entry_id: str, now: float) -> CacheEntry | None:
        """The full entry (marks it used for LRU), or ``None`` if gone or expired."""
        ...

    def put(self, entry: CacheEntry, now: float) -> None:
        """Insert or replace ``entry``; evicts past the store's capacity."""
        ...

    def delete(self, entry_ids: list[str]) -> int:
        """Remove these entries; returns how many existed."""
        ...

    def invalidate(self, scope: str) -> int:
        """Remove every entry of ``scope``; returns how many were removed."""
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

    async def aget_exact(self, scope: str, query_key: str, now: float) -> CacheEntry | None:
        """Async twin of :meth:`get_exact`."""
        ...

    async def asearch(
        self, scope: str, vector: FloatVector, k: int, now: float
    ) -> list[Candidate]:
        """Async twin of :meth:`search`."""
        ...

    async def afetch(self, entry_id: str, now: float) -> CacheEntry | None:
        """Async twin of :meth:`fetch`."""
        ...

    async def aput(self, entry: CacheEntry, now: float) -> None:
        """Async twin of :meth:`put`."""
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


class SyncStoreMixin:
    """Async twins for a store whose sync methods never do I/O (e.g. in-process)."""

    async def aget_exact(self, scope: str, query_key: str, now: float) -> CacheEntry | None:
        """Async twin of ``get_exact``; in-process, so it runs inline."""
        return self.get_exact(scope, query_key, now)  # type: ignore[attr-defined]

    async def asearch(
        self, scope: str, vector: FloatVector, k: int, now: float
    ) -> list[Candidate]:
        """Async twin of ``search``."""
        return self.search(scope, vector, k, now)  # type: ignore[attr-defined]

    async def afetch(self, entry_id: str, now: float) -> CacheEntry | None:
        """Async twin of ``fetch``."""
        return self.fetch(entry_id, now)  # type: ignore[attr-defined]

    async def aput(self, entry: CacheEntry, now: float) -> None:
        """Async twin of ``put``."""
        self.put(entry, now)  # type: ignore[attr-defined]

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
        return self.delete_where(scope, metadata_key, values)  # type: ignore[attr-defined]

    async def aclear(self) -> None:
        """Async twin of ``clear``."""
        self.clear()  # type: ignore[attr-defined]
