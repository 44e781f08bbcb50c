"""SemanticCache: answer a query from a stored answer to a query of the same meaning.

A lookup first tries the exact path (the normalised query text as a hash key: no embedding),
then embeds the query and asks the store for the nearest entries of the same scope; the best
one whose cosine similarity reaches the decision threshold is a hit.

Choosing ``threshold``: it is the minimum cosine similarity for a hit. Higher means fewer
wrong answers and fewer hits; lower means more hits and more answers to questions that were
only similar. For all-MiniLM-L6-v2 the paraphrase/non-paraphrase distributions overlap
below about 0.9 (see BENCHMARKS.md, "Semantic cache quality"), so 0.9 is the default; use
``calibrate_threshold`` on pairs from your own traffic to pick it for your model and risk.

Failure policy: the cache never fails the user's request because of itself. An embedder that
raises or a store that is down turns the lookup into a miss and the write into a no-op, each
counted in :attr:`SemanticCache.stats` and logged once per incident. Input that is wrong
(empty query, wrong types, a model that returns NaN, zero or wrong-dimension vectors) raises
a clear ``ValueError``/``TypeError``: that is a bug to fix, not an outage to ride out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from rag_optimize.cache.entry import CacheEntry, CacheHit, Candidate
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.keys import check_query, check_scope, digest, normalise_query
from rag_optimize.cache.memory import InMemoryStore
from rag_optimize.cache.scopes import current_scope
from rag_optimize.cache.stats import CacheStats, StatsCounter
from rag_optimize.cache.store import Store
from rag_optimize.cache.vector_table import IndexKind
from rag_optimize.embedding.protocol import Embedder, aembed_query, check_embedder
from rag_optimize.embedding.vectors import FloatVector, unit_vector
from rag_optimize.errors import ConfigurationError, StoreError

logger = logging.getLogger("rag_optimize.cache")

T = TypeVar("T")

DEFAULT_THRESHOLD = 0.9
_PENDING_VECTORS = 1024


class SemanticCache:
    """A semantic cache over any embedder and any :class:`~rag_optimize.cache.store.Store`.

    Args:
        embedder: anything with ``embed_query``/``embed_documents`` (LangChain shape);
            ``aembed_query`` is used by the async methods when present.
        threshold: minimum cosine similarity for a hit, in (0, 1].
        ttl_seconds: default lifetime of an entry; ``None`` keeps entries until evicted.
        max_entries: capacity of the default in-process store (LRU eviction past it).
        store: where entries live; default :class:`InMemoryStore`. Use ``RedisStore`` to
            share one cache between processes.
        index: ``"exact"`` or ``"ann"`` (usearch HNSW) for the default store.
        candidates: how many nearest entries a lookup considers; more only matters when
            entries carry their own thresholds.
        clock: wall-clock seconds; injected in tests. Entries store absolute times, so all
            processes sharing a store must use the same clock (the default ``time.time``).
    """

    def __init__(
        self,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        ttl_seconds: float | None = None,
        max_entries: int | None = 10_000,
        *,
        store: Store | None = None,
        index: IndexKind = "exact",
        candidates: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.embedder = check_embedder(embedder)
        self.threshold = _check_threshold(threshold)
        if ttl_seconds is not None and not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise ConfigurationError(f"ttl_seconds must be > 0 or None, got {ttl_seconds}")
        if candidates < 1:
            raise ConfigurationError(f"candidates must be >= 1, got {candidates}")
        self.ttl_seconds = ttl_seconds
        self.candidates = candidates
        self.store: Store = store if store is not None else InMemoryStore(max_entries, index)
        self._clock = clock
        self._stats = StatsCounter()
        self.store.attach_stats(self._stats)
        self._embed_incidents = IncidentLog(logger, "embedding model")
        self._store_incidents = IncidentLog(logger, "cache store")
        self._pending: OrderedDict[str, FloatVector] = OrderedDict()
        self._pending_lock = threading.Lock()

    # ------------------------------------------------------------------ lookups
    def get(self, query: str, scope: str | None = None) -> CacheHit | None:
        """The cached answer for ``query`` in ``scope``, or ``None`` on a miss."""
        query, key, scope_key, now = self._begin(query, scope)
        entry = self._guard(lambda: self.store.get_exact(scope_key, key, now), None)
        if entry is not None:
            return self._hit(entry, 1.0, now, exact=True)
        vector = self._embed(query)
        if vector is None:
            self._miss()
            return None
        empty: list[Candidate] = []
        candidates = self._guard(
            partial(self.store.search, scope_key, vector, self.candidates, now), empty
        )
        for candidate, threshold in self._accepted(candidates):
            found = self._guard(partial(self.store.fetch, candidate.entry_id, now), None)
            if found is not None and found.scope == scope_key:
                return self._hit(found, candidate.similarity, now, threshold=threshold)
        self._miss(key, vector)
        return None

    async def aget(self, query: str, scope: str | None = None) -> CacheHit | None:
        """Async :meth:`get`: never blocks the event loop on the model or the store."""
        query, key, scope_key, now = self._begin(query, scope)
        entry = await self._aguard(lambda: self.store.aget_exact(scope_key, key, now), None)
        if entry is not None:
            return self._hit(entry, 1.0, now, exact=True)
        vector = await self._aembed(query)
        if vector is None:
            self._miss()
            return None
        empty: list[Candidate] = []
        candidates = await self._aguard(
            partial(self.store.asearch, scope_key, vector, self.candidates, now), empty
        )
        for candidate, threshold in self._accepted(candidates):
            found = await self._aguard(partial(self.store.afetch, candidate.entry_id, now), None)
            if found is not None and found.scope == scope_key:
                return self._hit(found, candidate.similarity, now, threshold=threshold)
        self._miss(key, vector)
        return None

    # ------------------------------------------------------------------- writes
    def set(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Store ``response`` for ``query`` in ``scope``; returns whether it was stored.

        ``response`` and ``metadata`` must be JSON-serialisable (so every store can hold
        them). A query just missed is not embedded again. A failing model or store drops
        the write (counted, logged) instead of raising.
        """
        query, key, scope_key, now = self._begin(query, scope)
        _check_json(response, metadata)
        vector = self._take_pending(key)
        if vector is None:
            vector = self._embed(query)
        if vector is None:
            self._stats.add("dropped_writes")
            return False
        entry = self._entry(query, key, scope_key, vector, response, metadata, ttl_seconds, now)
        def put() -> bool:
            self.store.put(entry, now)
            return True

        stored = self._guard(put, False)
        self._count_write(stored)
        return stored

    async def aset(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Async :meth:`set`."""
        query, key, scope_key, now = self._begin(query, scope)
        _check_json(response, metadata)
        vector = self._take_pending(key)
        if vector is None:
            vector = await self._aembed(query)
        if vector is None:
            self._stats.add("dropped_writes")
            return False
        entry = self._entry(query, key, scope_key, vector, response, metadata, ttl_seconds, now)

        async def put() -> bool:
            await self.store.aput(entry, now)
            return True

        stored = await self._aguard(put, False)
        self._count_write(stored)
        return stored

    def invalidate(self, scope: str | None = None) -> int:
        """Drop every entry of ``scope`` (``None``: the active ``cache_scope`` or the default
        scope); returns how many."""
        scope_key = self._scope(scope)
        return int(self._guard(lambda: self.store.invalidate(scope_key), 0))

    async def ainvalidate(self, scope: str | None = None) -> int:
        """Async :meth:`invalidate`."""
        scope_key = self._scope(scope)
        return int(await self._aguard(lambda: self.store.ainvalidate(scope_key), 0))

    def clear(self) -> None:
        """Drop every entry of every scope and reset the counters."""
        self._guard(lambda: self.store.clear(), None)
        with self._pending_lock:
            self._pending.clear()
        self._stats.reset()

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self._aguard(lambda: self.store.aclear(), None)
        with self._pending_lock:
            self._pending.clear()
        self._stats.reset()

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (hits, misses, exact_hits, evictions, ... hit_rate)."""
        return self._stats.snapshot(entries=int(self._guard(self.store.count, 0)))

    def __len__(self) -> int:
        return int(self._guard(self.store.count, 0))

    # ---------------------------------------------------------------- internals
    def _begin(self, query: str, scope: str | None) -> tuple[str, str, str, float]:
        query = check_query(query)
        return query, normalise_query(query), self._scope(scope), self._clock()

    def _scope(self, scope: str | None) -> str:
        """The explicit scope, else the one of the active ``cache_scope`` block."""
        return check_scope(scope if scope is not None else current_scope())

    def _accepted(self, candidates: list[Candidate]) -> list[tuple[Candidate, float]]:
        out = []
        for candidate in candidates:
            threshold = candidate.threshold if candidate.threshold is not None else self.threshold
            if candidate.similarity >= threshold:
                out.append((candidate, threshold))
        return out

    def _hit(
        self,
        entry: CacheEntry,
        similarity: float,
        now: float,
        *,
        exact: bool = False,
        threshold: float | None = None,
    ) -> CacheHit:
        self._stats.add("hits")
        if exact:
            self._stats.add("exact_hits")
        decision = {"similarity": similarity, "threshold": threshold, "exact": exact}
        return CacheHit(
            response=entry.response,
            similarity=similarity,
            matched_query=entry.query,
            age_seconds=max(0.0, now - entry.created_at),
            metadata={**entry.metadata, "cache_decision": decision},
            entry_id=entry.id,
            scope=entry.scope,
            exact=exact,
        )

    def _miss(self, key: str | None = None, vector: FloatVector | None = None) -> None:
        """Count a miss; keep the query's vector so a following ``set`` does not re-embed."""
        self._stats.add("misses")
        if key is not None and vector is not None:
            with self._pending_lock:
                self._pending[key] = vector
                self._pending.move_to_end(key)
                while len(self._pending) > _PENDING_VECTORS:
                    self._pending.popitem(last=False)

    def _take_pending(self, key: str) -> FloatVector | None:
        with self._pending_lock:
            return self._pending.pop(key, None)

    def _entry(
        self,
        query: str,
        key: str,
        scope: str,
        vector: FloatVector,
        response: Any,
        metadata: dict[str, Any] | None,
        ttl_seconds: float | None,
        now: float,
    ) -> CacheEntry:
        ttl = ttl_seconds if ttl_seconds is not None else self.ttl_seconds
        if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
            raise ConfigurationError(f"ttl_seconds must be > 0, got {ttl}")
        return CacheEntry(
            id=digest(scope, key),
            scope=scope,
            query=query,
            query_key=key,
            vector=vector,
            response=response,
            metadata=dict(metadata or {}),
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )

    def _count_write(self, stored: bool) -> None:
        self._stats.add("sets" if stored else "dropped_writes")

    def _dim(self) -> int | None:
        try:
            return self.store.dim
        except StoreError:
            return None

    def _embed(self, query: str) -> FloatVector | None:
        try:
            raw = self.embedder.embed_query(query)
        except Exception as exc:  # noqa: BLE001 - any model failure must fail open
            self._stats.add("embedder_errors")
            self._embed_incidents.failure(exc)
            return None
        self._embed_incidents.success()
        return unit_vector(raw, self._dim())

    async def _aembed(self, query: str) -> FloatVector | None:
        try:
            raw = await aembed_query(self.embedder, query)
        except Exception as exc:  # noqa: BLE001 - any model failure must fail open
            self._stats.add("embedder_errors")
            self._embed_incidents.failure(exc)
            return None
        self._embed_incidents.success()
        return unit_vector(raw, self._dim())

    def _guard(self, call: Callable[[], T], default: T) -> T:
        try:
            result = call()
        except StoreError as exc:
            self._stats.add("store_errors")
            self._store_incidents.failure(exc)
            return default
        self._store_incidents.success()
        return result

    async def _aguard(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        try:
            result = await call()
        except StoreError as exc:
            self._stats.add("store_errors")
            self._store_incidents.failure(exc)
            return default
        self._store_incidents.success()
        return result


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not (0.0 < threshold <= 1.0):
        raise ConfigurationError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


def _check_json(response: Any, metadata: dict[str, Any] | None) -> None:
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        json.dumps(response)
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"response and metadata must be JSON-serialisable (so any store can hold them): {exc}"
        ) from exc
