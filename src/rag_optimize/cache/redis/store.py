"""RedisStore: one semantic cache shared by every process pointed at the same Redis.

Works on plain Redis 6.2+/7 (no modules: managed services often have none). Entries are
hashes (JSON response/metadata, little-endian float32 vector); every change is one Lua
script that also appends to a change-log stream. Each process keeps a local copy of the
vectors (:mod:`~rag_optimize.cache.redis.mirror`), loaded at start and kept current by a
background thread tailing the stream (:mod:`~rag_optimize.cache.redis.sync`), so a lookup
is an in-process vector search plus one round trip to fetch the answer. The exact path is
one round trip on a deterministic key, and none at all for a query the mirror has never
seen.

Fails open: every Redis call has a short socket timeout (``timeout_ms``, default 50 ms), no
retries, and goes through a circuit breaker; any failure raises
:class:`~rag_optimize.errors.StoreError`, which :class:`SemanticCache` turns into a miss or a
dropped write. After an outage the follower reloads the namespace by itself.

Each operation is written once as a *plan*: a generator that yields Redis calls and receives
their replies. A sync driver and an async driver (``redis.asyncio``, one client per event
loop) run the same plans, so the two APIs cannot drift (the httpx pattern).

The search module (RediSearch ``FT.*``) is never required; :meth:`RedisStore.search_module`
only reports whether the server has it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.keys import entry_id
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.codec import (
    CorruptEntry,
    IndexRecord,
    Keys,
    check_namespace,
    decode_entry,
    encode_entry,
    hex_id,
    pairs_to_dict,
    scope_digest,
)
from rag_optimize.cache.redis.mirror import LocalMirror
from rag_optimize.cache.redis.scripts import (
    CLEARED,
    DELETE,
    DELETE_WHERE,
    FETCH,
    INVALIDATE,
    PUT,
    LuaScript,
    arun_script,
    run_script,
)
from rag_optimize.cache.redis.sync import ChangeFollower
from rag_optimize.cache.store import ReportLog, StoreDefaults, StoreReport
from rag_optimize.cache.vector_table import IndexKind
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import ConfigurationError, InvalidVectorError, StoreError

T = TypeVar("T")

_CHUNK = 1000
_FRESH_SLACK = 0.25
_MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class _Script:
    script: LuaScript
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Command:
    args: tuple[Any, ...]


_Call = _Script | _Command
Plan = Generator[_Call, Any, T]


def _redis_module() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RedisStore needs redis-py: pip install 'rag-optimize[redis]'") from exc
    return redis


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


class RedisStore(StoreDefaults):
    """A :class:`~rag_optimize.cache.store.Store` on Redis, shared across processes.

    Args:
        url: ``redis://[user:password@]host:port/db``; ``rediss://`` for TLS; AUTH and ACL
            users come from the URL (redis-py parses it).
        namespace: prefix of every key; stores with different namespaces never see each
            other's entries. Letters, digits, ``_ . : -``.
        max_entries: capacity of the namespace (all processes together); past it the least
            recently used entry is evicted, atomically on the server. ``None``: unbounded.
        timeout_ms: socket timeout of every lookup/write round trip (connect too, unless
            ``connect_timeout_ms``): the longest a request waits for the cache per round trip.
        staleness_ms: how long the change-log reader blocks per ``XREAD``. Changes by
            other processes wake it at once and reach this process's mirror about one round
            trip after they happen (see BENCHMARKS.md); when the reader has not confirmed
            the mirror for ``staleness_ms + timeout_ms + 250 ms`` (a stuck or failing
            reader), exact lookups stop trusting the mirror and ask Redis.
        index: ``"exact"`` or ``"ann"`` (usearch HNSW) for the local vector mirror.
        failure_threshold / cooldown_ms: circuit breaker: after this many consecutive
            failures, stop calling Redis for this long, then let one probe through.
        stream_maxlen: approximate length of the change log; a reader that falls further
            behind than this reloads the namespace.
        sweep_interval_ms: how often this process deletes expired entries from Redis.
        ttl_grace_ms: Redis TTL is the entry's TTL plus this grace; expiry is decided by
            the cache clock, Redis TTL only frees memory if nobody sweeps.
        startup_wait_ms: how long the constructor waits for the first load of the mirror
            (it never fails: an unreachable Redis means a cold cache until it answers).
        clock: wall-clock seconds used by the sweeper; must agree with the cache's clock.
        client_options: extra keyword arguments for ``redis.Redis.from_url``.

    Consistency: Redis is the truth for answers. A deleted, invalidated, evicted or expired
    entry is never answered (every hit is fetched from Redis), in any process, at once. A
    new entry becomes findable in another process when the change log delivers it (about
    one round trip). The one-round-trip exact path assumes entry ids are
    ``entry_id(scope, query_key, partition)``, as :class:`SemanticCache` makes them; other
    ids are still found by the vector search. What the background thread notices (expired
    entries it swept, corrupt records it met while loading) is handed over by
    :meth:`drain_report`. Keys of a namespace share one Redis Cluster hash tag, so
    the scripts stay in one slot (cluster deployments are not tested).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        namespace: str = "rag-optimize",
        *,
        max_entries: int | None = 10_000,
        timeout_ms: float = 50,
        connect_timeout_ms: float | None = None,
        staleness_ms: float = 50,
        index: IndexKind = "exact",
        failure_threshold: int = 3,
        cooldown_ms: float = 1000,
        stream_maxlen: int = 10_000,
        sweep_interval_ms: float = 1000,
        ttl_grace_ms: int = 60_000,
        startup_wait_ms: float = 2000,
        clock: Callable[[], float] = time.time,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if max_entries is not None and (isinstance(max_entries, bool) or max_entries < 1):
            raise ConfigurationError(f"max_entries must be >= 1 or None, got {max_entries}")
        if index not in ("exact", "ann"):
            raise ConfigurationError(f"index must be 'exact' or 'ann', got {index!r}")
        if stream_maxlen < 100:
            raise ConfigurationError(f"stream_maxlen must be >= 100, got {stream_maxlen}")
        if ttl_grace_ms < 0:
            raise ConfigurationError(f"ttl_grace_ms must be >= 0, got {ttl_grace_ms}")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"url must start with redis://, rediss:// or unix://, got {url!r}"
            )
        self.url = url
        self.namespace = check_namespace(namespace)
        self.max_entries = max_entries
        self.timeout = _positive("timeout_ms", timeout_ms) / 1000
        connect = self.timeout if connect_timeout_ms is None else connect_timeout_ms / 1000
        self.connect_timeout = _positive("connect_timeout_ms", connect * 1000) / 1000
        self.staleness = _positive("staleness_ms", staleness_ms) / 1000
        self.stream_maxlen = int(stream_maxlen)
        self.ttl_grace_ms = int(ttl_grace_ms)
        self._keys = Keys(self.namespace)
        self._clock = clock
        self._background = ReportLog()
        self._dim: int | None = None
        self._corrupt_seen: set[str] = set()
        self._corrupt_lock = threading.Lock()
        self._mirror = LocalMirror(index)
        self.breaker = CircuitBreaker(
            failure_threshold, _positive("cooldown_ms", cooldown_ms) / 1000
        )
        redis = _redis_module()
        self._options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "driver_info": None,  # no CLIENT SETINFO round trips on connect
            **(client_options or {}),
        }
        try:
            self._client = redis.Redis.from_url(
                url, retry=_no_retry(redis.retry.Retry), **self._options
            )
            follower_client = redis.Redis.from_url(
                url,
                retry=_no_retry(redis.retry.Retry),
                **{
                    **self._options,  # background thread: generous timeouts, nobody waits
                    "socket_timeout": self.staleness + max(self.timeout, 1.0),
                    "socket_connect_timeout": max(self.connect_timeout, 1.0),
                },
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis url {url!r}: {exc}") from exc
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._aclients_lock = threading.Lock()
        self._agenerations: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._pool_generation = 0
        me = weakref.ref(self)
        self._follower = ChangeFollower(
            follower_client,
            self._keys,
            self._mirror,
            self.breaker,
            block_ms=max(1, int(self.staleness * 1000)),
            sweep_interval=_positive("sweep_interval_ms", sweep_interval_ms) / 1000,
            stream_maxlen=self.stream_maxlen,
            clock=clock,
            # weak references: the thread must not keep a forgotten store alive
            get_dim=lambda: getattr(me(), "_dim", None),
            set_dim=lambda dim: _call(me, "_set_dim", dim),
            on_corrupt=lambda hid, exc: _call(me, "_corrupt", hid, exc),
            on_expired=lambda n: _call(me, "_expired", n),
        )
        self._follower_client = follower_client
        self._closed = False
        self._follower.start()
        # a store dropped without close() still stops its thread when collected
        weakref.finalize(self, self._follower.stop, 0.0)
        if startup_wait_ms > 0:
            self._follower.wait_loaded(startup_wait_ms / 1000)

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int | None:
        """Vector dimension of the namespace (as last seen; no I/O)."""
        return self._dim

    def drain_report(self) -> StoreReport:
        """What the change-log thread noticed since the last call (entries it swept as
        expired, corrupt records it skipped while loading), handed over once."""
        return self._background.drain()

    def wait_synced(self, timeout: float = 5.0) -> bool:
        """Block until the local mirror has been loaded once; returns whether it was."""
        return self._follower.wait_loaded(timeout)

    def status(self) -> dict[str, Any]:
        """Diagnostics: breaker state, mirror size, change-log position, loads so far."""
        last_id, seq = self._follower.position
        return {
            "breaker": self.breaker.state,
            "mirror_entries": len(self._mirror),
            "mirror_fresh": self._mirror_fresh(),
            "log_id": last_id.decode(),
            "log_seq": seq,
            "loads": self._follower.loads,
        }

    def search_module(self) -> bool:
        """Whether the server has the search module (``FT.*``, Redis Stack / Redis 8).
        Informational only: this store never uses it and works the same without it."""
        try:
            self._client.execute_command("FT._LIST")
        except Exception:  # noqa: BLE001 - unknown command (or denied by ACL): no
            return False
        return True

    # ---------------------------------------------------------------- sync API
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
        return self._drive(self._get_exact(scope, query_key, now, partition, report))

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
        """Nearest entries of ``scope`` and ``partition`` from the local mirror (no network).

        Raises :class:`StoreError` while Redis is known to be failing: every candidate would
        need a fetch from Redis anyway, and a local success would read as a recovery."""
        self._check_healthy()
        return self._mirror.search(scope, vector, k, now, partition)

    def fetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """The full entry from Redis (touches its LRU time), ``None`` if gone/expired."""
        return self._drive(self._fetch(hex_id(entry_id), now, report))

    def put(self, entry: CacheEntry, now: float, *, report: StoreReport | None = None) -> None:
        """Insert or replace ``entry`` (also how a changed threshold is published)."""
        self._drive(self._put(entry, now, report))

    def delete(self, entry_ids: list[str]) -> int:
        """Remove these entries everywhere; returns how many existed."""
        return self._drive(self._delete([hex_id(i) for i in entry_ids]))

    def invalidate(self, scope: str) -> int:
        """Remove every entry of ``scope`` in every process; returns how many."""
        return self._drive(self._invalidate(scope))

    def delete_where(self, scope: str | None, metadata_key: str, values: list[str]) -> int:
        """Remove entries whose ``metadata[metadata_key]`` is or contains one of ``values``
        (server-side, in chunks); returns how many."""
        return self._drive(self._delete_where(scope, metadata_key, values))

    def clear(self) -> None:
        """Remove every key of the namespace and tell every process to drop its mirror."""
        self._drive(self._clear())

    def count(self) -> int:
        """Entries in the namespace (entries past their TTL count until swept)."""
        return int(self._drive(self._count()))

    # --------------------------------------------------------------- async API
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
        plan = self._get_exact(scope, query_key, now, partition, report)
        return await self._adrive(plan, lookup=True)

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
        """Async twin of :meth:`search` (in-process numpy, runs inline)."""
        return self.search(scope, vector, k, now, partition=partition, report=report)

    async def afetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """Async twin of :meth:`fetch`."""
        return await self._adrive(self._fetch(hex_id(entry_id), now, report), lookup=True)

    async def aput(
        self, entry: CacheEntry, now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of :meth:`put`."""
        await self._adrive(self._put(entry, now, report), lookup=True)

    async def adelete(self, entry_ids: list[str]) -> int:
        """Async twin of :meth:`delete`."""
        return await self._adrive(self._delete([hex_id(i) for i in entry_ids]))

    async def ainvalidate(self, scope: str) -> int:
        """Async twin of :meth:`invalidate`."""
        return await self._adrive(self._invalidate(scope))

    async def adelete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> int:
        """Async twin of :meth:`delete_where`."""
        return await self._adrive(self._delete_where(scope, metadata_key, values))

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self._adrive(self._clear())

    async def acount(self) -> int:
        """Async twin of :meth:`count`."""
        return int(await self._adrive(self._count()))

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the change-log thread and close the connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._follower.stop(self.staleness + max(self.timeout, 1.0) + 1.0)
        for client in (self._client, self._follower_client):
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection
                pass
        with self._aclients_lock:
            self._aclients.clear()

    async def aclose(self) -> None:
        """Close this event loop's async client, then everything else."""
        client = self._aclients.get(asyncio.get_running_loop())
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection
                pass
        self.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------- plans
    def _args(self, *rest: Any) -> tuple[Any, ...]:
        return (self._keys.prefix, self.stream_maxlen, *rest)

    def _get_exact(
        self, scope: str, query_key: str, now: float, partition: str, report: StoreReport | None
    ) -> Plan[CacheEntry | None]:
        hid = entry_id(scope, query_key, partition)
        if hid not in self._mirror and self._mirror_fresh():
            self._check_healthy()
            return None  # nobody stored it (as of a moment ago): no round trip
        entry = yield from self._fetch(hid, now, report)
        if (
            entry is None
            or entry.scope != scope
            or entry.query_key != query_key
            or entry.partition != partition
        ):
            return None
        return entry

    def _fetch(self, hid: str, now: float, report: StoreReport | None) -> Plan[CacheEntry | None]:
        raw = yield _Script(FETCH, self._args(hid, repr(float(now))))
        if not raw:
            self._mirror.remove([hid])
            return None
        try:
            entry = decode_entry(pairs_to_dict(raw), self.namespace, self._dim)
        except CorruptEntry as exc:
            self._corrupt(hid, exc, report)
            self._mirror.remove([hid])
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            removed = yield _Script(DELETE, self._args(hid))
            if removed and report is not None:
                report.expired += int(removed)
            self._mirror.remove([hid])
            return None
        return entry

    def _put(self, entry: CacheEntry, now: float, report: StoreReport | None) -> Plan[None]:
        vector = np.asarray(entry.vector, dtype=np.float32)
        dim = int(vector.shape[0])
        if self._dim is not None and dim != self._dim:
            raise InvalidVectorError(
                f"entry vector has dimension {dim}, the Redis namespace "
                f"{self.namespace!r} holds {self._dim}"
            )
        fields = encode_entry(entry, self.namespace)
        hid = hex_id(entry.id)
        ttl_ms = ""
        expires = ""
        if entry.expires_at is not None:
            expires = repr(float(entry.expires_at))
            ttl_ms = str(max(1, math.ceil((entry.expires_at - now) * 1000)) + self.ttl_grace_ms)
        flat = [item for pair in fields.items() for item in pair]
        reply = yield _Script(
            PUT,
            self._args(
                hid,
                scope_digest(entry.scope),
                str(dim),
                repr(float(now)),
                expires,
                ttl_ms,
                "" if self.max_entries is None else str(self.max_entries),
                *flat,
            ),
        )
        if reply[0] == b"dim":
            self._set_dim(int(reply[1]))
            raise InvalidVectorError(
                f"entry vector has dimension {dim}, the Redis namespace "
                f"{self.namespace!r} holds {int(reply[1])}"
            )
        if report is not None:
            report.evicted += int(reply[1])
            report.expired += int(reply[2])
        self._set_dim(dim)
        record = IndexRecord(
            entry.scope, vector, entry.expires_at, entry.threshold, entry.partition
        )
        self._mirror.add(hid, record)

    def _delete(self, hids: list[str]) -> Plan[int]:
        if not hids:
            return 0
        removed = yield _Script(DELETE, self._args(*hids))
        self._mirror.remove(hids)
        return int(removed)

    def _invalidate(self, scope: str) -> Plan[int]:
        sd = scope_digest(scope)
        total = 0
        for _ in range(_MAX_ROUNDS):
            removed, left = yield _Script(INVALIDATE, self._args(sd, _CHUNK))
            total += int(removed)
            if not int(left):
                break
        self._mirror.drop_scope(scope)
        return total

    def _delete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> Plan[int]:
        if not isinstance(metadata_key, str) or not all(isinstance(v, str) for v in values):
            raise TypeError("delete_where needs a str metadata_key and a list of str values")
        if not values:
            return 0
        sd = "" if scope is None else scope_digest(scope)
        cursor: Any = b"0"
        total = 0
        for _ in range(_MAX_ROUNDS):
            cursor, ids = yield _Script(
                DELETE_WHERE, self._args(sd, cursor, _CHUNK, metadata_key, *values)
            )
            hids = [i.decode() for i in ids]
            self._mirror.remove(hids)
            total += len(hids)
            if cursor in (b"0", 0, "0"):
                break
        return total

    def _clear(self) -> Plan[None]:
        keep = {self._keys.log.encode(), self._keys.seq.encode()}
        cursor: Any = 0
        for _ in range(_MAX_ROUNDS):
            cursor, found = yield _Command(
                ("SCAN", cursor, "MATCH", self._keys.pattern, "COUNT", _CHUNK)
            )
            doomed = [k for k in found if k not in keep]
            if doomed:
                yield _Command(("UNLINK", *doomed))
            if int(cursor) == 0:
                break
        yield _Script(CLEARED, self._args())
        self._mirror.clear()
        self._set_dim(None)

    def _count(self) -> Plan[int]:
        return int((yield _Command(("ZCARD", self._keys.lru))))

    # ----------------------------------------------------------------- drivers
    def _drive(self, plan: Plan[T]) -> T:
        started, call = self._start(plan)
        if not started:
            return cast(T, call)
        with self._outcome():
            while True:
                if isinstance(call, _Script):
                    reply = run_script(self._client, call.script, (self._keys.log,), call.args)
                else:
                    reply = self._client.execute_command(*call.args)
                try:
                    call = plan.send(reply)
                except StopIteration as done:
                    return cast(T, done.value)

    async def _adrive(self, plan: Plan[T], *, lookup: bool = False) -> T:
        started, call = self._start(plan)
        if not started:
            return cast(T, call)
        # lookups get an overall deadline too (socket timeouts bound each round trip)
        budget = self.connect_timeout + 3 * self.timeout if lookup else None
        with self._outcome():
            steps = self._asteps(plan, call)
            return await (steps if budget is None else asyncio.wait_for(steps, budget))

    async def _asteps(self, plan: Plan[T], call: _Call) -> T:
        client = self._aclient()
        if self._agenerations.get(client) != self._pool_generation:
            self._agenerations[client] = self._pool_generation
            await client.connection_pool.disconnect(inuse_connections=False)
        while True:
            if isinstance(call, _Script):
                reply = await arun_script(client, call.script, (self._keys.log,), call.args)
            else:
                reply = await client.execute_command(*call.args)
            try:
                call = plan.send(reply)
            except StopIteration as done:
                return cast(T, done.value)

    def _start(self, plan: Plan[T]) -> tuple[bool, Any]:
        """Run ``plan`` to its first Redis call: ``(True, call)``, or ``(False, result)``
        when it answered locally. Raises :class:`StoreError` while the circuit is open."""
        self._check_open()
        try:
            call = next(plan)
        except StopIteration as done:
            return False, done.value
        if not self.breaker.allow():
            plan.close()
            raise StoreError(f"Redis circuit open for {self.breaker.cooldown:.1f}s after failures")
        return True, call

    @contextmanager
    def _outcome(self) -> Iterator[None]:
        """Report the outcome of a plan's Redis calls to the breaker; any client failure
        becomes :class:`StoreError` (a wrong vector dimension stays an input error)."""
        try:
            yield
        except InvalidVectorError:
            self.breaker.success()
            raise
        except Exception as exc:  # noqa: BLE001 - any client failure fails open
            self._failed()
            raise StoreError(f"Redis {type(exc).__name__}: {exc}") from exc
        self.breaker.success()

    def _failed(self) -> None:
        """Record a failure; when it opens the circuit, drop idle pooled connections (after
        an outage they are dead sockets; each would fail once more on reuse). Connections
        in use are left to fail or finish on their own: closing them under another
        thread's call only adds errors."""
        if self.breaker.failure():
            self._pool_generation += 1
            try:
                self._client.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # noqa: BLE001, S110 - best effort on a failing pool
                pass

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            redis = _redis_module()
            with self._aclients_lock:
                client = self._aclients.get(loop)
                if client is None:
                    client = redis.asyncio.Redis.from_url(
                        self.url, retry=_no_retry(redis.asyncio.retry.Retry), **self._options
                    )
                    self._aclients[loop] = client
                    self._agenerations[client] = self._pool_generation
        return client

    # ---------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("RedisStore is closed")

    def _check_healthy(self) -> None:
        """Fail a locally answered call when Redis is known to be down (see :meth:`search`)."""
        if not self.breaker.healthy:
            raise StoreError("Redis is failing: its last call failed or the circuit is open")

    def _mirror_fresh(self) -> bool:
        # Redis wakes timed-out XREADs on its 100 ms timer (hz 10), hence the slack
        return self._follower.fresh(self.staleness + self.timeout + _FRESH_SLACK)

    def _set_dim(self, dim: int | None) -> None:
        self._dim = dim

    def _expired(self, count: int) -> None:
        self._background.add(StoreReport(expired=count))

    def _corrupt(self, hid: str, exc: Exception, report: StoreReport | None = None) -> None:
        """Count a corrupt or foreign entry once per process (it is skipped, never raised),
        in the caller's ``report``, or (the change-log thread) for :meth:`drain_report`."""
        with self._corrupt_lock:
            if hid in self._corrupt_seen:
                return
            if len(self._corrupt_seen) > 100_000:
                self._corrupt_seen.clear()
            self._corrupt_seen.add(hid)
        if report is None:
            self._background.add(StoreReport(corrupt=1))
        else:
            report.corrupt += 1


def _call(ref: weakref.ReferenceType[RedisStore], method: str, *args: Any) -> None:
    """Call ``method`` on the store behind ``ref`` if it still exists."""
    store = ref()
    if store is not None:
        getattr(store, method)(*args)


def _no_retry(retry_cls: Any) -> Any:
    """A redis-py ``Retry`` that never retries: the breaker decides, the caller never waits."""
    from redis.backoff import NoBackoff

    return retry_cls(NoBackoff(), 0)
