"""The default store: everything in this process, nothing serialised.

LRU order is an ``OrderedDict`` (O(1) touch and evict); TTL expiry pops a heap of expiry
times (O(log n) per entry, never a scan); each scope has its own :class:`VectorTable`, so a
lookup only ever sees its own scope's vectors (one table per scope and partition). A table
picks its search method by size (exact scan while small, sign-bit codes with exact rescoring
above), and a vector search runs outside the store's lock, so lookups from several threads
overlap.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.store import StoreReport, SyncStoreMixin
from rag_optimize.cache.vector_table import IndexKind, VectorTable, check_index
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import ConfigurationError, InvalidVectorError
from rag_optimize.index.engine import STORAGES, Storage

__all__ = ["InMemoryStore"]

_Slot = tuple[str, str]  # (scope, partition): one vector table each


class InMemoryStore(SyncStoreMixin):
    """Thread-safe in-process store with LRU eviction past ``max_entries`` and TTL expiry.

    ``index="auto"`` (default) lets each scope's table choose its method by size; ``"exact"``,
    ``"binary"``, ``"int8"`` or ``"hnsw"`` (``"ann"``) force one. ``storage="int8"`` keeps the
    vectors as int8 (3.9x less memory, scores within about 1e-3).
    """

    def __init__(
        self,
        max_entries: int | None = 10_000,
        index: IndexKind = "auto",
        *,
        storage: Storage = "float32",
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ConfigurationError(f"max_entries must be >= 1 or None, got {max_entries}")
        if storage not in STORAGES:
            raise ConfigurationError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.max_entries = max_entries
        self.index: IndexKind = check_index(index)
        self.storage: Storage = storage
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._exact: dict[tuple[str, str, str], str] = {}
        self._tables: dict[_Slot, VectorTable] = {}
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._dim: int | None = None

    @property
    def dim(self) -> int | None:
        """Dimension of the stored vectors (fixed by the first entry)."""
        return self._dim

    def get_exact(
        self,
        scope: str,
        query_key: str,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> CacheEntry | None:
        """The live entry for exactly this normalised query, marked as used."""
        with self._lock:
            if self._expiry and self._expiry[0][0] <= now:  # skip the call when nothing is due
                self._expire(now, report)
            entry_id = self._exact.get((scope, partition, query_key))
            if entry_id is None:
                return None
            self._entries.move_to_end(entry_id)
            return self._entries[entry_id]

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
        """The ``k`` nearest live entries of ``scope`` and ``partition``."""
        with self._lock:
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(now, report)
            table = self._tables.get((scope, partition))
        if table is None:
            return []
        found = table.search(vector, k)  # outside the store lock: searches overlap
        with self._lock:
            # An entry removed meanwhile is skipped (never a stale answer); one replaced
            # meanwhile has the same id, i.e. the same question, and ``fetch`` returns the
            # new answer.
            return [
                Candidate(entry_id, sim, entry.threshold)
                for entry_id, sim in found
                if (entry := self._entries.get(entry_id)) is not None
            ]

    def fetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """The entry, marked as used, or ``None`` if it is gone or expired."""
        with self._lock:
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(now, report)
            entry = self._entries.get(entry_id)
            if entry is not None:
                self._entries.move_to_end(entry_id)
            return entry

    def put(self, entry: CacheEntry, now: float, *, report: StoreReport | None = None) -> None:
        """Insert or replace ``entry`` and evict least-recently-used entries past capacity."""
        with self._lock:  # put_many's steps for one entry, with the common cases inline
            dim = self._dim
            if dim is None or entry.vector.shape != (dim,):
                dim = self._check_dim([entry])
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(now, report)
            self._place(entry)
            slot = (entry.scope, entry.partition)
            table = self._tables.get(slot)
            if table is None:
                table = self._table(slot, dim)
            table.add(entry.id, entry.vector)
            if self.max_entries is not None and len(self._entries) > self.max_entries:
                self._evict(report)

    def put_many(
        self, entries: Sequence[CacheEntry], now: float, *, report: StoreReport | None = None
    ) -> None:
        """Insert or replace ``entries`` (in order: a later one wins) under one lock, with one
        vector-table update per scope and partition, then evict least-recently-used entries
        past capacity.

        Every vector is checked against the store's dimension before anything is written,
        so a bad batch changes nothing.
        """
        if not entries:
            return
        with self._lock:
            dim = self._check_dim(entries)
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(now, report)
            per_slot: dict[_Slot, list[CacheEntry]] = {}
            for entry in _last_per_key(entries):
                self._place(entry)
                per_slot.setdefault((entry.scope, entry.partition), []).append(entry)
            for slot, group in per_slot.items():
                self._table(slot, dim).add_many([e.id for e in group], [e.vector for e in group])
            self._evict(report)

    def _check_dim(self, entries: Sequence[CacheEntry]) -> int:
        """The store's dimension (fixed by the first entry ever put); raises
        :class:`InvalidVectorError` before anything is written if a vector differs."""
        dim = self._dim if self._dim is not None else int(entries[0].vector.shape[0])
        for entry in entries:
            if entry.vector.shape != (dim,):
                raise InvalidVectorError(
                    f"entry vector has dimension {entry.vector.shape[0]}, store holds {dim}"
                )
        self._dim = dim
        return dim

    def _place(self, entry: CacheEntry) -> None:
        """Index ``entry`` by id, exact key and expiry (its vector is added by the caller),
        dropping what it replaces: another id under its exact key, or its own id under
        another key."""
        exact_key = (entry.scope, entry.partition, entry.query_key)
        old_id = self._exact.get(exact_key)
        if old_id is not None and old_id != entry.id:
            self._remove(old_id)
        old = self._entries.get(entry.id)
        if old is not None and (old.scope, old.partition, old.query_key) != exact_key:
            self._remove(entry.id)
        self._entries.pop(entry.id, None)
        self._entries[entry.id] = entry
        self._exact[exact_key] = entry.id
        if entry.expires_at is not None:
            heapq.heappush(self._expiry, (entry.expires_at, next(self._seq), entry.id))

    def _table(self, slot: _Slot, dim: int) -> VectorTable:
        table = self._tables.get(slot)
        if table is None:
            table = self._tables[slot] = VectorTable(dim, self.index, storage=self.storage)
        return table

    def _evict(self, report: StoreReport | None) -> None:
        """Drop least-recently-used entries past ``max_entries``, reported as evicted."""
        while self.max_entries is not None and len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))
            if report is not None:
                report.evicted += 1

    def delete(self, entry_ids: list[str]) -> int:
        """Remove these entries; returns how many existed."""
        with self._lock:
            return sum(self._remove(entry_id) for entry_id in entry_ids)

    def invalidate(self, scope: str) -> int:
        """Remove every entry of ``scope``, in every partition."""
        with self._lock:
            slots = [slot for slot in self._tables if slot[0] == scope]
            ids = [entry_id for slot in slots for entry_id in self._tables[slot].ids()]
            for entry_id in ids:
                self._remove(entry_id)
            return len(ids)

    def delete_where(self, scope: str | None, metadata_key: str, values: list[str]) -> int:
        """Remove entries whose ``metadata[metadata_key]`` is or contains one of ``values``."""
        wanted = set(values)
        with self._lock:
            ids = [
                e.id
                for e in self._entries.values()
                if (scope is None or e.scope == scope)
                and _matches(e.metadata.get(metadata_key), wanted)
            ]
            for entry_id in ids:
                self._remove(entry_id)
            return len(ids)

    def clear(self) -> None:
        """Remove everything; the dimension is forgotten too."""
        with self._lock:
            self._entries.clear()
            self._exact.clear()
            self._tables.clear()
            self._expiry.clear()
            self._dim = None

    def count(self) -> int:
        """Number of entries held (expired ones are dropped lazily)."""
        return len(self._entries)

    def entries(self) -> list[CacheEntry]:
        """A snapshot of all entries, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def _remove(self, entry_id: str) -> bool:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return False
        key = (entry.scope, entry.partition, entry.query_key)
        if self._exact.get(key) == entry_id:
            del self._exact[key]
        slot = (entry.scope, entry.partition)
        table = self._tables.get(slot)
        if table is not None:
            table.remove(entry_id)
            if not len(table):
                del self._tables[slot]
        return True

    def _expire(self, now: float, report: StoreReport | None) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, _, entry_id = heapq.heappop(self._expiry)
            entry = self._entries.get(entry_id)
            if entry is not None and entry.expires_at == expires_at:
                self._remove(entry_id)
                if report is not None:
                    report.expired += 1


def _last_per_key(entries: Sequence[CacheEntry]) -> list[CacheEntry]:
    """The entries of a batch that survive it: the last one per id and per exact key."""
    last: dict[str, CacheEntry] = {}
    by_key: dict[tuple[str, str, str], str] = {}
    for entry in entries:
        exact_key = (entry.scope, entry.partition, entry.query_key)
        earlier = by_key.get(exact_key)
        if earlier is not None and earlier != entry.id:
            last.pop(earlier, None)
        last.pop(entry.id, None)
        last[entry.id] = entry
        by_key[exact_key] = entry.id
    return list(last.values())


def _matches(value: object, wanted: set[str]) -> bool:
    if isinstance(value, str):
        return value in wanted
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, str) and v in wanted for v in value)
    return False
