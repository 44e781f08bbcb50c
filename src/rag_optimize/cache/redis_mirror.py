"""The local copy of a Redis namespace's vectors that lookups search in-process.

Each process keeps one :class:`VectorTable` per scope plus, per entry, its scope, expiry and
own threshold. The mirror never holds responses or metadata: a hit is always fetched from
Redis, so a deleted or replaced entry is never answered from here. Updates arrive from the
change-log follower (other processes) and from this process's own writes (at once).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rag_optimize.cache.entry import Candidate
from rag_optimize.cache.redis_codec import IndexRecord
from rag_optimize.cache.vector_table import IndexKind, VectorTable
from rag_optimize.embedding.vectors import FloatVector


@dataclass(frozen=True)
class _Info:
    scope: str
    expires_at: float | None
    threshold: float | None


class LocalMirror:
    """Per-scope vector tables keyed by the entry's key-safe id; thread-safe."""

    def __init__(self, index: IndexKind = "exact") -> None:
        self.index: IndexKind = index
        self._lock = threading.Lock()
        self._tables: dict[str, VectorTable] = {}
        self._info: dict[str, _Info] = {}

    def __len__(self) -> int:
        return len(self._info)

    def __contains__(self, hid: object) -> bool:
        return hid in self._info

    def add(self, hid: str, record: IndexRecord) -> None:
        """Insert or replace one entry."""
        with self._lock:
            self._add(hid, record)

    def remove(self, hids: list[str]) -> None:
        """Forget these entries (unknown ids are ignored)."""
        with self._lock:
            for hid in hids:
                self._remove(hid)

    def drop_scope(self, scope: str) -> None:
        """Forget every entry of ``scope``."""
        with self._lock:
            table = self._tables.pop(scope, None)
            for hid in table.ids() if table is not None else []:
                self._info.pop(hid, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._tables = {}
            self._info = {}

    def replace(self, records: dict[str, IndexRecord]) -> None:
        """Swap in a freshly loaded snapshot (built outside the lock, swapped under it)."""
        fresh = LocalMirror(self.index)
        for hid, record in records.items():
            fresh._add(hid, record)
        with self._lock:
            self._tables, self._info = fresh._tables, fresh._info

    def search(
        self, scope: str, vector: FloatVector, k: int, now: float
    ) -> list[Candidate]:
        """Up to ``k`` unexpired entries of ``scope`` nearest to ``vector``, best first."""
        with self._lock:
            table = self._tables.get(scope)
            if table is None or table.dim != vector.shape[0]:
                return []
            found = table.search(vector, k + 4)
            out = []
            for hid, sim in found:
                info = self._info[hid]
                if info.expires_at is not None and info.expires_at <= now:
                    continue
                out.append(Candidate(hid, sim, info.threshold))
                if len(out) == k:
                    break
            return out

    def _add(self, hid: str, record: IndexRecord) -> None:
        self._remove(hid)
        dim = int(record.vector.shape[0])
        table = self._tables.get(record.scope)
        if table is None:
            table = self._tables[record.scope] = VectorTable(dim, self.index)
        elif table.dim != dim:  # the store checks dimensions first; never mix them here
            return
        table.add(hid, record.vector)
        self._info[hid] = _Info(record.scope, record.expires_at, record.threshold)

    def _remove(self, hid: str) -> None:
        info = self._info.pop(hid, None)
        if info is None:
            return
        table = self._tables.get(info.scope)
        if table is not None:
            table.remove(hid)
            if not len(table):
                del self._tables[info.scope]
