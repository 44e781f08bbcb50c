"""Local 1-bit codes for the server-side path: candidates found in process, scored from Redis.

At 100k entries a ``VSIM`` search needs a high effort (EF 800) to find the near-duplicate of a
query 99% of the time on random vectors, and costs more than RedisVL's flat scan. This module
keeps, per scope and partition a process looks up, a compact local table of the scope's
entries: one sign bit per dimension (centred on the table's mean, as the in-process engine's
binary path does) and the entry id as 16 raw bytes, about 65 bytes an entry at dim 384 (6.5 MB
at 100k) and no Python object per entry, plus a bitmap of the ids it has held (1-2 bytes an
entry: a query whose exact id it never held skips the separate exact check, see
:meth:`RedisStore.lookup_in_one_call`). A lookup ranks the table by Hamming distance (top C),
then ONE script call reads those candidates' index fields (the store rescores them exactly from
the stored float32, as for ``VSIM``) and returns every entry written to the scope since the
table's sequence number, so the table is current as of that call (see
:mod:`~rag_optimize.cache.redis.vsets` for the script and its keys). When the table cannot be
used (not loaded yet, more than :data:`MAX_NEW` writes behind, the scope was dropped), the same
call runs the ``VSIM`` search instead: one round trip either way, never a stale answer.

Tables are (re)loaded by one daemon thread per store with its own client (pages of
:data:`PAGE` entries in write order, bounded memory); a failing load is logged once, retried
after a pause and never reaches a caller: lookups keep using ``VSIM`` meanwhile.

Correctness does not depend on the table: it only proposes candidates. Every answer is read
from Redis in the lookup that serves it; a candidate whose entry is gone is absent from the
reply and its row is marked dead; an overwritten entry appends a new row (its fetched float32
is current either way); a table with more than 25% dead rows is rebuilt.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.index.quantization import hamming_nearest_columns, sign_encode

__all__ = [
    "MAX_NEW", "MAX_TABLES", "PAGE", "PRUNE_SIGMAS",
    "Ask", "LocalCodes", "LocalTable", "prune_margin",
]

logger = logging.getLogger("rag_optimize.cache.redis")

#: Entries a lookup may bring into the table (with their vectors); more -> ``VSIM`` and a
#: background catch-up.
MAX_NEW = 32
#: Entries per page when a table loads or catches up (measured at 10k entries, dim 384: a
#: new replica's RSS grew 8.8 MB with pages of 1024, 3.7 MB with 256, for a 0.7 MB table:
#: the freed page buffers stay with the process).
PAGE = 256
_ID_BYTES = 16
_CENTER_ROWS = 256  # a centre estimated from fewer rows is re-estimated as the table grows
_DEAD_SHARE = 0.25
_RETRY_S = 1.0
_LOST_RETRY_S = 30.0
_MAX_PAGES = 100_000
#: Tables a store keeps (one per scope and partition looked up). Past it, the least recently
#: used one is dropped if idle for :data:`_IDLE_S`; otherwise the new scope stays on ``VSIM``.
MAX_TABLES = 256
_IDLE_S = 60.0
_MAX_RESTARTS = 5


class LocalTable:
    """The codes and ids of one scope and partition (append-only rows; a dead row is masked).

    Thread-safe through :attr:`lock`: rows are appended and marked dead under it; a search
    reads a snapshot (the arrays only grow by replacement, so rows below ``n`` never move)."""

    def __init__(self, dim: int, center: np.ndarray, capacity: int, gen: bytes) -> None:
        self.dim = dim
        self.width = -(-dim // 64) * 8
        self.center = center.astype(np.float32)
        self.center_rows = 0
        self.gen = gen
        self.last = 0
        self.n = 0
        self.dead = 0
        capacity = max(64, capacity)
        # by column: word j of every row in one contiguous array, so the Hamming scan reads
        # each word's column once instead of striding over the rows (0.44 vs 0.79 ms at 100k)
        self.columns = np.zeros((self.width // 8, capacity), dtype=np.uint64)
        self.ids = np.zeros((capacity, _ID_BYTES), dtype=np.uint8)
        self.alive = np.zeros(capacity, dtype=np.bool_)
        # which ids the table has held: two bits an id in a bitmap of 8-16 bits an entry (128
        # KB at 100k), so "not here" is answered without reading the ids (a scan of them
        # cost 0.55 ms at 100k, caches cold); dead rows stay set (a false "maybe")
        self.seen = np.zeros(_seen_bytes(capacity), dtype=np.uint8)
        self.lock = threading.Lock()
        self.used = time.monotonic()
        #: the farthest nearest-row distance of a lookup whose entry the cache then read
        #: (``None`` until one was): a lookup whose nearest row is much farther than any
        #: read so far does not ask for that row's whole entry (see :meth:`wants_whole`)
        self.reach: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays."""
        return int(self.columns.nbytes + self.ids.nbytes + self.alive.nbytes + self.seen.nbytes)

    def add(self, hids: list[str], blobs: list[bytes]) -> None:
        """Append rows (call with :attr:`lock` held); vectors of another width are skipped."""
        width = 4 * self.dim
        keep = [i for i, blob in enumerate(blobs) if len(blob) == width]
        if not keep:
            return
        matrix = np.frombuffer(b"".join(blobs[i] for i in keep), dtype="<f4").reshape(
            len(keep), self.dim
        )
        m = len(keep)
        if self.n + m > self.columns.shape[1]:
            self._grow(self.n + m)
        lo, hi = self.n, self.n + m
        self.columns[:, lo:hi] = sign_encode(matrix, self.center, self.width).view(np.uint64).T
        self.ids[lo:hi] = np.frombuffer(
            b"".join(bytes.fromhex(hids[i]) for i in keep), dtype=np.uint8
        ).reshape(m, _ID_BYTES)
        self.alive[lo:hi] = True
        self._mark_seen(self.seen, lo, hi)
        self.n = hi

    def _mark_seen(self, seen: np.ndarray, lo: int, hi: int) -> None:
        for bit in _seen_bits(self.ids[lo:hi].view("<u8")[:, 0], seen.shape[0]):
            np.bitwise_or.at(seen, bit >> 3, np.left_shift(1, bit & 7).astype(np.uint8))

    def may_hold(self, hid: str) -> bool:
        """False when no row of the table ever had entry id ``hid`` (32 hex digits); True
        when one may (one in a few dozen absent ids reads True). No lock: the bitmap only
        gains bits, or is replaced whole."""
        try:
            key = bytes.fromhex(hid)
        except ValueError:  # not an entry id: never held
            return False
        if len(key) != _ID_BYTES:
            return False
        seen = self.seen
        first, mask = int.from_bytes(key[:8], "little"), seen.shape[0] * 8 - 1
        return all(  # the two probes of _seen_bits, on Python ints (about 1 us)
            int(seen[bit >> 3]) >> (bit & 7) & 1 for bit in (first & mask, first >> 32 & mask)
        )

    def _grow(self, need: int) -> None:
        capacity = max(need, int(self.columns.shape[1] * 1.25) + 64)
        columns = np.zeros((self.columns.shape[0], capacity), dtype=np.uint64)
        columns[:, : self.n] = self.columns[:, : self.n]
        self.columns = columns
        for name in ("ids", "alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        if _seen_bytes(capacity) > self.seen.shape[0]:  # built larger, then swapped in whole
            seen = np.zeros(_seen_bytes(capacity), dtype=np.uint8)
            self._mark_seen(seen, 0, self.n)
            self.seen = seen

    def kill(self, row: int) -> None:
        """Mark a row dead (call with :attr:`lock` held)."""
        if row < self.n and self.alive[row]:
            self.alive[row] = False
            self.dead += 1

    def nearest(
        self, query: np.ndarray, count: int, least: int | None = None
    ) -> tuple[list[int], list[str], int, bytes, int | None]:
        """Rows and ids of the ``count`` live rows nearest ``query`` in Hamming distance,
        nearest first, with the table's sequence number and generation they are current as
        of, and the nearest row's distance (``None`` without rows). With ``least``, rows
        past the first ``least`` are kept only within :func:`prune_margin` bits of the
        nearest row (see there), and none are kept for a :meth:`clear_miss`."""
        with self.lock:
            n, dead, last, gen = self.n, self.dead, self.last, self.gen
            columns, ids, alive = self.columns, self.ids, self.alive
        if n == 0 or n == dead:
            return [], [], last, gen, None
        code = sign_encode(query.reshape(1, -1), self.center, self.width)
        # numpy on the columns (faiss would be faster still, but its import costs ~50 MB of
        # RSS, seven times a 100k table)
        found = hamming_nearest_columns(
            columns[:, :n], code, count, None if dead == 0 else alive[:n]
        )
        # nearest first: the script returns its first live candidate whole (the answer the
        # cache reads without a second call), and the kernel returns rows in no set order
        words = code.reshape(-1).view(np.uint64)
        dist = np.bitwise_count(columns[:, found] ^ words[:, None]).sum(axis=0)
        order = np.argsort(dist, kind="stable")
        if least is not None and order.shape[0] > least:
            near = dist[order]
            kept = least if self.clear_miss(int(near[0])) else max(least, int(
                np.searchsorted(near, near[0] + prune_margin(self.dim), side="right")))
            order = order[:kept]
        rows = found[order].tolist()
        nearest_bits = int(dist[order[0]]) if rows else None
        return rows, [ids[r].tobytes().hex() for r in rows], last, gen, nearest_bits

    def clear_miss(self, near: int | None) -> bool:
        """Whether a lookup whose nearest row is ``near`` bits away lies more than
        :func:`prune_margin` past the farthest nearest row of any lookup whose entry the
        cache read from this table (never, before the first such read).

        Such a lookup reads no entry whole (:meth:`wants_whole`) and sends the server only
        the ``least`` rows the cache asked for, not every row within the margin of its
        nearest (:meth:`nearest`). Among 100k random entries a miss then read 5 index
        records instead of 20 and took 0.81-0.83x the time (BENCHMARKS.md, issue 14). The
        rows it sends are still scored exactly, so an entry among them that passes is
        served, one call later, and widens the reach. A row it no longer sends lies even
        farther than its nearest; should one ever pass, the lookup is a miss the in-process
        store would have served: an answer not given, never a wrong one."""
        reach = self.reach
        return reach is not None and near is not None and near > reach + prune_margin(self.dim)

    def wants_whole(self, near: int | None) -> bool:
        """Whether a lookup whose nearest row is ``near`` bits away should read that row's
        entry whole in its one call (the cache reads it with no second call, and the script
        marks it used): unless it is a :meth:`clear_miss`. A clear miss reads no entry
        (0.93-0.97x its time, before its rows were cut too) and no longer marks an entry it
        did not serve as used (random vectors at 100k: a miss's nearest row 135-157 of 384
        bits away, a near-duplicate hit's 21-53; every miss skipped the entry, every hit
        read it; on real rows far fewer misses are that clear: 37 and 50 of 860 WikiQA
        questions in two runs; BENCHMARKS.md, issue 14). Never a different answer: a
        skipped entry the cache does read costs one more call, and widens the reach."""
        return not self.clear_miss(near)

    def read(self, near: int | None) -> None:
        """The cache read an entry of a lookup whose nearest row was ``near`` bits away."""
        if near is not None:
            with self.lock:
                if self.reach is None or near > self.reach:
                    self.reach = near

    def needs_rebuild(self) -> bool:
        """Too many dead rows, or a centre estimated from too few rows."""
        if self.n >= 256 and self.dead > _DEAD_SHARE * self.n:
            return True
        return self.center_rows < _CENTER_ROWS and self.n >= max(
            _CENTER_ROWS, 4 * self.center_rows
        )


#: Standard deviations of a Hamming-distance difference that :func:`prune_margin` allows.
PRUNE_SIGMAS = 4.0


@functools.lru_cache(maxsize=64)
def prune_margin(bits: int) -> int:
    """Bits past the nearest row's Hamming distance beyond which a candidate is not worth
    reading from the server (a lookup's rows past the ``k + 1`` it must return).

    A sign bit differs between two vectors with probability angle / pi, so a row's distance
    is a binomial over ``bits`` trials with variance at most ``bits / 4``, and the difference
    of two rows' distances has at most ``bits / 2``. A row more than :data:`PRUNE_SIGMAS`
    such deviations (56 bits of 384, an angle 26 degrees wider) farther than the nearest is
    practically never nearer than it in exact cosine. Measured on 66k MiniLM rows and 4,274
    near-duplicate and paraphrase queries (BENCHMARKS.md, issue 14): the exact nearest of the
    ranked rows was never dropped, nor any top-4 row passing 0.9; of those passing 0.8, 3 of
    4,626 were, each 0.1 or more below the best. (Codes of centred, correlated coordinates
    spread more than the binomial: rows at cosine 0.8 lay up to 88 bits past a much nearer
    best.) Dropping a row saves the server a read of its 1.5 KB vector and the client its
    parsing: a 100k semantic hit took 0.86x the time. Rows within the margin, as on a miss,
    where every candidate is about as far, are all read."""
    return int(np.ceil(PRUNE_SIGMAS * np.sqrt(bits / 2)))


@dataclass
class Ask:
    """What one lookup asked the server about: the candidate rows of ``table`` and the
    sequence number the table was current as of."""

    table: LocalTable
    key: tuple[str, str]
    rows: list[int]
    hids: list[str]
    last: int
    gen: bytes
    near: int | None = None  # the nearest row's Hamming distance


class LocalCodes:
    """The local tables of one store, and the thread that loads them.

    ``page(sd, partition, after, count)`` builds the call that reads one page of a scope's
    entries in write order; ``connect()`` returns the sync client the thread uses, ``run``
    runs a call on it (both only ever called on the thread); ``repair(sd, partition, cursor,
    count)`` builds the call giving a write sequence to one step of a scope's entries that
    lack one (``None``: never repaired). When the scope's LRU set was evicted too (the repair
    cannot list every entry), ``listed(sd, cursor)`` builds the call reading one step of the
    namespace's id map (the scope's pairs only) and ``repair_ids(sd, partition, ids)`` the one
    giving those entries their sequences and LRU membership back."""

    def __init__(
        self,
        page: Callable[[str, str, int, int], Any],
        connect: Callable[[], Any],
        run: Callable[[Any, Any], Any],
        namespace: str,
        repair: Callable[[str, str, bytes, int], Any] | None = None,
        listed: Callable[[str, int], Any] | None = None,
        repair_ids: Callable[[str, str, list[str]], Any] | None = None,
    ) -> None:
        self._page = page
        self._repair = repair
        self._listed = listed
        self._repair_ids = repair_ids
        self.relisted_entries = 0
        self._repairs: set[tuple[str, str]] = set()  # keys whose next work is a repair
        self._repaired: dict[tuple[str, str], float] = {}  # when each was last repaired
        self.repaired_entries = 0
        self._connect = connect
        self._run = run
        self._client: Any = None
        self._tables: OrderedDict[tuple[str, str], LocalTable] = OrderedDict()
        self._pending: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._blocked: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._incidents = IncidentLog(logger, f"RedisStore {namespace!r} local codes load")
        self.loads = 0
        #: load in the thread that asks (tests: deterministic switch to the table)
        self.inline = False

    # ------------------------------------------------------------ lookups
    def ask(
        self, sd: str, partition: str, query: np.ndarray, count: int, least: int | None = None
    ) -> Ask | None:
        """The table's candidates for ``query`` (``least`` of them at least, the others
        within :func:`prune_margin` of the nearest), or ``None`` when this scope has no
        usable table (a load is then scheduled and the lookup runs ``VSIM``)."""
        key = (sd, partition)
        dim = int(query.shape[0])
        with self._cond:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
                table.used = time.monotonic()
        if table is None:
            if self._room():
                self._schedule(key, dim)
            return None
        if table.dim != dim:
            return None
        rows, hids, last, gen, near = table.nearest(query, count, least)
        if len(set(hids)) != len(hids):  # an overwritten id: keep its newest row only
            newest: dict[str, int] = {}
            for row, hid in zip(rows, hids, strict=True):
                newest[hid] = max(row, newest.get(hid, -1))
            with table.lock:
                for row, hid in zip(rows, hids, strict=True):
                    if newest[hid] != row:
                        table.kill(row)
            rows, hids = list(newest.values()), list(newest)
        return Ask(table, key, rows, hids, last, gen, near)

    def answered(
        self, ask: Ask, seqn: int, new: list[tuple[str, int]], blobs: dict[str, bytes],
        gone: set[str],
    ) -> None:
        """Apply a local-mode reply: rows of vanished entries die, entries written since
        ``ask.last`` are appended (those another reply has not appended already)."""
        table = ask.table
        fresh = {hid for hid, _ in new}
        with table.lock:
            for row, hid in zip(ask.rows, ask.hids, strict=True):
                if hid in gone or hid in fresh:
                    table.kill(row)
            add = [(hid, seq) for hid, seq in new if seq > table.last and hid in blobs]
            if add:
                table.add([hid for hid, _ in add], [blobs[hid] for hid, _ in add])
            table.last = max(table.last, seqn)
            rebuild = table.needs_rebuild()
        if rebuild:
            self._schedule(ask.key, table.dim, force=True)

    def fell_back(self, ask: Ask, why: bytes) -> None:
        """The server ran ``VSIM`` instead: the table is ``behind`` (catch up), of an old
        generation (``gen``: reload) or the scope has entries without a write sequence
        (``lost``: written by an older version, or its sequence set evicted: the thread
        gives those entries sequences, then loads the table again; at most once per
        :data:`_LOST_RETRY_S`, no table meanwhile)."""
        if why == b"behind":
            self._schedule(ask.key, ask.table.dim, force=True)
            return
        repair = False
        with self._cond:
            if self._tables.get(ask.key) is ask.table:
                del self._tables[ask.key]
            if why == b"lost":
                now = time.monotonic()
                self._blocked[ask.key] = now + _LOST_RETRY_S
                # give the entries their sequences back (once per _LOST_RETRY_S: if
                # that cannot make the table whole, e.g. the LRU set was evicted too,
                # lookups stay on VSIM meanwhile instead of rescanning the scope)
                repair = self._repair is not None and (
                    now >= self._repaired.get(ask.key, float("-inf")) + _LOST_RETRY_S
                )
                if repair:
                    self._repairs.add(ask.key)
                    self._repaired[ask.key] = now
        if why != b"lost":
            self._schedule(ask.key, ask.table.dim)
        elif repair:
            self._schedule(ask.key, ask.table.dim, force=True)

    def forget(self) -> None:
        """Drop every table (the namespace was cleared by this process)."""
        with self._cond:
            self._tables.clear()

    def status(self) -> dict[str, Any]:
        """Tables, rows and bytes held (diagnostics)."""
        tables = list(self._tables.values())
        return {
            "local_tables": len(tables),
            "local_rows": sum(t.n - t.dead for t in tables),
            "local_bytes": sum(t.nbytes for t in tables),
            "local_loads": self.loads,
            "local_repaired_entries": self.repaired_entries,
            "local_relisted_entries": self.relisted_entries,
        }

    def may_hold(self, sd: str, partition: str, hid: str) -> bool | None:
        """Whether the loaded table of the scope and partition may have entry id ``hid``
        (False: it never had; ``None``: no table loaded). The table is current as of this
        process's last lookup there: an entry written since is not in it yet."""
        with self._cond:
            table = self._tables.get((sd, partition))
        return None if table is None else table.may_hold(hid)

    def table(self, sd: str, partition: str = "") -> LocalTable | None:
        """The loaded table of a scope digest and partition, if any (tests, diagnostics)."""
        return self._tables.get((sd, partition))

    # ------------------------------------------------------------ the thread
    def _room(self) -> bool:
        """Whether a new table may be loaded (dropping an idle one past :data:`MAX_TABLES`)."""
        with self._cond:
            if len(self._tables) + len(self._pending) < MAX_TABLES:
                return True
            if not self._tables:
                return False
            oldest = next(iter(self._tables))
            if time.monotonic() - self._tables[oldest].used < _IDLE_S:
                return False
            del self._tables[oldest]
            return True

    def _schedule(self, key: tuple[str, str], dim: int, force: bool = False) -> None:
        with self._cond:
            if self._stopped or key in self._pending:
                return
            if not force and time.monotonic() < self._blocked.get(key, 0.0):
                return
            if self.inline:
                self._pending[key] = dim
        if self.inline:  # tests: load in the caller's thread, so the next lookup uses it
            self._work(key, dim)
            with self._cond:
                self._pending.pop(key, None)
            return
        with self._cond:
            if self._stopped or key in self._pending:
                return
            self._pending[key] = dim
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_follow, args=(weakref.ref(self),), name="rag-optimize-codes",
                    daemon=True,
                )
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        """Stop the thread (idempotent); tables are dropped."""
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._tables.clear()
            self._cond.notify_all()
        self._drop_client()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection
                pass

    def _next(self, wait: float) -> tuple[tuple[str, str], int] | None:
        with self._cond:
            if not self._pending and not self._stopped:
                self._cond.wait(wait)
            if self._stopped or not self._pending:
                return None
            return self._pending.popitem(last=False)

    def _work(self, key: tuple[str, str], dim: int) -> None:
        try:
            if self._client is None:
                self._client = self._connect()
            with self._cond:
                repair = key in self._repairs
                self._repairs.discard(key)
            if repair:
                self._backfill(key)
            table = self._tables.get(key)
            if table is not None and not table.needs_rebuild():
                self._catch_up(key, table)
            else:
                self._load(key, dim)
        except Exception as exc:  # noqa: BLE001 - any fault: lookups keep using VSIM
            self._incidents.failure(exc)
            with self._cond:
                self._blocked[key] = time.monotonic() + _RETRY_S
            self._drop_client()
            return
        self._incidents.success()

    def _backfill(self, key: tuple[str, str]) -> None:
        """Give every entry of the scope's partition without a write sequence the next one
        (ZSCAN of its LRU set, :data:`PAGE` members a step), so a table built after it
        holds them all and the server's lookups stop falling back to ``VSIM``."""
        assert self._repair is not None
        cursor = b"0"
        for _ in range(_MAX_PAGES):
            reply = self._run(self._client, self._repair(key[0], key[1], cursor, PAGE))
            cursor, added = reply[0], int(reply[1])
            self.repaired_entries += added
            if self._stopped:
                return
            if cursor in (b"0", 0, "0"):
                if int(reply[2]) and self._listed is not None and self._repair_ids is not None:
                    self._backfill_listed(key)
                return

    def _backfill_listed(self, key: tuple[str, str]) -> None:
        """The scope's LRU set was evicted too, so its scan could not list every entry: take
        them from the namespace's id map instead (one server-filtered ``HSCAN`` step at a
        time), giving each its write sequence and its place in the LRU set back (eviction
        by ``max_entries`` needs it). An entry the id map lost as well stays unlisted:
        lookups of its scope then stay on ``VSIM`` (right, slower)."""
        assert self._listed is not None and self._repair_ids is not None
        cursor = 0
        for _ in range(_MAX_PAGES):
            reply = self._run(self._client, self._listed(key[0], cursor))
            cursor = int(reply[0])
            hids = [reply[i].decode() for i in range(1, len(reply) - 1, 2)]
            for start in range(0, len(hids), PAGE):
                added, relisted = self._run(
                    self._client, self._repair_ids(key[0], key[1], hids[start : start + PAGE])
                )
                self.repaired_entries += int(added)
                self.relisted_entries += int(relisted)
            if cursor == 0 or self._stopped:
                return

    def _call(self, key: tuple[str, str], after: int) -> tuple[bytes, int, int, int, list[Any]]:
        """One page after sequence ``after``: (generation, sequence counter, entries in the
        scope, the page's last sequence or -1 when it reached the end, rows)."""
        reply = self._run(self._client, self._page(key[0], key[1], after, PAGE))
        gen, seqn, card, scanned = reply[0], int(reply[1]), int(reply[2]), int(reply[3])
        last_seen = int(float(reply[4])) if scanned >= PAGE else -1
        return gen, seqn, card, last_seen, reply[5:]

    def _load(self, key: tuple[str, str], dim: int) -> None:
        for _ in range(_MAX_RESTARTS):
            table = self._fill(key, dim)
            if table is not None:
                with self._cond:
                    if self._stopped:
                        return
                    self._tables[key] = table
                    self._blocked.pop(key, None)
                self.loads += 1
                _release_freed_memory()
                return

    def _fill(self, key: tuple[str, str], dim: int) -> LocalTable | None:
        """A new table read page by page; ``None`` if the scope was dropped meanwhile."""
        table: LocalTable | None = None
        after = 0
        for _ in range(_MAX_PAGES):
            gen, seqn, card, last_seen, rows = self._call(key, after)
            if table is None:
                blobs = rows[2::3]
                good = [b for b in blobs if len(b) == 4 * dim]
                center = (
                    np.frombuffer(b"".join(good), dtype="<f4").reshape(-1, dim).mean(axis=0)
                    if good else np.zeros(dim, dtype=np.float32)
                )
                table = LocalTable(dim, center, card + card // 50 + 64, gen)
                table.center_rows = len(good)
            elif gen != table.gen or seqn < after:
                return None
            done = self._apply_page(table, rows, last_seen, seqn)
            if done or self._stopped:
                return table
            after = table.last
        return table

    def _catch_up(self, key: tuple[str, str], table: LocalTable) -> None:
        for _ in range(_MAX_PAGES):
            with table.lock:
                after = table.last
            gen, seqn, _card, last_seen, rows = self._call(key, after)
            if gen != table.gen or seqn < after:
                with self._cond:
                    if self._tables.get(key) is table:
                        del self._tables[key]
                self._load(key, table.dim)
                return
            if self._apply_page(table, rows, last_seen, seqn) or self._stopped:
                return

    @staticmethod
    def _apply_page(table: LocalTable, rows: list[Any], last_seen: int, seqn: int) -> bool:
        """Append one page (rows ``id, seq, vec``); whether it was the last one."""
        done = last_seen < 0
        hids, blobs = [], []
        with table.lock:
            for i in range(0, len(rows), 3):
                if int(float(rows[i + 1])) > table.last:
                    hids.append(rows[i].decode())
                    blobs.append(rows[i + 2])
            table.add(hids, blobs)
            table.last = max(table.last, seqn if done else last_seen)
        return done


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (looked up once, in the process's own symbols), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # another C library (musl has no malloc_trim)
        return None
    return trim


def _release_freed_memory() -> None:
    """Hand the heap pages a table load freed back to the system (glibc keeps them: the
    load's page buffers and temporaries held 1.1-1.4 MB of a new replica's RSS at 100k
    entries, measured in a fresh process; nothing else of the process changes)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _seen_bytes(capacity: int) -> int:
    """Bytes of a table's id bitmap: a power of two, 8-16 bits an entry (at least 1 KB)."""
    return max(1024, 1 << max(0, (capacity - 1).bit_length()))


def _seen_bits(keys: np.ndarray, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The two bitmap positions of each id (its first 8 bytes as ``uint64``; ids are
    hashes, so their low and high halves are two independent probes)."""
    mask = np.uint64(nbytes * 8 - 1)
    keys = keys.astype(np.uint64)
    return (keys & mask).astype(np.int64), ((keys >> np.uint64(32)) & mask).astype(np.int64)


def _follow(ref: weakref.ReferenceType[LocalCodes]) -> None:
    """The loader thread: holds its store's codes only while working, so a store dropped
    without ``close()`` lets it end."""
    while True:
        codes = ref()
        if codes is None or codes._stopped:
            return
        task = codes._next(1.0)
        if task is not None:
            codes._work(*task)
        del codes
