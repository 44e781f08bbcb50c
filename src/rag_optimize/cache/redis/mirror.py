"""The local copy of a Redis namespace's vectors that lookups search in-process.

Each process keeps one :class:`VectorTable` per scope and partition plus, per entry, its
scope, partition, expiry and own threshold. The mirror never holds responses or metadata: a
hit is always fetched from Redis, so a deleted or replaced entry is never answered from here.
Updates arrive from the change-log follower (other processes) and from this process's own
writes (at once).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rag_optimize.cache.entry import Candidate
from rag_optimize.cache.redis.codec import IndexRecord
from rag_optimize.cache.vector_table import IndexKind, VectorTable
from rag_optimize.embedding.vectors import FloatVector


@dataclass(frozen=True)
class _Info:
    scope: str
    expires_at: float | None
    threshold: float | None
    partition: str = ""


class LocalMirror:
    """Per-scope vector tables keyed by the entry's key-safe id; thread-safe."""

    def __init__(self, index: IndexKind = "exact") -> None:
        self.index: IndexKind = index
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], VectorTable] = {}
        self._info: dict[str, _Info] = {}
        # Changes made while a snapshot is being read from Redis, replayed onto it (see replace).
        self._journal: list[Callable[[LocalMirror], None]] | None = None

    def __len__(self) -> int:
        return len(self._info)

    def __contains__(self, hid: object) -> bool:
        return hid in self._info

    def add(self, hid: str, record: IndexRecord) -> None:
        """Insert or replace one entry."""
        self._change(lambda m: m._add(hid, record))

    def remove(self, hids: list[str]) -> None:
        """Forget these entries (unknown ids are ignored)."""
        doomed = list(hids)
        self._change(lambda m: m._remove_many(doomed))

    def drop_scope(self, scope: str) -> None:
        """Forget every entry of ``scope``."""
        self._change(lambda m: m._drop_scope(scope))

    def clear(self) -> None:
        """Forget everything."""
        self._change(lambda m: m._clear())

    def begin_snapshot(self) -> None:
        """Start journaling changes: a snapshot is about to be read from Redis."""
        with self._lock:
            self._journal = []

    def abandon_snapshot(self) -> None:
        """The snapshot read failed: stop journaling."""
        with self._lock:
            self._journal = None

    def replace(self, records: dict[str, IndexRecord]) -> None:
        """Swap in a freshly loaded snapshot (built outside the lock, swapped under it);
        empties ``records`` (the decoded copies are freed as soon as they are in the tables).

        Changes made while the snapshot was read (this process's own puts and deletes, and
        the follower's) are replayed onto it, so a write the snapshot's scan missed is not
        forgotten until the change log delivers it again (meanwhile an exact lookup would
        answer a false miss without asking Redis).
        """
        fresh = LocalMirror(self.index)
        sizes: Counter[tuple[str, str]] = Counter()
        dims: dict[tuple[str, str], int] = {}
        for r in records.values():
            sizes[(r.scope, r.partition)] += 1
            dims.setdefault((r.scope, r.partition), int(r.vector.shape[0]))
        for slot, size in sizes.items():  # tables sized once: no doubling, no copies
            fresh._tables[slot] = VectorTable(dims[slot], self.index, capacity=size + size // 16)
        for hid, record in records.items():
            fresh._add(hid, record)
        records.clear()
        _release_freed_memory()
        with self._lock:
            for change in self._journal or []:
                change(fresh)
            self._journal = None
            self._tables, self._info = fresh._tables, fresh._info

    def _change(self, change: Callable[[LocalMirror], None]) -> None:
        with self._lock:
            change(self)
            if self._journal is not None:
                self._journal.append(change)

    def _remove_many(self, hids: list[str]) -> None:
        for hid in hids:
            self._remove(hid)

    def _drop_scope(self, scope: str) -> None:
        for slot in [slot for slot in self._tables if slot[0] == scope]:
            for hid in self._tables.pop(slot).ids():
                self._info.pop(hid, None)

    def _clear(self) -> None:
        self._tables = {}
        self._info = {}

    def search(
        self, scope: str, vector: FloatVector, k: int, now: float, partition: str = ""
    ) -> list[Candidate]:
        """Up to ``k`` unexpired entries of ``scope`` and ``partition`` nearest to ``vector``,
        best first."""
        with self._lock:
            table = self._tables.get((scope, partition))
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
        slot = (record.scope, record.partition)
        table = self._tables.get(slot)
        if table is None:
            table = self._tables[slot] = VectorTable(dim, self.index)
        elif table.dim != dim:  # the store checks dimensions first; never mix them here
            return
        table.add(hid, record.vector)
        self._info[hid] = _Info(record.scope, record.expires_at, record.threshold, record.partition)

    def _remove(self, hid: str) -> None:
        info = self._info.pop(hid, None)
        if info is None:
            return
        slot = (info.scope, info.partition)
        table = self._tables.get(slot)
        if table is not None:
            table.remove(hid)
            if not len(table):
                del self._tables[slot]


def _release_freed_memory() -> None:
    """Give the heap freed by a snapshot load back to the OS (glibc ``malloc_trim``): the
    load decodes every vector once more than it keeps, in many small blocks the allocator
    would otherwise hold on to. A no-op where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # pragma: no cover - no C library to load
        pass
