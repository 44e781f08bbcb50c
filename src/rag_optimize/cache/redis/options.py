"""The options of :class:`~rag_optimize.cache.redis.store.RedisStore`, grouped and validated.

A store has three kinds of settings: how it talks to Redis (:class:`ConnectionOptions`: timeouts
and the circuit breaker), how the in-process mirror behaves on servers without vector search
(:class:`MirrorOptions`), and what it stores (capacity, TTL grace, largest answer; plain keywords
of the store). Every number is checked here, once: a NaN, an infinity, a fraction where a count is
meant or an absurd magnitude raises :class:`~rag_optimize.errors.ConfigurationError` naming the
option and the value, at construction, never later from a lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rag_optimize.cache.vector_table import IndexKind
from rag_optimize.errors import ConfigurationError
from rag_optimize.index.engine import Storage

__all__ = [
    "ConnectionOptions",
    "MirrorOptions",
    "SearchMode",
    "check_count",
    "check_ms",
]

#: ``"auto"``: search on the server when it has vector sets (Redis 8+), else the mirror;
#: ``"server"``: require server-side search; ``"mirror"``: always the in-process mirror.
SearchMode = Literal["auto", "server", "mirror"]

_MAX_MS = 86_400_000.0  # one day: longer than any sane timeout or interval
_MAX_COUNT = 2**40


def check_ms(name: str, value: object, *, minimum: float = 0.0, allow_zero: bool = False) -> float:
    """``value`` as finite milliseconds in ``(minimum, one day]`` (``[0, ...]`` if
    ``allow_zero``); raises :class:`ConfigurationError` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of milliseconds, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    low_ok = number >= minimum if allow_zero else number > minimum
    if not low_ok or number > _MAX_MS:
        bound = ">=" if allow_zero else ">"
        raise ConfigurationError(
            f"{name} must be {bound} {minimum:g} and at most {_MAX_MS:g} ms, got {value!r}"
        )
    return number


