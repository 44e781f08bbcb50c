"""The mirror path: for servers without vector search (Redis 6.2-7.4, Valkey without search).

Entries are hashes; every change is one Lua script (:mod:`~rag_optimize.cache.redis.scripts`)
that also appends to a change-log stream. This process keeps a copy of the namespace's vectors
(:class:`~rag_optimize.cache.redis.mirror.LocalMirror`), loaded at start and kept current by a
background thread tailing the stream (:class:`~rag_optimize.cache.redis.sync.ChangeFollower`), so
a lookup is an in-process vector search (plus, with the default int8 copy, one round trip that
rescores its few candidates from the float32 in Redis) and one round trip for the answer. The
exact path is one round trip on a deterministic key. Every change this process makes reaches
its mirror with the change-log number its script returned, so its own writes and the
follower's events can arrive in any order (see :mod:`~rag_optimize.cache.redis.mirror`).

Every key of a namespace shares the hash tag ``{ns}`` (one cluster slot), which is why this path
serves one Redis (or one slot of a cluster), and a least-privilege ACL user needs ``~{ns}:*``.
Until the first load of the mirror finishes, a semantic lookup waits for it at most
``startup_wait_ms``; past that it is a counted, logged store error, never a silent miss;
exact lookups always ask Redis, so they hit during the load too. The load reads packed pages
(:mod:`~rag_optimize.cache.redis.snapshot`), one page ahead in a helper thread: a 100k-entry
namespace in 3-6 s on this 2-core machine at load 9-14 (most of it the server's Lua reading
each entry's hash; BENCHMARKS.md, issue 14).

Invalidation (``invalidate`` by scope or by source) makes a second pass over the ids the
mirror holds, because the set the first pass walks (a scope's id set, or the LRU set) can be
gone while its entries are not: under an ``allkeys-*`` ``maxmemory`` policy Redis evicts any key.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.keys import entry_id
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.codec import (
    CorruptEntry,
    IndexRecord,
    Keys,
    decode_entry,
    hex_id,
    pairs_to_dict,
    scope_digest,
)
from rag_optimize.cache.redis.marks import ServedMarks
from rag_optimize.cache.redis.mirror import LocalMirror
from rag_optimize.cache.redis.options import MirrorOptions
from rag_optimize.cache.redis.plans import (
    Command,
    Plan,
    Script,
    Shared,
    is_entry_for,
    prepare_put,
)
from rag_optimize.cache.redis.scripts import (
    CLEARED,
    DELETE,
    DELETE_WHERE,
    DELETE_WHERE_IDS,
    FETCH,
    INVALIDATE,
    INVALIDATE_IDS,
    PUT,
    VECTORS,
)
from rag_optimize.cache.redis.sync import ChangeFollower
from rag_optimize.cache.store import StoreReport
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import StoreError

__all__ = ["MirrorPath"]

_CHUNK = 1000
_FRESH_SLACK = 0.25
_MAX_ROUNDS = 100_000
_RESCORE_EXTRA = 4  # int8 mirror: candidates rescored beyond k (a near tie can swap order)


class MirrorPath:
    """Plans over the ``{ns}`` layout plus the local mirror and its follower thread."""

    def __init__(
        self,
        shared: Shared,
        options: MirrorOptions,
        follower_client: Any,
        breaker: CircuitBreaker,
        *,
        timeout: float,
        clock: Callable[[], float],
        replica_reads: bool = False,
    ) -> None:
        self.shared = shared
        self.replica_reads = replica_reads
        #: entries served by a replica (which cannot write their LRU mark), marked by the
        #: next put (:mod:`.marks`; the namespace is one LRU set: group ``""``)
        self.marks = ServedMarks()
        self.options = options
        self.keys = Keys(shared.namespace)
        self.mirror = LocalMirror(options.index, options.storage)
        self.breaker = breaker
        self.timeout = timeout
        self.follower_client = follower_client
        me = weakref.ref(shared)

        def set_dim(dim: int | None) -> None:
            # a snapshot read just before this process's first put may say "no dimension":
            # what this store wrote itself stays known (own_dim is only reset by its clear())
            target = me()
            if target is not None:
                target.dim = dim if dim is not None else target.own_dim

        self.follower = ChangeFollower(
            follower_client,
            self.keys,
            self.mirror,
            breaker,
            block_ms=max(1, int(options.staleness * 1000)),
            sweep_interval=options.sweep_interval_ms / 1000,
            stream_maxlen=options.stream_maxlen,
            clock=clock,
            # weak references: the thread must not keep a forgotten store alive
            get_dim=lambda: getattr(me(), "dim", None),
            set_dim=set_dim,
            on_corrupt=lambda hid, exc: _call(me, "corrupt", hid, exc),
            on_expired=lambda n: _call(me, "expired", n),
            on_cleared=lambda: _call(me, "emptied"),
        )

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the follower thread (it loads the namespace first)."""
        self.follower.start()

    def stop(self) -> None:
        """Stop the follower and close its connection."""
        self.follower.stop(self.options.staleness + max(self.timeout, 1.0) + 1.0)
        try:
            self.follower_client.close()
        except Exception:  # noqa: BLE001, S110 - closing a dead connection
            pass

    def fresh(self) -> bool:
        """Whether the change-log reader confirmed the mirror current recently (reported in
        :meth:`status`; exact lookups ask Redis either way)."""
        # Redis wakes timed-out XREADs on its 100 ms timer (hz 10), hence the slack
        return self.follower.fresh(self.options.staleness + self.timeout + _FRESH_SLACK)

    def wait_loaded(self, timeout: float) -> bool:
        """Block until the mirror was loaded once (or ``timeout`` seconds)."""
        return self.follower.wait_loaded(timeout)

    # ------------------------------------------------------------------ lookups
    def local_search(
        self, scope: str, vector: FloatVector, k: int, now: float, partition: str = "",
        *, wait: bool = True,
    ) -> list[Candidate]:
        """Nearest entries from the mirror; waits for its first load at most
        ``startup_wait_ms`` (not at all with ``wait=False``: the async driver waited off the
        event loop already), then fails loudly (a :class:`StoreError`) instead of missing."""
        timeout = self.options.startup_wait_ms / 1000 if wait else 0.0
        if not self.follower.wait_loaded(timeout):
            raise StoreError(
                f"the local mirror of namespace {self.shared.namespace!r} is still loading "
                f"after startup_wait_ms={self.options.startup_wait_ms:g}"
            )
        dim = self.shared.dim
        if dim is not None and vector.shape[0] != dim:
            raise self.shared.foreign_dimension(int(vector.shape[0]), dim)
        return self.mirror.search(scope, vector, k, now, partition)

    def search(
        self, scope: str, vector: FloatVector, k: int, now: float, partition: str = "",
        *, wait: bool = True,
    ) -> Plan[list[Candidate]]:
        """Nearest entries from the mirror. With ``storage="int8"`` the mirror's scores are
        approximate (within about 1e-3), so its ``k + 4`` best are rescored exactly from the
        float32 vectors in Redis (one round trip) and the ``k`` best of those returned:
        quantization can cost a candidate, never a decision. ``float32``: no round trip.
        ``wait``: as :meth:`local_search`."""
        if self.options.storage == "float32":
            return self.local_search(scope, vector, k, now, partition, wait=wait)
        found = self.local_search(scope, vector, k + _RESCORE_EXTRA, now, partition, wait=wait)
        if not found:
            return []
        blobs = yield self._script(VECTORS, *(c.entry_id for c in found), read=True)
        query = np.asarray(vector, dtype=np.float32)
        rescored = []
        for candidate, blob in zip(found, blobs, strict=True):
            if not isinstance(blob, bytes) or len(blob) != 4 * query.shape[0]:
                continue  # gone since, or not a vector of this dimension: the fetch would miss
            exact = float(np.frombuffer(blob, dtype="<f4") @ query)
            rescored.append(Candidate(candidate.entry_id, exact, candidate.threshold))
        rescored.sort(key=lambda c: -c.similarity)
        return rescored[:k]

    def get_exact(
        self, scope: str, query_key: str, now: float, partition: str, report: StoreReport | None
    ) -> Plan[CacheEntry | None]:
        hid = entry_id(scope, query_key, partition)
        # Always asked of Redis, even when the mirror does not hold the id: a mirror that is
        # swapping in a snapshot while this process writes can briefly lack an entry it was
        # just given (seen as a false exact miss in about 1 run in 12 of
        # test_delete_where_matches_strings_and_lists), and a lost read is worse than one
        # round trip on the path for servers without vector search.
        entry = yield from self.fetch(hid, now, report)
        return entry if is_entry_for(entry, scope, query_key, partition) else None

    def _args(self, *rest: Any) -> tuple[Any, ...]:
        return (self.keys.prefix, self.options.stream_maxlen, *rest)

    def _script(self, script: Any, *rest: Any, read: bool = False) -> Script:
        return Script(script, (self.keys.log,), self._args(*rest), read)

    def fetch(
        self, entry_id: str, now: float, report: StoreReport | None = None
    ) -> Plan[CacheEntry | None]:
        hid = hex_id(entry_id)
        seen = self.mirror.version(hid)  # what the mirror knew before asking Redis
        raw = yield self._script(FETCH, hid, repr(float(now)), read=True)
        if not raw and self.replica_reads and hid in self.mirror:
            # the read may have run on a replica that lags: only the master's word that the
            # entry is gone may remove it from the mirror (else a lost semantic hit)
            raw = yield self._script(FETCH, hid, repr(float(now)))
        if not raw:
            self.mirror.forget(hid, seen)  # unless it was (re)written meanwhile
            return None
        try:
            entry = decode_entry(pairs_to_dict(raw), self.shared.namespace, self.shared.dim)
        except CorruptEntry as exc:
            self.shared.corrupt(hid, exc, report)
            self.mirror.forget(hid, seen)
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            removed, seq = yield self._script(DELETE, hid)
            self.shared.expired(int(removed), report)
            self.mirror.remove([hid], _seq(seq))
            return None
        if self.replica_reads:  # perhaps read on a replica, whose script could not mark it
            self.marks.add("", hid, now)
        return entry

    # ------------------------------------------------------------------- writes
    def put(self, entry: CacheEntry, now: float, report: StoreReport | None) -> Plan[None]:
        shared = self.shared
        prepared = prepare_put(entry, now, shared)
        reply = yield self._script(
            PUT,
            prepared.hid,
            scope_digest(entry.scope),
            str(prepared.dim),
            repr(float(now)),
            prepared.expires,
            prepared.ttl_ms,
            "" if shared.max_entries is None else str(shared.max_entries),
            self.marks.take(""),
            *prepared.flat_fields,
        )
        if reply[0] == b"dim":
            shared.dim = int(reply[1])
            raise shared.foreign_dimension(prepared.dim, int(reply[1]))
        _ok, evicted, gone, put_seq, evict_seq, victims = reply
        shared.evicted(int(evicted), report)
        shared.expired(int(gone), report)
        shared.stored(prepared.dim)
        if victims:
            self.mirror.remove([v.decode() for v in victims], _seq(evict_seq))
        vector = np.asarray(prepared.vector, dtype=np.float32)
        record = IndexRecord(
            entry.scope, vector, entry.expires_at, entry.threshold, entry.partition
        )
        self.mirror.add(prepared.hid, record, _seq(put_seq))

    def delete(self, entry_ids: list[str]) -> Plan[int]:
        hids = [hex_id(i) for i in entry_ids]
        if not hids:
            return 0
        removed, seq = yield self._script(DELETE, *hids)
        self.mirror.remove(hids, _seq(seq))
        return int(removed)

    def invalidate(self, scope: str) -> Plan[int]:
        sd = scope_digest(scope)
        held = self.mirror.scope_ids(scope)  # what this process knew of the scope before
        total, seq = 0, None
        for _ in range(_MAX_ROUNDS):
            removed, left, seq = yield self._script(INVALIDATE, sd, _CHUNK)
            total += int(removed)
            if not int(left):
                break
        # Second pass over the entries the mirror held: the scope set alone is not enough
        # when it is gone while its entries are not (Redis evicts any key under an allkeys-*
        # maxmemory policy): without this pass those answers were still served after
        # invalidate (tests/test_redis_store_faults.py). Only entries that still exist and
        # belong to the scope are removed (and announced).
        for lo in range(0, len(held), _CHUNK):
            chunk = held[lo : lo + _CHUNK]
            removed, dseq = yield self._script(INVALIDATE_IDS, sd, *chunk)
            total += int(removed)
            if int(removed):
                self.mirror.remove(chunk, _seq(dseq))
        # entries of the scope written since (by any process) stay
        self.mirror.drop_scope(scope, _seq(seq))
        return total

    def delete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> Plan[int]:
        if not values:
            return 0
        sd = "" if scope is None else scope_digest(scope)
        cursor: Any = b"0"
        total = 0
        for _ in range(_MAX_ROUNDS):
            cursor, ids, seq = yield self._script(
                DELETE_WHERE, sd, cursor, _CHUNK, metadata_key, *values
            )
            hids = [i.decode() for i in ids]
            self.mirror.remove(hids, _seq(seq))
            total += len(hids)
            if cursor in (b"0", 0, "0"):
                break
        # Second pass over the entries the mirror still holds (as invalidate's): the set
        # scanned above (the scope's, or the LRU set) can be gone while its entries are not.
        held = self.mirror.ids() if scope is None else self.mirror.scope_ids(scope)
        for lo in range(0, len(held), _CHUNK):
            ids, seq = yield self._script(
                DELETE_WHERE_IDS, sd, metadata_key, len(values), *values, *held[lo : lo + _CHUNK]
            )
            if ids:
                hids = [i.decode() for i in ids]
                self.mirror.remove(hids, _seq(seq))
                total += len(hids)
        return total

    def flush_touches(self) -> Plan[None]:
        """Mark used every entry served and not yet marked (at close)."""
        for _, marks in self.marks.take_all().items():
            yield Command(("ZADD", self.keys.lru, "XX", "GT", *marks))

    def clear(self) -> Plan[None]:
        keep = {self.keys.log.encode(), self.keys.seq.encode(), self.keys.last.encode()}
        cursor: Any = 0
        for _ in range(_MAX_ROUNDS):
            cursor, found = yield Command(
                ("SCAN", cursor, "MATCH", self.keys.pattern, "COUNT", _CHUNK)
            )
            doomed = [k for k in found if k not in keep]
            if doomed:
                yield Command(("UNLINK", *doomed))
            if int(cursor) == 0:
                break
        seq = yield self._script(CLEARED)
        self.marks.clear()
        self.mirror.clear(_seq(seq))
        self.shared.emptied()

    def head(self) -> Plan[int]:
        """The namespace's change counter now: the number of the latest change."""
        raw = yield Command(("GET", self.keys.seq))
        return int(raw or 0)

    def count(self) -> Plan[int]:
        return int((yield Command(("ZCARD", self.keys.lru))))

    def status(self) -> dict[str, Any]:
        """Mirror size, freshness, change-log position, loads so far."""
        last_id, seq = self.follower.position
        return {
            "mirror_entries": len(self.mirror),
            "mirror_fresh": self.fresh(),
            "log_id": last_id.decode(),
            "log_seq": seq,
            "loads": self.follower.loads,
        }


def _seq(raw: Any) -> int | None:
    """A change number from a script's reply (``None``: Redis could not number the change)."""
    return None if raw is None or raw is False else int(raw)


def _call(ref: weakref.ReferenceType[Shared], method: str, *args: Any) -> None:
    """Call ``method`` on the shared state behind ``ref`` if it still exists."""
    target = ref()
    if target is not None:
        getattr(target, method)(*args)

