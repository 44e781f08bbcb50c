"""The local copy of a Redis namespace's vectors that lookups search in-process.

Each process keeps one :class:`VectorTable` per scope and partition plus, per entry, its
scope, partition, expiry and own threshold. The mirror never holds responses or metadata: a
hit is always fetched from Redis, so a deleted or replaced entry is never answered from here.
Updates arrive from the change-log follower (other processes) and from this process's own
writes (at once).

**Versions.** Every change in Redis gets the next number of the namespace's change counter
(``{ns}:seq``, the ``seq`` of its change-log event), and every change reaches the mirror with
that number: this process's writes carry the number their script returned, the follower's
the number of the event it applies. The mirror applies a change to an entry only if it is
newer than the last one applied to that entry (a removed entry keeps a *tombstone* with its
removal's number) and newer than the *floor*, the number up to which every change is known
to be reflected (the snapshot's head, then the follower's position). The two writers can
therefore arrive in any order and the mirror still ends as the newest change says:

* the follower, applying an event it read before this process deleted (or re-wrote) the
  entry, can neither bring a deleted entry back nor remove one this process just wrote;
* a snapshot swapped in while this process writes keeps those writes (they are journaled
  during the load and re-applied, newest wins);
* a lookup that found an entry gone removes it only if nothing changed it meanwhile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rag_optimize.cache.entry import Candidate
from rag_optimize.cache.redis.codec import IndexRecord
from rag_optimize.cache.redis.snapshot import Snapshot
from rag_optimize.cache.vector_table import IndexKind, VectorTable
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.index.engine import Storage


@dataclass(frozen=True, slots=True)
class _Info:
    scope: str
    expires_at: float | None
    threshold: float | None
    partition: str
    seq: int  # the change-counter number of the change that wrote this entry


Change = Callable[["LocalMirror"], None]
_SNAPSHOT_BATCH = 4096


class LocalMirror:
    """Per-scope vector tables keyed by the entry's key-safe id; thread-safe.

    Every change takes ``seq``, the number the change got in Redis (``None`` if Redis could
    not number it: the change log refused a write, see :mod:`scripts`); see the module
    docstring for why.
    """

    def __init__(self, index: IndexKind = "exact", storage: Storage = "float32") -> None:
        self.index: IndexKind = index
        self.storage: Storage = storage
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], VectorTable] = {}
        self._info: dict[str, _Info] = {}
        self._tombs: dict[str, int] = {}  # removed id -> number of its removal (> floor)
        self._floor = 0  # every change numbered up to this is reflected here
        # Changes made while a snapshot is being read from Redis, replayed onto it (see replace).
        self._journal: list[Change] | None = None

    def __len__(self) -> int:
        return len(self._info)

    def __contains__(self, hid: object) -> bool:
        return hid in self._info

    # ------------------------------------------------------------------ changes
    def add(self, hid: str, record: IndexRecord, seq: int | None) -> None:
        """Insert or replace one entry, unless a newer change to it was applied."""
        self._change(lambda m: m._put(hid, record, seq))

    def remove(self, hids: list[str], seq: int | None) -> None:
        """Forget these entries, unless a newer change to them was applied."""
        doomed = list(hids)
        self._change(lambda m: m._remove_many(doomed, seq))

    def drop_scope(self, scope: str, seq: int | None) -> None:
        """Forget the entries of ``scope`` written before change ``seq`` (all if ``None``)."""
        self._change(lambda m: m._drop_scope(scope, seq))

    def clear(self, seq: int | None) -> None:
        """Forget the entries written before change ``seq`` (everything if ``None``)."""
        self._change(lambda m: m._clear(seq))

    def version(self, hid: str) -> int:
        """The number of the last change applied to ``hid`` (or the floor): what
        :meth:`forget` compares against."""
        with self._lock:
            return self._current(hid)

    def forget(self, hid: str, seen: int) -> None:
        """Redis no longer holds ``hid`` (a lookup found it gone or corrupt): drop it, if
        nothing changed it since :meth:`version` returned ``seen``. Not journaled: a snapshot
        being read is newer than this news or the change log will deliver the removal."""
        with self._lock:
            if self._current(hid) == seen:
                self._drop(hid, seen)

    def advance(self, position: int) -> None:
        """The follower applied every change up to ``position``: raise the floor there (older
        news is stale) and drop the tombstones it covers."""
        with self._lock:
            self._raise_floor(position)

    # ---------------------------------------------------------------- snapshots
    def begin_snapshot(self) -> None:
        """Start journaling changes: a snapshot is about to be read from Redis."""
        with self._lock:
            self._journal = []

    def abandon_snapshot(self) -> None:
        """The snapshot read failed: stop journaling."""
        with self._lock:
            self._journal = None

    def replace(self, snapshot: Snapshot, head: int, *, counter_reset: bool = False) -> None:
        """Swap in a freshly loaded snapshot (built outside the lock, swapped under it);
        releases ``snapshot`` (its matrix is freed as soon as the tables hold their copy).

        ``head`` is the change counter read before the scan (every change up to it is in
        the snapshot, so it becomes the floor; a record read later may be newer, and the
        follower delivers those changes again from ``head``). Changes made while the
        snapshot was read are replayed onto it, newest winning per entry. After
        ``counter_reset`` (the counter went back: the server restarted empty or was
        flushed) their numbers belong to the old counter, so they are replayed unnumbered.
        """
        fresh = LocalMirror(self.index, self.storage)
        fresh._floor = head
        fresh._put_snapshot(snapshot, head)
        snapshot.release()
        _release_freed_memory()
        with self._lock:
            fresh._renumbered = counter_reset
            for change in self._journal or []:
                change(fresh)
            self._journal = None
            self._tables, self._info = fresh._tables, fresh._info
            self._tombs, self._floor = fresh._tombs, fresh._floor

    # ----------------------------------------------------------------- lookups
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

    # ----------------------------------------------------------------- internals
    _renumbered = False  # replaying a journal whose numbers came from a reset counter

    def _change(self, change: Change) -> None:
        with self._lock:
            change(self)
            if self._journal is not None:
                self._journal.append(change)

    def _current(self, hid: str) -> int:
        info = self._info.get(hid)
        seen = info.seq if info is not None else self._tombs.get(hid, 0)
        return max(seen, self._floor)

    def _accept(self, hid: str, seq: int | None) -> int | None:
        """The version a change numbered ``seq`` gives ``hid``, or ``None`` if it is stale."""
        current = self._current(hid)
        if seq is None or self._renumbered:
            return current  # unnumbered: applied, and any numbered news still overrides it
        return seq if seq > current else None

    def _put(self, hid: str, record: IndexRecord, seq: int | None) -> None:
        version = self._accept(hid, seq)
        if version is None:
            return
        dim = int(record.vector.shape[0])
        slot = (record.scope, record.partition)
        held = self._tables.get(slot)
        if held is not None and held.dim != dim:  # the store checks dimensions first
            return
        self._unlink(hid)  # may drop the slot's table if hid was its last entry
        self._tombs.pop(hid, None)
        table = self._tables.get(slot)
        if table is None:
            table = self._tables[slot] = self._table(dim)
        table.add(hid, record.vector)
        self._info[hid] = _Info(
            record.scope, record.expires_at, record.threshold, record.partition, version
        )

    def _put_snapshot(self, snapshot: Snapshot, version: int) -> None:
        """Fill the (empty) tables from a snapshot's columns: each (scope, partition) table
        sized once and filled in batches of rows (one engine update, and one int8 encoding,
        per batch instead of per entry)."""
        if not len(snapshot):
            return
        matrix, ids = snapshot.matrix, snapshot.ids
        slot_of_row = np.asarray(snapshot.slot_of_row, dtype=np.intp)
        order = np.argsort(slot_of_row, kind="stable")  # the rows of each slot together
        bounds = np.searchsorted(slot_of_row[order], np.arange(len(snapshot.slots) + 1))
        for number, slot in enumerate(snapshot.slots):
            rows = order[bounds[number] : bounds[number + 1]]
            if not len(rows):
                continue
            scope, partition = slot
            table = self._tables[slot] = self._table(matrix.shape[1], len(rows) + len(rows) // 64)
            contiguous = rows[-1] - rows[0] + 1 == len(rows)  # e.g. a single scope: views only
            for lo in range(0, len(rows), _SNAPSHOT_BATCH):
                batch = rows[lo : lo + _SNAPSHOT_BATCH]
                hids = [ids[r] for r in batch.tolist()]
                block = matrix[batch[0] : batch[-1] + 1] if contiguous else matrix[batch]
                table.add_many(hids, list(block))
            expires, thresholds = snapshot.expires, snapshot.thresholds
            for r in rows.tolist():
                self._info[ids[r]] = _Info(scope, expires[r], thresholds[r], partition, version)

    def _remove_many(self, hids: list[str], seq: int | None) -> None:
        for hid in hids:
            version = self._accept(hid, seq)
            if version is not None:
                self._drop(hid, version)

    def _drop(self, hid: str, version: int) -> None:
        self._unlink(hid)
        if version > self._floor:
            self._tombs[hid] = version

    def _drop_scope(self, scope: str, seq: int | None) -> None:
        for slot in [slot for slot in self._tables if slot[0] == scope]:
            for hid in self._tables[slot].ids():
                info = self._info[hid]
                if seq is None or self._renumbered or info.seq < seq:
                    self._drop(hid, info.seq if seq is None else max(seq, info.seq))

    def _clear(self, seq: int | None) -> None:
        if seq is None or self._renumbered:
            self._tables, self._info, self._tombs = {}, {}, {}
            return
        for hid in [hid for hid, info in self._info.items() if info.seq < seq]:
            self._unlink(hid)
        self._raise_floor(seq)

    def _raise_floor(self, position: int) -> None:
        if position <= self._floor:
            return
        self._floor = position
        if self._tombs:
            self._tombs = {h: s for h, s in self._tombs.items() if s > position}

    def _unlink(self, hid: str) -> None:
        info = self._info.pop(hid, None)
        if info is None:
            return
        slot = (info.scope, info.partition)
        table = self._tables.get(slot)
        if table is not None:
            table.remove(hid)
            if not len(table):
                del self._tables[slot]

    def _table(self, dim: int, capacity: int = 64) -> VectorTable:
        return VectorTable(dim, self.index, capacity=capacity, storage=self.storage)


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