def check_count(
    name: str, value: object, *, minimum: int = 1, maximum: int = _MAX_COUNT
) -> int:
    """``value`` as a whole number in ``[minimum, maximum]``: an ``int`` (or a float that is
    exactly whole, e.g. ``1e4``); NaN, fractions and booleans raise :class:`ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ConfigurationError(f"{name} must be in [{minimum}, {maximum}], got {value!r}")
    return number


@dataclass(frozen=True)
class ConnectionOptions:
    """How the store talks to Redis.

    Args:
        timeout_ms: socket timeout of every round trip (connect too, unless
            ``connect_timeout_ms``): the longest a request waits for the cache per call.
        connect_timeout_ms: socket connect timeout (default: ``timeout_ms``).
        failure_threshold / cooldown_ms: circuit breaker: after this many consecutive
            failures, stop calling Redis for this long, then let one probe through.
        client_options: extra keyword arguments for ``redis.Redis.from_url`` (or
            ``RedisCluster.from_url``, or Sentinel's ``master_for``), e.g. ``ssl_ca_certs``.
        read_from_replicas: send lookups (exact reads, server-side searches, the mirror's
            rescoring reads) to a replica while every change goes to the master. Each change
            then waits (``WAIT``, at most ``timeout_ms``, which Redis checks on its timer:
            up to 100 ms more at the default ``hz 10``) until the master's online
            replicas have it, so when a write or an invalidation returns, the replicas
            answer as the master does. If they do not confirm in time, this process reads
            from the master for ``cooldown_ms`` (its own changes are always read back), and
            other processes may read the replica's older state until it catches up (a few
            ms of replication lag; see the README). A replica that fails or times out is
            skipped for ``cooldown_ms`` and the read goes to the master: a failing replica
            never fails a lookup and never opens the circuit breaker. Plain master+replica
            (replicas found with ``ROLE`` at start) and Sentinel; not a Redis Cluster.
    """

    timeout_ms: float = 50
    connect_timeout_ms: float | None = None
    failure_threshold: int = 3
    cooldown_ms: float = 1000
    client_options: dict[str, Any] = field(default_factory=dict)
    read_from_replicas: bool = False

    def __post_init__(self) -> None:
        check_ms("timeout_ms", self.timeout_ms)
        if self.connect_timeout_ms is not None:
            check_ms("connect_timeout_ms", self.connect_timeout_ms)
        check_count("failure_threshold", self.failure_threshold, maximum=1_000_000)
        check_ms("cooldown_ms", self.cooldown_ms)
        if not isinstance(self.client_options, dict):
            raise ConfigurationError(
                f"client_options must be a dict, got {type(self.client_options).__name__}"
            )
        if not isinstance(self.read_from_replicas, bool):
            raise ConfigurationError(
                f"read_from_replicas must be True or False, got {self.read_from_replicas!r}"
            )

    @property
    def timeout(self) -> float:
        """Socket timeout in seconds."""
        return float(self.timeout_ms) / 1000

    @property
    def connect_timeout(self) -> float:
        """Connect timeout in seconds."""
        ms = self.timeout_ms if self.connect_timeout_ms is None else self.connect_timeout_ms
        return float(ms) / 1000

    @property
    def replica_wait_ms(self) -> int:
        """How long a change waits for the replicas to confirm it (``WAIT``), in ms: the
        socket timeout (changes use a connection whose timeout covers it)."""
        return max(1, int(self.timeout_ms))


@dataclass(frozen=True)
class MirrorOptions:
    """The in-process vector mirror, used when the server has no vector search (Redis <= 7.4,
    Valkey without search) or when ``search="mirror"``.

    Args:
        staleness_ms: how long the change-log reader blocks per ``XREAD``; a mirror not
            confirmed for ``staleness_ms + timeout_ms + 250 ms`` is reported as not fresh
            (``status()["mirror_fresh"]``). Exact lookups always ask Redis.
        index: the mirror's vector search: ``"auto"`` (an exact scan while a scope is small,
            1-bit codes with rescoring above, see :class:`~rag_optimize.cache.vector_table.
            VectorTable`), ``"exact"`` or ``"ann"`` (usearch HNSW).
        storage: how the mirror holds each vector: ``"int8"`` (one byte per dimension plus
            a scale per entry: about a quarter of the raw float32; the few candidates of a
            lookup are then rescored exactly from the float32 stored in Redis, in one
            pipelined round trip, so the quantization can cost a missed candidate but never
            change a decision) or ``"float32"`` (the raw vectors; no extra round trip).
            Measured replica RSS at 100k x 384 (BENCHMARKS.md, issue 14): int8 0.48x the
            raw float32 vectors, float32 1.19x.
        stream_maxlen: approximate length of the change log; a reader further behind reloads.
        sweep_interval_ms: how often this process deletes expired entries from Redis.
        startup_wait_ms: the longest a semantic lookup waits for the first load of the
            mirror (by :meth:`RedisStore.start` or the first lookup); past it the lookup is a
            counted, logged store error (a miss), never a silent one. Exact lookups ask Redis
            and hit during the load. The wait runs off the event loop for async lookups.
            Measured on a shared 2-core machine: 100k entries at dim 384 load in 3-6 s at
            load average 9-14 (BENCHMARKS.md), so the default covers a namespace of that size
            only on a quiet machine. It stays short on purpose (a lookup should not wait
            longer than the model call a miss costs); to serve no misses from a new
            replica, call :meth:`RedisStore.wait_synced` (with a longer timeout) before it
            takes traffic.
    """

    staleness_ms: float = 50
    index: IndexKind = "auto"
    storage: Storage = "int8"
    stream_maxlen: int = 10_000
    sweep_interval_ms: float = 1000
    startup_wait_ms: float = 2000

    def __post_init__(self) -> None:
        check_ms("staleness_ms", self.staleness_ms)
        if self.index not in ("auto", "exact", "ann"):
            raise ConfigurationError(
                f"index must be 'auto', 'exact' or 'ann', got {self.index!r}"
            )
        if self.storage not in ("int8", "float32"):
            raise ConfigurationError(
                f"storage must be 'int8' or 'float32', got {self.storage!r}"
            )
        check_count("stream_maxlen", self.stream_maxlen, minimum=100, maximum=100_000_000)
        check_ms("sweep_interval_ms", self.sweep_interval_ms)
        check_ms("startup_wait_ms", self.startup_wait_ms, allow_zero=True)

    @property
    def staleness(self) -> float:
        """``staleness_ms`` in seconds."""
        return float(self.staleness_ms) / 1000


#: Keywords of the old flat constructor and the group each now belongs to.
LEGACY_CONNECTION = ("timeout_ms", "connect_timeout_ms", "failure_threshold", "cooldown_ms",
                     "client_options", "read_from_replicas")
LEGACY_MIRROR = ("staleness_ms", "index", "storage", "stream_maxlen", "sweep_interval_ms",
                 "startup_wait_ms")


def split_legacy(
    connection: ConnectionOptions | None, mirror: MirrorOptions | None, legacy: dict[str, Any]
) -> tuple[ConnectionOptions, MirrorOptions]:
    """Fold the old flat keywords into the option groups (a keyword given both ways, or an
    unknown one, is a :class:`ConfigurationError`)."""
    unknown = sorted(set(legacy) - set(LEGACY_CONNECTION) - set(LEGACY_MIRROR))
    if unknown:
        raise ConfigurationError(f"RedisStore got unknown option(s) {', '.join(unknown)}")
    conn = {k: v for k, v in legacy.items() if k in LEGACY_CONNECTION}
    mirr = {k: v for k, v in legacy.items() if k in LEGACY_MIRROR}
    if conn and connection is not None:
        raise ConfigurationError(f"pass {sorted(conn)} inside connection=, not both ways")
    if mirr and mirror is not None:
        raise ConfigurationError(f"pass {sorted(mirr)} inside mirror=, not both ways")
    if conn.get("client_options") is None:
        conn.pop("client_options", None)
    return (
        connection if connection is not None else ConnectionOptions(**conn),
        mirror if mirror is not None else MirrorOptions(**mirr),
    )
