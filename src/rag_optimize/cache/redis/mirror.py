"""The local copy of a Redis namespace's vectors that lookups search in-process.

Each process keeps one vector engine per scope and partition plus, per entry, its
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
from rag_optimize.cache.vector_table import IndexKind, _is_unit
from rag_optimize.embedding.vectors import FloatVector, unit_vector
from rag_optimize.index.engine import Storage, VectorEngine


@dataclass(frozen=True, slots=True)
class _Info:
    """One entry's bookkeeping, as :meth:`LocalMirror.info` reports it (the mirror itself
    keeps these as per-row columns of its tables, not as one object per entry)."""

    scope: str
    expires_at: float | None
    threshold: float | None
    partition: str
    seq: int  # the change-counter number of the change that wrote this entry


Change = Callable[["LocalMirror"], None]
_SNAPSHOT_BATCH = 4096
_ROW_BITS = 32  # an entry's handle: (table number << 32) | row
_ROW_MASK = (1 << _ROW_BITS) - 1
_NONE = float("nan")  # "absent" in the expiry and threshold columns


class _Table:
    """The vectors of one (scope, partition) and, per row, the entry's id, expiry,
    threshold and version: numpy columns (24 bytes a row) instead of an object per entry.

    Rows are the engine's row numbers; a freed row is reused. Not locked: the mirror's lock
    guards every call.
    """

    __slots__ = ("dim", "engine", "expires", "free", "ids", "key", "number", "seqs",
                 "storage", "thresholds")

    def __init__(
        self, key: tuple[str, str], number: int, dim: int, index: IndexKind,
        storage: Storage, capacity: int,
    ) -> None:
        self.key, self.number, self.dim, self.storage = key, number, dim, storage
        self.engine = VectorEngine(dim, method="hnsw" if index == "ann" else index,
                                   storage=storage)
        self.engine.reserve(capacity)
        self.ids: list[str | None] = []  # by row (the same str objects as the mirror's keys)
        self.free: list[int] = []
        self.expires = np.full(capacity, _NONE)
        self.thresholds = np.full(capacity, _NONE)
        self.seqs = np.zeros(capacity, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.engine)

    def new_row(self, hid: str) -> int:
        if self.free:
            row = self.free.pop()
            self.ids[row] = hid
            return row
        row = len(self.ids)
        self.ids.append(hid)
        if row >= self.seqs.shape[0]:
            size = max(row + 1, self.seqs.shape[0] + max(self.seqs.shape[0] // 4, 64))
            self.expires = _grown(self.expires, size, _NONE)
            self.thresholds = _grown(self.thresholds, size, _NONE)
            self.seqs = _grown(self.seqs, size, 0)
        return row

    def set_row(self, row: int, record: IndexRecord, version: int) -> None:
        vector = record.vector
        if not _is_unit(vector, self.dim):  # the records are checked: this normalises
            vector = unit_vector(vector, self.dim)  # (or names a bad vector)
        self.engine.add(row, vector, normalized=True)
        self.expires[row] = _NONE if record.expires_at is None else record.expires_at
        self.thresholds[row] = _NONE if record.threshold is None else record.threshold
        self.seqs[row] = version

    def free_row(self, row: int) -> None:
        self.engine.remove(row)
        self.ids[row] = None
        self.free.append(row)

    def live(self) -> list[tuple[int, str]]:
        return [(row, hid) for row, hid in enumerate(self.ids) if hid is not None]

    # the VectorTable-like reads the tests and benchmarks use
    def vector(self, hid: str) -> FloatVector | None:
        for row, held in self.live():
            if held == hid:
                return self.engine.vector(row)
        return None

    def table_ids(self) -> list[str]:
        return [hid for _, hid in self.live()]


class LocalMirror:
    """Per-scope vector tables keyed by the entry's key-safe id; thread-safe.

    Memory: per entry the mirror holds its vector (float32, or int8 plus a scale), its
    binary code (48 bytes at dim 384, once a table is big enough for codes), one dict entry
    from its id string to a small int handle, and 24 bytes of numpy columns (measured in
    BENCHMARKS.md, issue 14: replica RSS 1.19x the raw vectors with float32, 0.48x with int8;
    it was 1.24x / 0.55x with an object and two dict entries per entry).

    Every change takes ``seq``, the number the change got in Redis (``None`` if Redis could
    not number it: the change log refused a write, see :mod:`scripts`); see the module
    docstring for why.
    """

    def __init__(self, index: IndexKind = "exact", storage: Storage = "float32") -> None:
        self.index: IndexKind = index
        self.storage: Storage = storage
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], _Table] = {}
        self._numbered: list[_Table | None] = []  # by table number (a handle's high bits)
        self._where: dict[str, int] = {}  # id -> handle: (table number << 32) | row
        self._tombs: dict[str, int] = {}  # removed id -> number of its removal (> floor)
        self._floor = 0  # every change numbered up to this is reflected here
        # Changes made while a snapshot is being read from Redis, replayed onto it (see replace).
        self._journal: list[Change] | None = None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, hid: object) -> bool:
        return hid in self._where

    def ids(self) -> list[str]:
        """The ids held, in no particular order."""
        with self._lock:
            return list(self._where)

    def scope_ids(self, scope: str) -> list[str]:
        """The ids held for ``scope`` (every partition)."""
        with self._lock:
            return [hid for slot, table in self._tables.items() if slot[0] == scope
                    for hid in table.table_ids()]

    def info(self, hid: str) -> _Info | None:
        """What the mirror holds about ``hid`` (``None`` if nothing)."""
        with self._lock:
            handle = self._where.get(hid)
            if handle is None:
                return None
            table, row = self._locate(handle)
            return _Info(table.key[0], _optional(table.expires[row]),
                         _optional(table.thresholds[row]), table.key[1],
                         int(table.seqs[row]))

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
            self._tables, self._numbered = fresh._tables, fresh._numbered
            self._where, self._tombs, self._floor = fresh._where, fresh._tombs, fresh._floor

    # ----------------------------------------------------------------- lookups
    def search(
        self, scope: str, vector: FloatVector, k: int, now: float, partition: str = ""
    ) -> list[Candidate]:
        """Up to ``k`` unexpired entries of ``scope`` and ``partition`` nearest to ``vector``,
        best first."""
        with self._lock:
            table = self._tables.get((scope, partition))
            if table is None or table.dim != vector.shape[0] or not len(table):
                return []
            unit = (
                type(vector) is np.ndarray
                and vector.dtype is _FLOAT32
                and abs(float(vector.dot(vector)) - 1.0) <= _QUERY_TOLERANCE
            )
            rows, scores = table.engine.search(vector, k + 4, normalized=unit)
            ids = table.ids
            out = []
            for row, sim, expires_at, threshold in zip(
                rows.tolist(), scores.tolist(), table.expires[rows].tolist(),
                table.thresholds[rows].tolist(), strict=True,
            ):
                hid = ids[row]
                if hid is None or expires_at <= now:  # (NaN: no expiry, never <= now)
                    continue
                out.append(Candidate(hid, sim, None if threshold != threshold else threshold))
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

    def _locate(self, handle: int) -> tuple[_Table, int]:
        table = self._numbered[handle >> _ROW_BITS]
        assert table is not None
        return table, handle & _ROW_MASK

    def _current(self, hid: str) -> int:
        handle = self._where.get(hid)
        if handle is not None:
            table, row = self._locate(handle)
            seen = int(table.seqs[row])
        else:
            seen = self._tombs.get(hid, 0)
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
        table = self._tables.get(slot)
        if table is not None and table.dim != dim:  # the store checks dimensions first
            return
        handle = self._where.get(hid)
        if handle is not None and table is not None and handle >> _ROW_BITS == table.number:
            table.set_row(handle & _ROW_MASK, record, version)  # rewritten in place
            return
        self._unlink(hid)  # (another scope's entry): may drop its table if it was the last
        self._tombs.pop(hid, None)
        if table is None:
            table = self._new_table(slot, dim, 64)
        row = table.new_row(hid)
        try:
            table.set_row(row, record, version)
        except Exception:
            table.free_row(row)
            raise
        self._where[hid] = (table.number << _ROW_BITS) | row

    def _new_table(self, slot: tuple[str, str], dim: int, capacity: int) -> _Table:
        try:
            number = self._numbered.index(None)
        except ValueError:
            number = len(self._numbered)
            self._numbered.append(None)
        table = _Table(slot, number, dim, self.index, self.storage, capacity)
        self._numbered[number] = self._tables[slot] = table
        return table

    def _put_snapshot(self, snapshot: Snapshot, version: int) -> None:
        """Fill the (empty) tables from a snapshot's columns: each (scope, partition) table
        sized once (exactly, plus 1/64 for the writes that follow; untouched, that slack costs
        no RSS) and filled in batches of rows straight from the snapshot's matrix (one engine
        update, and one int8 encoding, per batch; rows, ids and columns in the order read)."""
        if not len(snapshot):
            return
        matrix, ids = snapshot.matrix, snapshot.ids
        slot_of_row = np.asarray(snapshot.slot_of_row, dtype=np.intp)
        expires = np.array([_NONE if e is None else e for e in snapshot.expires])
        thresholds = np.array([_NONE if t is None else t for t in snapshot.thresholds])
        order = np.argsort(slot_of_row, kind="stable")  # the rows of each slot together
        bounds = np.searchsorted(slot_of_row[order], np.arange(len(snapshot.slots) + 1))
        for number, slot in enumerate(snapshot.slots):
            rows = order[bounds[number] : bounds[number + 1]]
            n = len(rows)
            if not n:
                continue
            table = self._new_table(slot, int(matrix.shape[1]), n + n // 64)
            contiguous = rows[-1] - rows[0] + 1 == n  # e.g. a single scope: views only
            for lo in range(0, n, _SNAPSHOT_BATCH):
                batch = rows[lo : lo + _SNAPSHOT_BATCH]
                block = matrix[batch[0] : batch[-1] + 1] if contiguous else matrix[batch]
                table.engine.add(np.arange(lo, lo + len(batch)), block, normalized=True)
            hids = [ids[r] for r in rows.tolist()]
            table.ids = list(hids)
            table.expires[:n], table.thresholds[:n] = expires[rows], thresholds[rows]
            table.seqs[:n] = version
            base = table.number << _ROW_BITS
            self._where.update(zip(hids, range(base, base + n), strict=True))

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
            table = self._tables[slot]
            for row, hid in table.live():
                held = int(table.seqs[row])
                if seq is None or self._renumbered or held < seq:
                    self._drop(hid, held if seq is None else max(seq, held))

    def _clear(self, seq: int | None) -> None:
        if seq is None or self._renumbered:
            self._tables, self._numbered, self._where, self._tombs = {}, [], {}, {}
            return
        for table in list(self._tables.values()):
            for row, hid in table.live():
                if int(table.seqs[row]) < seq:
                    self._unlink(hid)
        self._raise_floor(seq)

    def _raise_floor(self, position: int) -> None:
        if position <= self._floor:
            return
        self._floor = position
        if self._tombs:
            self._tombs = {h: s for h, s in self._tombs.items() if s > position}

    def _unlink(self, hid: str) -> None:
        handle = self._where.pop(hid, None)
        if handle is None:
            return
        table, row = self._locate(handle)
        table.free_row(row)
        if not len(table):
            del self._tables[table.key]
            self._numbered[table.number] = None


_FLOAT32 = np.dtype(np.float32)
_QUERY_TOLERANCE = 1e-5  # as VectorTable.search: a query within this is searched as given


def _optional(value: float) -> float | None:
    return None if value != value else float(value)  # NaN: absent


def _grown(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    out = np.full(size, fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


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
