"""RedisStore: one semantic cache shared by every process pointed at the same Redis.

Two search paths, chosen when the store starts (by asking the server, see
:mod:`~rag_optimize.cache.redis.server`):

* **server-side** (Redis 8+, vector sets): a lookup is one round trip; no vectors are
  mirrored in the process, so a new replica answers from its first lookup. By default each
  process keeps 1-bit codes of the scopes it looks up (``local_codes``,
  :mod:`~rag_optimize.cache.redis.codes`) to find the candidates instead of ``VSIM``. Works
  on a standalone server and on a Redis Cluster (one hash tag per scope,
  :mod:`~rag_optimize.cache.redis.vsets`).
* **mirror** (Redis 6.2-7.4, Valkey without search; one Redis or one cluster slot): each
  process keeps the namespace's vectors and a thread tails a change log
  (:mod:`~rag_optimize.cache.redis.mirrored`).

The constructor does no I/O and starts no thread. The store connects on first use, or when
:meth:`RedisStore.start` is called (also by ``with RedisStore(...) as store``); on the mirror
path ``start()`` also waits (at most ``startup_wait_ms``) for the mirror's first load.

Where it connects: a URL (``redis://``, ``rediss://``, ``unix://``, or ``redis+sentinel://`` for
a service behind Sentinel), a redis-py client, or a redis-py ``Sentinel`` and a service name
(:mod:`~rag_optimize.cache.redis.server`). With ``read_from_replicas`` lookups run on a replica
and changes are confirmed by the replicas (:mod:`~rag_optimize.cache.redis.replicas`).

Fails open: every Redis call has a short socket timeout (``timeout_ms``, default 50 ms), no
retries, and goes through a circuit breaker; any failure raises
:class:`~rag_optimize.errors.StoreError`, which :class:`SemanticCache` turns into a miss or a
dropped write. Each operation is a plan (:mod:`~rag_optimize.cache.redis.plans`) run by a sync
driver or an async driver (``redis.asyncio``, one client and connection pool per event loop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.keys import entry_id as exact_entry_id
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.codec import check_namespace, scope_digest
from rag_optimize.cache.redis.codes import LocalCodes
from rag_optimize.cache.redis.direct import aexecute, execute
from rag_optimize.cache.redis.marks import FlushTimer
from rag_optimize.cache.redis.mirrored import MirrorPath
from rag_optimize.cache.redis.options import (
    ConnectionOptions,
    MirrorOptions,
    SearchMode,
    check_count,
    check_ms,
    split_legacy,
)
from rag_optimize.cache.redis.plans import (
    Batch,
    Call,
    EntryRefused,
    ForeignDimension,
    Plan,
    Script,
    Shared,
    changes,
)
from rag_optimize.cache.redis.replicas import (
    ReplicaReads,
    arun_confirmed,
    replica_url,
    run_confirmed,
)
from rag_optimize.cache.redis.scripts import arun_script, run_script
from rag_optimize.cache.redis.server import (
    SENTINEL_SCHEME,
    SentinelSpec,
    ServerInfo,
    async_client,
    detect,
    is_cluster_client,
    parse_sentinel_url,
    redis_module,
    sentinel_clients,
    sentinel_of_client,
    sentinel_spec,
    sync_client,
)
from rag_optimize.cache.redis.vsets import Quantization, VectorSetPath
from rag_optimize.cache.store import StoreDefaults, StoreReport
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import (
    ConfigurationError,
    InvalidTypeError,
    InvalidVectorError,
    StoreError,
)

__all__ = ["RedisStore"]

T = TypeVar("T")
logger = logging.getLogger("rag_optimize.cache.redis")

_DEFAULT_MAX_VALUE_BYTES = 4 * 1024 * 1024


class RedisStore(StoreDefaults):
    """A :class:`~rag_optimize.cache.store.Store` on Redis, shared across processes.

    Args:
        url: ``redis://[user:password@]host:port/db``; ``rediss://`` for TLS. Any node of a
            Redis Cluster works (the store notices and uses a cluster client). Behind
            Sentinel: ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]``
            (Sentinel ports default to 26379; ``user:password`` are the master's and
            replicas'), the form RedisVL and LangChain use.
        namespace: prefix of every key; stores with different namespaces never see each
            other's entries. Letters, digits, ``_ . : -``.
        client: a ready redis-py client (``redis.Redis``, ``redis.cluster.RedisCluster`` or
            a ``Sentinel.master_for(...)`` client, sync) to use instead of ``url``; the caller
            keeps it (``close()`` leaves it open). Async calls then run the sync client in a
            worker thread.
        sentinel / service_name: a redis-py ``Sentinel`` (``redis.sentinel`` or
            ``redis.asyncio.sentinel``) and the name of the service it watches, instead of
            ``url``. The store reads the Sentinels' addresses and options from it and builds
            its own ``master_for`` (and ``replica_for``) clients, one set per event loop for
            the async API; the caller's object is left as it is. During a failover calls
            fail open (counted store errors, misses), and the store follows the new master
            without a restart.
        max_entries: capacity; past it the least recently used entry is evicted, atomically
            on the server. On the mirror path it bounds the namespace, on the server-side path
            each scope (one scope lives in one cluster slot). ``None``: unbounded.
        max_value_bytes: largest answer + metadata + query text (JSON bytes) an entry may
            carry; a bigger one is a dropped write (counted, logged), never sent to Redis.
        ttl_grace_ms: Redis TTL is the entry's TTL plus this grace; expiry is decided by
            the cache clock, Redis TTL only frees memory if nobody sweeps.
        search: ``"auto"`` (server-side when the server has vector sets, else the mirror),
            ``"server"`` (require it) or ``"mirror"``.
        quantization: how the server stores vectors for search (``"q8"``, ``"float32"``,
            ``"binary"``); candidates are always rescored exactly from the stored float32.
        exact_first: ``True`` (the default): the exact key is checked before the query is
            embedded, so an exact repeat never runs the model (two round trips for a
            semantic lookup on the server-side path: the exact check, then the search; one
            when the scope's local table never held the query's exact id, see
            :meth:`lookup_in_one_call`).
            ``False``, on the server-side path: the query is embedded first and one script
            checks the exact key and, only if it is absent, searches: one round trip per
            lookup, but every exact repeat pays an embedding. Worth it only when embedding
            is much cheaper than a round trip (an embedder with its own cache, say). The
            mirror path always checks the exact key first.
        local_codes: on the server-side path, keep per scope a local table of 1-bit codes
            of the scope's entries (about 65 bytes an entry at dim 384: 6.5 MB at 100k) and
            find a lookup's candidates there; the one script call then reads those
            candidates (rescored exactly from the stored float32, as always) and the entries
            written since, so the table is current as of every lookup. Until a scope's
            table is loaded (in the background) and whenever it is behind, the same call
            runs ``VSIM``. ``False``: ``VSIM`` only (no local memory per entry; for many
            scopes each looked up rarely). Off when ``read_from_replicas`` is on (a table
            read from the master could be ahead of a lagging replica).
        connection: :class:`~rag_optimize.cache.redis.options.ConnectionOptions` (timeouts,
            circuit breaker, extra client options, ``read_from_replicas``).
        mirror: :class:`~rag_optimize.cache.redis.options.MirrorOptions` (the mirror path).
        clock: wall-clock seconds used by the sweeper; must agree with the cache's clock.
        **legacy: the flat keywords of earlier versions (``timeout_ms``, ``staleness_ms``,
            ``index``, ...), folded into ``connection`` / ``mirror``.

    Consistency: Redis is the truth for answers. A deleted, invalidated, evicted or expired
    entry is never answered, in any process, at once (every hit is read from Redis in the
    lookup that serves it). On the server-side path a new entry is findable by every process
    at once; on the mirror path when the change log delivers it (about one round trip).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        namespace: str = "rag-optimize",
        *,
        client: Any = None,
        sentinel: Any = None,
        service_name: str | None = None,
        max_entries: int | None = 10_000,
        max_value_bytes: int = _DEFAULT_MAX_VALUE_BYTES,
        ttl_grace_ms: int = 60_000,
        search: SearchMode = "auto",
        quantization: Quantization = "q8",
        exact_first: bool = True,
        local_codes: bool = True,
        connection: ConnectionOptions | None = None,
        mirror: MirrorOptions | None = None,
        clock: Callable[[], float] = time.time,
        **legacy: Any,
    ) -> None:
        self.connection, self.mirror_options = split_legacy(connection, mirror, legacy)
        if client is None and sentinel is None and (
            not isinstance(url, str)
            or not url.startswith(("redis://", "rediss://", "unix://", SENTINEL_SCHEME))
        ):
            raise ConfigurationError(
                f"url must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}, "
                f"got {url!r}"
            )
        if client is not None and sentinel is not None:
            raise ConfigurationError("pass client= or sentinel=, not both")
        if service_name is not None and sentinel is None:
            raise ConfigurationError("service_name= goes with sentinel=; a Sentinel url "
                                     "names the service in its path")
        if search not in ("auto", "server", "mirror"):
            raise ConfigurationError(f"search must be 'auto', 'server' or 'mirror', got {search!r}")
        if quantization not in ("q8", "float32", "binary"):
            raise ConfigurationError(
                f"quantization must be 'q8', 'float32' or 'binary', got {quantization!r}"
            )
        if not isinstance(exact_first, bool):
            raise ConfigurationError(f"exact_first must be True or False, got {exact_first!r}")
        if not isinstance(local_codes, bool):
            raise ConfigurationError(f"local_codes must be True or False, got {local_codes!r}")
        if client is not None and not hasattr(client, "execute_command"):
            raise ConfigurationError(f"client must be a redis-py client, got {client!r}")
        self.url = url
        self._sentinel: SentinelSpec | None = None
        if sentinel is not None:
            self._sentinel = sentinel_spec(sentinel, service_name)
        elif client is not None:
            self._sentinel = sentinel_of_client(client)
        elif url.startswith(SENTINEL_SCHEME):
            self._sentinel = parse_sentinel_url(url)
        self.namespace = check_namespace(namespace)
        self.max_entries = (
            None if max_entries is None else check_count("max_entries", max_entries)
        )
        self.search_mode: SearchMode = search
        self.quantization: Quantization = quantization
        self.exact_first = exact_first
        self.local_codes = local_codes
        self._clock = clock
        self._shared = Shared(
            namespace=self.namespace,
            max_entries=self.max_entries,
            ttl_grace_ms=int(check_ms("ttl_grace_ms", ttl_grace_ms, allow_zero=True)),
            max_value_bytes=check_count("max_value_bytes", max_value_bytes, maximum=512 * 2**20),
        )
        self.timeout = self.connection.timeout
        self.connect_timeout = self.connection.connect_timeout
        self.breaker = CircuitBreaker(
            self.connection.failure_threshold, self.connection.cooldown_ms / 1000
        )
        self._options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "driver_info": None,  # no CLIENT SETINFO round trips on connect
            **self.connection.client_options,
        }
        self._given_client = client
        self._client: Any = None
        self._replicas = ReplicaReads(
            self.connection.read_from_replicas,
            self.connection.replica_wait_ms,
            CircuitBreaker(1, self.connection.cooldown_ms / 1000),
            self.connection.cooldown_ms / 1000,
        )
        # with replica reads: a replica client for lookups, and a master client for changes
        # whose socket timeout covers the replicas' confirmation (WAIT); per loop for async
        self._reader: Any = None
        self._writer: Any = None
        self._aextras: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, Any]
        ] = weakref.WeakKeyDictionary()
        self._server: ServerInfo | None = None
        self._path: VectorSetPath | MirrorPath | None = None
        self._start_lock = threading.Lock()
        self._start_incidents = IncidentLog(logger, f"RedisStore {self.namespace!r} start")
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._aclients_lock = threading.Lock()
        self._agenerations: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._pool_generation = 0
        self._closed = False
        # entries served and not yet marked used: written within a second (cache/redis/marks.py)
        self._marks_timer = FlushTimer(self._flush_marks)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> RedisStore:
        """Connect, detect the server and pick the search path; on the mirror path start the
        change-log thread and wait (at most ``startup_wait_ms``) for the first load.

        Idempotent. An unreachable Redis is not an error here (the cache stays cold until it
        answers); a server that cannot serve the configuration (``search="server"`` without
        vector sets, a cluster without them) raises :class:`ConfigurationError`."""
        try:
            path = self._ensure_path()
        except ConfigurationError:
            raise
        except StoreError:
            return self
        if isinstance(path, MirrorPath) and self.mirror_options.startup_wait_ms > 0:
            path.wait_loaded(self.mirror_options.startup_wait_ms / 1000)
        return self

    @property
    def server(self) -> ServerInfo | None:
        """What the server turned out to be (``None`` until the store has connected)."""
        return self._server

    @property
    def combined_lookup(self) -> bool:
        """Whether every lookup goes through :meth:`lookup` in one round trip (the
        server-side path, started, with ``exact_first=False``). No I/O."""
        return not self.exact_first and isinstance(self._path, VectorSetPath)

    def lookup_in_one_call(self, scope: str, query_key: str, partition: str = "") -> bool:
        """Whether :class:`SemanticCache` should embed this query first and call
        :meth:`lookup` (one round trip) instead of :meth:`get_exact`, then the model, then
        :meth:`search`. Always on the server-side path with ``exact_first=False``. With
        ``exact_first`` (the default), when this process's local table of the scope is
        loaded and never held an entry with the query's exact id: the exact key is then absent
        unless written since this process's last lookup in the scope, and the one call
        checks it first anyway, so such an entry is still served exactly (only the
        embedding is spent), while a semantic lookup saves a round trip. No I/O."""
        if self.combined_lookup:
            return True
        path = self._path
        if not isinstance(path, VectorSetPath) or path.codes is None:
            return False
        held = path.codes.may_hold(
            scope_digest(scope), partition, exact_entry_id(scope, query_key, partition)
        )
        return held is False

    @property
    def search_path(self) -> str | None:
        """``"server"`` or ``"mirror"`` once started, else ``None``."""
        if self._path is None:
            return None
        return "server" if isinstance(self._path, VectorSetPath) else "mirror"

    def close(self) -> None:
        """Stop the change-log thread (if any) and close the connections (idempotent); a
        client passed in by the caller stays open."""
        if self._closed:
            return
        self._marks_timer.stop()
        path = self._path
        if path is not None and self._client is not None:
            self._write_marks()  # entries served and not yet marked used: marked now
        self._closed = True
        if isinstance(path, MirrorPath):
            path.stop()
        if isinstance(path, VectorSetPath) and path.codes is not None:
            path.codes.stop()
        for own in (self._client, self._reader, self._writer):
            if own is not None and own is not self._given_client:
                try:
                    own.close()
                except Exception:  # noqa: BLE001, S110 - closing a dead connection
                    pass
        with self._aclients_lock:
            self._aclients.clear()
            self._aextras.clear()

    async def aclose(self) -> None:
        """Close this event loop's async client, then everything else."""
        loop = asyncio.get_running_loop()
        if self._path is not None and not self._closed and loop in self._aclients:
            try:  # as close() does, on this loop's client
                await self._adrive(lambda p: p.flush_touches())
            except Exception:  # noqa: BLE001 - closing: an LRU mark lost, nothing else
                logger.debug("RedisStore %r: LRU marks not written at close", self.namespace)
        for client in (self._aclients.get(loop), *self._aextras.get(loop, ())):
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # noqa: BLE001, S110 - closing a dead connection
                    pass
        self.close()

    def __enter__(self) -> RedisStore:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisStore:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int | None:
        """Dimension of the vectors this store has written (no I/O; ``None`` before its
        first write). Vectors of another dimension found in the namespace (another model's
        cache) are not this process's error: they make counted, logged misses."""
        return self._shared.own_dim

    @property
    def namespace_dim(self) -> int | None:
        """Dimension of the vectors the namespace holds, as last seen (read at start; no
        I/O here), whoever wrote them."""
        return self._shared.dim

    def drain_report(self) -> StoreReport:
        """What the change-log thread noticed since the last call (entries it swept as
        expired, corrupt records it skipped while loading), handed over once."""
        return self._shared.background.drain()

    def wait_synced(self, timeout: float = 5.0) -> bool:
        """Start if needed; on the mirror path block (at most ``timeout`` seconds) until the
        mirror reflects every change made before this call, by any process: a write another
        process finished is then found by a semantic lookup here. Returns whether it does
        (always true on the server-side path once connected: it has no mirror)."""
        deadline = time.monotonic() + timeout
        self.start()
        path = self._path
        if path is None:
            return False
        if not isinstance(path, MirrorPath):
            return True
        if not path.wait_loaded(timeout):
            return False
        try:
            head = self._drive(lambda p: cast(MirrorPath, p).head())
        except StoreError:
            return False
        return path.follower.wait_applied(head, max(0.0, deadline - time.monotonic()))

    def status(self) -> dict[str, Any]:
        """Diagnostics: search path, server, breaker state, and the mirror's state."""
        out: dict[str, Any] = {
            "search_path": self.search_path,
            "server": None if self._server is None else self._server.version,
            "breaker": self.breaker.state,
        }
        if self._replicas.enabled:
            out.update(self._replicas.status())
        if isinstance(self._path, MirrorPath):
            out.update(self._path.status())
        if isinstance(self._path, VectorSetPath) and self._path.codes is not None:
            out.update(self._path.codes.status())
        return out

    def search_module(self) -> bool:
        """Whether the server has the Query Engine (``FT.*``). Informational: the server-side
        path uses vector sets (see BENCHMARKS.md for why), the mirror path needs neither."""
        try:
            self._ensure_path()
        except (StoreError, ConfigurationError):
            return False
        return bool(self._server and self._server.search_module)

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
        _check_str("scope", scope)
        _check_str("query_key", query_key)
        return self._drive(lambda p: p.get_exact(scope, query_key, now, partition, report))

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
        """Nearest entries of ``scope`` and ``partition``: one round trip on the server-side
        path; from the local mirror on the mirror path (plus one round trip to rescore with
        ``storage="int8"``; raises :class:`StoreError` while Redis is known to be failing:
        every candidate would need a fetch from Redis anyway)."""
        path = self._ensure_path()
        if isinstance(path, MirrorPath):
            self._check_healthy()
            return self._drive(lambda _p: path.search(scope, vector, k, now, partition))
        return self._drive(
            lambda p: cast(VectorSetPath, p).search(scope, vector, k, now, partition, report)
        )

    def lookup(
        self,
        scope: str,
        query_key: str,
        vector: FloatVector,
        k: int,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> tuple[CacheEntry | None, list[Candidate]]:
        """``(entry, [])`` when ``query_key`` has a live entry (as :meth:`get_exact`), else
        ``(None, candidates)`` (as :meth:`search`): on the server-side path one script call
        that checks the exact key first and searches only when it is absent; on the mirror
        path the two calls in turn."""
        _check_str("scope", scope)
        _check_str("query_key", query_key)
        path = self._ensure_path()
        if isinstance(path, VectorSetPath):
            return self._drive(
                lambda p: cast(VectorSetPath, p).lookup(
                    scope, query_key, vector, k, now, partition, report
                )
            )
        entry = self.get_exact(scope, query_key, now, partition=partition, report=report)
        if entry is not None:
            return entry, []
        return None, self.search(scope, vector, k, now, partition=partition, report=report)

    def fetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """The full entry from Redis (touches its LRU time), ``None`` if gone/expired."""
        _check_str("entry_id", entry_id)
        return self._drive(lambda p: p.fetch(entry_id, now, report))

    def put(self, entry: CacheEntry, now: float, *, report: StoreReport | None = None) -> None:
        """Insert or replace ``entry`` (also how a changed threshold is published)."""
        self._drive(lambda p: p.put(entry, now, report))

    def delete(self, entry_ids: list[str]) -> int:
        """Remove these entries everywhere; returns how many existed."""
        ids = _check_ids(entry_ids)
        return self._drive(lambda p: p.delete(ids))

    def invalidate(self, scope: str) -> int:
        """Remove every entry of ``scope`` in every process; returns how many."""
        _check_str("scope", scope)
        return self._drive(lambda p: p.invalidate(scope))

    def delete_where(self, scope: str | None, metadata_key: str, values: list[str]) -> int:
        """Remove entries whose ``metadata[metadata_key]`` is or contains one of ``values``
        (server-side, in chunks); returns how many."""
        _check_where(scope, metadata_key, values)
        return self._drive(lambda p: p.delete_where(scope, metadata_key, list(values)))

    def clear(self) -> None:
        """Remove every key of the namespace (every process sees it at once)."""
        self._drive(lambda p: p.clear())

    def count(self) -> int:
        """Entries in the namespace (entries past their TTL count until swept)."""
        return int(self._drive(lambda p: p.count()))

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
        _check_str("scope", scope)
        _check_str("query_key", query_key)
        return await self._adrive(
            lambda p: p.get_exact(scope, query_key, now, partition, report), lookup=True
        )

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
        """Async twin of :meth:`search`."""
        path = await self._aensure_path()
        if isinstance(path, MirrorPath):
            if not path.follower.wait_loaded(0):  # may wait for the first load: off the loop
                await asyncio.to_thread(
                    path.wait_loaded, self.mirror_options.startup_wait_ms / 1000
                )
            self._check_healthy()
            # the mirror's search runs inline (in-process numpy); int8's rescoring is awaited;
            # wait=False: never wait for the load again on the loop (a counted error instead)
            return await self._adrive(
                lambda _p: path.search(scope, vector, k, now, partition, wait=False),
                lookup=True,
            )
        return await self._adrive(
            lambda p: cast(VectorSetPath, p).search(scope, vector, k, now, partition, report),
            lookup=True,
        )

    async def alookup(
        self,
        scope: str,
        query_key: str,
        vector: FloatVector,
        k: int,
        now: float,
        *,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> tuple[CacheEntry | None, list[Candidate]]:
        """Async twin of :meth:`lookup`."""
        _check_str("scope", scope)
        _check_str("query_key", query_key)
        path = await self._aensure_path()
        if isinstance(path, VectorSetPath):
            return await self._adrive(
                lambda p: cast(VectorSetPath, p).lookup(
                    scope, query_key, vector, k, now, partition, report
                ),
                lookup=True,
            )
        entry = await self.aget_exact(scope, query_key, now, partition=partition, report=report)
        if entry is not None:
            return entry, []
        return None, await self.asearch(scope, vector, k, now, partition=partition, report=report)

    async def afetch(
        self, entry_id: str, now: float, *, report: StoreReport | None = None
    ) -> CacheEntry | None:
        """Async twin of :meth:`fetch`."""
        _check_str("entry_id", entry_id)
        return await self._adrive(lambda p: p.fetch(entry_id, now, report), lookup=True)

    async def aput(
        self, entry: CacheEntry, now: float, *, report: StoreReport | None = None
    ) -> None:
        """Async twin of :meth:`put`."""
        await self._adrive(lambda p: p.put(entry, now, report), lookup=True)

    async def adelete(self, entry_ids: list[str]) -> int:
        """Async twin of :meth:`delete`."""
        ids = _check_ids(entry_ids)
        return await self._adrive(lambda p: p.delete(ids))

    async def ainvalidate(self, scope: str) -> int:
        """Async twin of :meth:`invalidate`."""
        _check_str("scope", scope)
        return await self._adrive(lambda p: p.invalidate(scope))

    async def adelete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> int:
        """Async twin of :meth:`delete_where`."""
        _check_where(scope, metadata_key, values)
        return await self._adrive(lambda p: p.delete_where(scope, metadata_key, list(values)))

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self._adrive(lambda p: p.clear())

    async def acount(self) -> int:
        """Async twin of :meth:`count`."""
        return int(await self._adrive(lambda p: p.count()))

    # ---------------------------------------------------------------- starting
    def _ensure_path(self) -> VectorSetPath | MirrorPath:
        """The search path, connecting first if needed (thread-safe; fails open)."""
        path = self._path
        if path is not None:
            return path
        self._check_open()
        with self._start_lock:
            if self._path is not None:
                return self._path
            if not self.breaker.allow():
                raise StoreError(
                    f"Redis circuit open for {self.breaker.cooldown:.1f}s after failures"
                )
            try:
                client, reader, writer = self._connect()
                info = detect(client)
                if info.cluster and self._replicas.enabled:
                    raise ConfigurationError(
                        "read_from_replicas is not supported on a Redis Cluster: a change "
                        "cannot be confirmed by the replicas of its slot through the cluster "
                        "client, so a replica could answer an invalidated entry"
                    )
                if info.cluster and not is_cluster_client(client):
                    if client is not self._given_client:
                        client.close()
                    client = sync_client(self.url, self._options, cluster=True)
                if self._replicas.enabled:
                    self._replicas.online(self._role(client))
                    if reader is None:
                        reader = self._plain_reader(client)
                self._client, self._reader, self._writer = client, reader, writer
                self._server = info
                path = self._make_path(client, info)
                path.marks.on_add = self._marks_timer.poke
            except ConfigurationError:
                raise
            except Exception as exc:  # noqa: BLE001 - unreachable, denied, TLS...: fail open
                self._failed()
                self._start_incidents.failure(exc)
                raise StoreError(f"Redis {type(exc).__name__}: {exc}") from exc
            self.breaker.success()
            self._start_incidents.success()
            self._path = path
            return path

    def _role(self, client: Any) -> Any:
        """The master's ``ROLE`` reply, or ``None`` when the user may not run it (then no
        replica reads: without it the store cannot know which replicas confirm changes)."""
        from redis.exceptions import ResponseError

        try:
            return client.execute_command("ROLE")
        except ResponseError as exc:  # e.g. NOPERM for a least-privilege ACL user
            self._role_refused(exc)
            return None

    def _role_refused(self, exc: Exception) -> None:
        self._replicas.role_refused = True
        logger.warning("RedisStore %r reads from the master: ROLE refused (%s)",
                       self.namespace, exc)

    def _recheck_replicas(self) -> None:
        """:meth:`ReplicaReads.role_due`: ask ``ROLE`` again; for a plain master, open the
        replica client once a replica is listed. A fault here only leaves reads on the
        master (the lookup that follows meets it, if it lasts)."""
        try:
            self._replicas.online(self._role(self._client))
        except Exception:  # noqa: BLE001 - unreachable master: the lookup reports it
            self._replicas.online(None)
            return
        if self._reader is None and self._sentinel is None:
            with self._start_lock:
                if self._reader is None:
                    self._reader = self._plain_reader(self._client)

    async def _arecheck_replicas(self, client: Any, reader: Any, writer: Any) -> Any:
        """Async twin of :meth:`_recheck_replicas`; returns this loop's replica client."""
        from redis.exceptions import ResponseError

        try:
            role = await client.execute_command("ROLE")
        except ResponseError as exc:
            self._role_refused(exc)
            role = None
        except Exception:  # noqa: BLE001 - unreachable master: the lookup reports it
            role = None
        self._replicas.online(role)
        address = self._replicas.address
        if reader is None and self._sentinel is None and address is not None:
            reader = async_client(replica_url(self.url, *address), self._options, cluster=False)
            self._aextras[asyncio.get_running_loop()] = (reader, writer)
        return reader

    @property
    def _writer_options(self) -> dict[str, Any]:
        """Client options for changes confirmed by the replicas: ``WAIT`` blocks up to
        ``timeout_ms`` and Redis checks it on its timer (100 ms at the default ``hz 10``)."""
        return {**self._options, "socket_timeout": 2 * self.timeout + 0.25}

    def _connect(self) -> tuple[Any, Any, Any]:
        """The sync master client, and with replica reads the replica and writer clients
        (the replica one found by Sentinel; for a plain master, once ``ROLE`` answered)."""
        enabled = self._replicas.enabled
        if self._sentinel is not None and (self._given_client is None or enabled):
            master, reader = sentinel_clients(self._sentinel, self._options, replicas=enabled)
            writer = None
            if enabled:
                writer = sentinel_clients(self._sentinel, self._writer_options, replicas=False)[0]
            if self._given_client is not None:  # the caller's client; ours only read/confirm
                master.close()
                master = self._given_client
            return master, reader, writer
        if self._given_client is not None:
            writer = None
            if enabled:
                writer = _pool_client(
                    self._given_client, {"socket_timeout": self._writer_options["socket_timeout"]}
                )
            return self._given_client, None, writer
        master = sync_client(self.url, self._options, cluster=False)
        writer = sync_client(self.url, self._writer_options, cluster=False) if enabled else None
        return master, None, writer

    def _plain_reader(self, client: Any) -> Any:
        """A client for the master's first online replica (found with ``ROLE``), or ``None``."""
        address = self._replicas.address
        if address is None:
            return None
        if self._given_client is None:
            return sync_client(replica_url(self.url, *address), self._options, cluster=False)
        return _pool_client(client, {"host": address[0], "port": address[1]})

    def _make_path(self, client: Any, info: ServerInfo) -> VectorSetPath | MirrorPath:
        if info.vector_sets and self.search_mode != "mirror":
            codes = None
            if self.local_codes and not self._replicas.enabled:
                codes = self._local_codes(info)
            vsets = VectorSetPath(
                self._shared, self.quantization, codes,
                touch_on_lookups=not self._replicas.enabled,
            )
            vsets.load_dim(client)
            if vsets.codes is not None:  # a store dropped without close() stops its thread
                weakref.finalize(self, vsets.codes.stop)
            return vsets
        if self.search_mode == "server":
            raise ConfigurationError(
                f"search='server' needs vector sets (Redis 8+); {info.version} has none"
            )
        if info.cluster:
            raise ConfigurationError(
                "a Redis Cluster needs vector sets (Redis 8+) for this store: the mirror "
                f"path keeps a namespace in one slot; {info.version} has none"
            )
        path = MirrorPath(
            self._shared,
            self.mirror_options,
            self._follower_client(client),
            self.breaker,
            timeout=self.timeout,
            clock=self._clock,
            replica_reads=self._replicas.enabled,
        )
        path.start()
        # a store dropped without close() still stops its thread when collected
        weakref.finalize(self, path.follower.stop, 0.0)
        return path

    def _local_codes(self, info: ServerInfo) -> Callable[[VectorSetPath], LocalCodes]:
        """How the server path makes its local tables: a loader thread with its own client
        (generous timeouts; a page is up to a few MB), made on the thread when first needed."""
        options = {
            **self._options,
            "socket_timeout": max(self.timeout, 5.0),
            "socket_connect_timeout": max(self.connect_timeout, 1.0),
        }
        given = self._given_client

        def connect() -> Any:
            if given is not None:
                return _Borrowed(given)
            if self._sentinel is not None:
                return sentinel_clients(self._sentinel, options, replicas=False)[0]
            return sync_client(self.url, options, cluster=info.cluster)

        def make(path: VectorSetPath) -> LocalCodes:
            return LocalCodes(
                path.page, connect, self._run, self.namespace, path.repair, path.listed,
                path.repair_ids,
            )

        return make

    def _follower_client(self, client: Any) -> Any:
        """A second connection for the change-log thread: generous timeouts, nobody waits."""
        options = {
            **self._options,
            "socket_timeout": self.mirror_options.staleness + max(self.timeout, 1.0),
            "socket_connect_timeout": max(self.connect_timeout, 1.0),
        }
        if self._sentinel is not None:
            return sentinel_clients(self._sentinel, options, replicas=False)[0]
        if self._given_client is None:
            return sync_client(self.url, options, cluster=False)
        return _pool_client(client, {k: options[k] for k in (
            "socket_timeout", "socket_connect_timeout")})

    async def _aensure_path(self) -> VectorSetPath | MirrorPath:
        path = self._path
        if path is not None:
            return path
        return await asyncio.to_thread(self._ensure_path)  # connecting is blocking I/O

    def _flush_marks(self) -> None:
        """The marks' timer fired: write every pending mark (none while Redis is failing: they
        wait for the next call, and a background call never counts against the breaker
        while the user's calls already meet the fault)."""
        if not self._closed and self._path is not None and self.breaker.healthy:
            self._write_marks()

    def _write_marks(self) -> None:
        """Write every pending LRU mark (cache/redis/marks.py); a failure loses a mark,
        nothing else."""
        try:
            self._drive(lambda p: p.flush_touches())
        except Exception:  # noqa: BLE001 - an LRU mark lost, nothing else
            logger.debug("RedisStore %r: LRU marks not written", self.namespace)

    # ----------------------------------------------------------------- drivers
    def _drive(self, make: Callable[[VectorSetPath | MirrorPath], Plan[T]]) -> T:
        plan = make(self._ensure_path())
        started, call = self._start(plan)
        if not started:
            return cast(T, call)
        if self._replicas.role_due():
            self._recheck_replicas()
        with self._outcome():
            while True:
                reply = self._call(call)
                try:
                    call = plan.send(reply)
                except StopIteration as done:
                    return cast(T, done.value)

    async def _adrive(
        self, make: Callable[[VectorSetPath | MirrorPath], Plan[T]], *, lookup: bool = False
    ) -> T:
        path = await self._aensure_path()
        if self._given_client is not None:  # the caller's sync client: run it off the loop
            return await asyncio.to_thread(self._drive, lambda _p: make(path))
        plan = make(path)
        started, call = self._start(plan)
        if not started:
            return cast(T, call)
        # lookups get an overall deadline too (socket timeouts bound each round trip)
        budget = self.connect_timeout + 3 * self.timeout if lookup else None
        with self._outcome():
            steps = self._asteps(plan, call)
            return await (steps if budget is None else asyncio.wait_for(steps, budget))

    async def _asteps(self, plan: Plan[T], call: Call) -> T:
        client = self._aclient()
        if self._agenerations.get(client) != self._pool_generation:
            self._agenerations[client] = self._pool_generation
            await client.connection_pool.disconnect(inuse_connections=False)
        reader, writer = self._aextras.get(asyncio.get_running_loop(), (None, None))
        if self._replicas.role_due():
            reader = await self._arecheck_replicas(client, reader, writer)
        while True:
            reply = await self._acall(client, reader, writer, call)
            try:
                call = plan.send(reply)
            except StopIteration as done:
                return cast(T, done.value)

    def _call(self, call: Call) -> Any:
        """Run one call of a plan: a lookup on a replica when replica reads are on (falling
        back to the master if the replica fails); a change on the master, confirmed by the
        replicas when they serve reads."""
        replicas = self._replicas
        if self._reader is not None and replicas.use_replica(call):
            try:
                reply = self._run(self._reader, call, read_only=True)
            except Exception as exc:  # noqa: BLE001 - a failing replica: ask the master
                replicas.failed(exc)
            else:
                replicas.served()
                return reply
        if replicas.enabled and changes(call):
            wanted = replicas.expected
            return replicas.confirmed(wanted, *run_confirmed(
                self._writer or self._client, call, wanted, replicas.wait_ms
            ))
        return self._run(self._client, call)

    async def _acall(self, client: Any, reader: Any, writer: Any, call: Call) -> Any:
        """Async twin of :meth:`_call`."""
        replicas = self._replicas
        if reader is not None and replicas.use_replica(call):
            try:
                reply = await self._arun(reader, call, read_only=True)
            except Exception as exc:  # noqa: BLE001 - a failing replica: ask the master
                replicas.failed(exc)
            else:
                replicas.served()
                return reply
        if replicas.enabled and changes(call):
            wanted = replicas.expected
            return replicas.confirmed(wanted, *await arun_confirmed(
                writer or client, call, wanted, replicas.wait_ms
            ))
        return await self._arun(client, call)

    @staticmethod
    def _run(client: Any, call: Call, *, read_only: bool = False) -> Any:
        if isinstance(call, Script):
            return run_script(client, call.script, call.keys, call.args, read_only=read_only)
        if isinstance(call, Batch):
            pipe = client.pipeline(transaction=False)
            for command in call.commands:
                pipe.execute_command(*command)
            return pipe.execute()
        return execute(client, *call.args)

    @staticmethod
    async def _arun(client: Any, call: Call, *, read_only: bool = False) -> Any:
        if isinstance(call, Script):
            return await arun_script(
                client, call.script, call.keys, call.args, read_only=read_only
            )
        if isinstance(call, Batch):
            pipe = client.pipeline(transaction=False)
            for command in call.commands:
                pipe.execute_command(*command)
            return await pipe.execute()
        return await aexecute(client, *call.args)

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
        becomes :class:`StoreError`. A foreign dimension or a refused entry is the data's
        fault, not the server's: the breaker counts a success."""
        try:
            yield
        except (ForeignDimension, EntryRefused, InvalidVectorError):
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
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None and self._client is not self._given_client:
                try:
                    pool.disconnect(inuse_connections=False)
                except Exception:  # noqa: BLE001, S110 - best effort on a failing pool
                    pass

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            with self._aclients_lock:
                client = self._aclients.get(loop)
                if client is None:
                    client, reader, writer = self._aconnect()
                    self._aclients[loop] = client
                    if reader is not None or writer is not None:
                        self._aextras[loop] = (reader, writer)
                    self._agenerations[client] = self._pool_generation
        return client

    def _aconnect(self) -> tuple[Any, Any, Any]:
        """This event loop's master, replica and writer clients (see :meth:`_connect`)."""
        enabled = self._replicas.enabled
        if self._sentinel is not None:
            client, reader = sentinel_clients(
                self._sentinel, self._options, replicas=enabled, asynchronous=True
            )
            writer = None
            if enabled:
                writer = sentinel_clients(
                    self._sentinel, self._writer_options, replicas=False, asynchronous=True
                )[0]
            return client, reader, writer
        cluster = bool(self._server and self._server.cluster)
        client = async_client(self.url, self._options, cluster=cluster)
        address = self._replicas.address if self._reader is not None else None
        reader = writer = None
        if address is not None:
            reader = async_client(replica_url(self.url, *address), self._options, cluster=False)
        if enabled:
            writer = async_client(self.url, self._writer_options, cluster=False)
        return client, reader, writer

    # ---------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("RedisStore is closed")

    def _check_healthy(self) -> None:
        """Fail a locally answered call when Redis is known to be down (see :meth:`search`)."""
        if not self.breaker.healthy:
            raise StoreError("Redis is failing: its last call failed or the circuit is open")

    @property
    def _mirror(self) -> Any:
        """The local mirror on the mirror path (tests and diagnostics)."""
        return self._path.mirror if isinstance(self._path, MirrorPath) else None

    @property
    def _follower(self) -> Any:
        return self._path.follower if isinstance(self._path, MirrorPath) else None


class _Borrowed:
    """The caller's client, used by the store's own threads: ``close()`` leaves it open."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        """Nothing: the caller keeps its client."""


def _pool_client(client: Any, overrides: dict[str, Any]) -> Any:
    """A new ``redis.Redis`` on a pool like ``client``'s (same class, options, TLS, auth),
    with ``overrides`` (another host, other timeouts)."""
    redis = redis_module()
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **overrides}
    return redis.Redis(connection_pool=type(pool)(pool.connection_class, **kwargs))


def _check_where(scope: object, metadata_key: object, values: object) -> None:
    if scope is not None:
        _check_str("scope", scope)
    if not isinstance(metadata_key, str) or not isinstance(values, (list, tuple)) or not all(
        isinstance(v, str) for v in values
    ):
        raise InvalidTypeError(
            "delete_where needs a str metadata_key and a list of str values, got "
            f"{metadata_key!r} and {values!r}"
        )


def _check_str(name: str, value: object) -> None:
    """Raise :class:`InvalidTypeError` (also a ``TypeError``) unless ``value`` is a str."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")


def _check_ids(entry_ids: object) -> list[str]:
    if isinstance(entry_ids, str) or not isinstance(entry_ids, (list, tuple)):
        raise InvalidTypeError(f"entry_ids must be a list of str, got {entry_ids!r}")
    for entry_id in entry_ids:
        _check_str("each entry id", entry_id)
    return list(entry_ids)
