"""What kind of Redis the store talks to, and the clients that talk to it.

:func:`detect` asks the server once, at start: its version, whether it has vector sets
(``VADD``/``VSIM``, built into Redis 8), whether it has the Query Engine (``FT.SEARCH``) and
whether it runs in cluster mode. The store then picks its search path (see
:mod:`~rag_optimize.cache.redis.store`). Commands a least-privilege ACL user may not run
(``COMMAND INFO``) count as "not available", never as an error.

:func:`sync_client` / :func:`async_client` build redis-py clients from a URL (a plain
``redis.Redis``; a ``redis.cluster.RedisCluster`` when the node at the URL says it is a
cluster member, so any node's URL works) with no retries (the circuit breaker decides) and
the store's socket timeouts; the plain ones send their commands on a pooled connection
directly (:mod:`~rag_optimize.cache.redis.direct`).

Sentinel (:class:`SentinelSpec`): the store is given the Sentinels' addresses and a service
name (a ``redis+sentinel://`` URL, see :func:`parse_sentinel_url`, or a redis-py
``Sentinel`` object, sync or async, or a client from ``Sentinel.master_for``) and builds its own
``master_for`` / ``replica_for`` clients from them (sync, and one set per event loop for the
async API): after a failover they reconnect to whichever server the Sentinels name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from rag_optimize.cache.redis.direct import own
from rag_optimize.errors import ConfigurationError

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelSpec",
    "ServerInfo",
    "async_client",
    "detect",
    "is_cluster_client",
    "parse_sentinel_url",
    "sentinel_clients",
    "sentinel_of_client",
    "sentinel_spec",
    "sync_client",
]

#: The URL scheme for Redis behind Sentinel (the convention of RedisVL, LangChain and
#: Redis-Sentinel-Url; redis-py itself defines none).
SENTINEL_SCHEME = "redis+sentinel://"
_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class ServerInfo:
    """What :func:`detect` found."""

    version: str
    vector_sets: bool
    search_module: bool
    cluster: bool

    @property
    def server_search(self) -> bool:
        """Whether lookups can search on the server (vector sets)."""
        return self.vector_sets


def redis_module() -> Any:
    """The ``redis`` package, or a clear ImportError naming the extra to install."""
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.sentinel
        import redis.cluster
        import redis.sentinel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RedisStore needs redis-py: pip install 'rag-optimize[redis]'") from exc
    return redis


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is a redis-py cluster client (sync or async)."""
    redis = redis_module()
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def _has_command(client: Any, name: str) -> bool:
    try:
        reply = client.execute_command("COMMAND", "INFO", name)
    except Exception:  # noqa: BLE001 - denied by ACL or unknown: treat as absent
        return False
    if isinstance(reply, dict):  # RESP3 / cluster clients may answer a mapping
        return any(v for v in reply.values())
    return bool(reply) and reply[0] is not None


def detect(client: Any) -> ServerInfo:
    """Ask the server what it has (3-4 round trips, once per store)."""
    info = client.info("server")
    if is_cluster_client(client):  # a mapping node -> INFO; every node runs one version
        info = next(iter(info.values())) if info and "redis_version" not in info else info
        cluster = True
    else:
        cluster_info = client.info("cluster")
        cluster = bool(int(cluster_info.get("cluster_enabled", 0) or 0))
    version = str(info.get("valkey_version") or info.get("redis_version") or "unknown")
    return ServerInfo(
        version=version,
        vector_sets=_has_command(client, "VSIM"),
        search_module=_has_command(client, "FT.SEARCH"),
        cluster=cluster,
    )


def no_retry(retry_cls: Any) -> Any:
    """A redis-py ``Retry`` that never retries: the breaker decides, the caller never waits."""
    from redis.backoff import NoBackoff

    return retry_cls(NoBackoff(), 0)


def sync_client(url: str, options: dict[str, Any], *, cluster: bool) -> Any:
    """A sync client for ``url``: ``RedisCluster`` if ``cluster`` else ``Redis``."""
    redis = redis_module()
    try:
        if cluster:
            return redis.cluster.RedisCluster.from_url(
                url, retry=no_retry(redis.retry.Retry), **_cluster_options(options)
            )
        return own(redis.Redis.from_url(url, retry=no_retry(redis.retry.Retry), **options))
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis url {url!r}: {exc}") from exc


def async_client(url: str, options: dict[str, Any], *, cluster: bool) -> Any:
    """Async twin of :func:`sync_client` (``redis.asyncio``); one per event loop."""
    redis = redis_module()
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, retry=no_retry(redis.asyncio.retry.Retry), **_cluster_options(options)
        )
    return own(redis.asyncio.Redis.from_url(
        url, retry=no_retry(redis.asyncio.retry.Retry), **options
    ))


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    # a cluster client follows MOVED/ASK itself; it has no database number
    return {k: v for k, v in options.items() if k not in ("db",)}


@dataclass(frozen=True)
class SentinelSpec:
    """Where the Sentinels are and which service they watch; what the store builds its
    clients from. ``connection_kwargs`` go to the master and replica connections
    (``db``, ``username``, ``password``...), ``sentinel_kwargs`` to the Sentinels'."""

    addresses: tuple[tuple[str, int], ...]
    service: str
    connection_kwargs: dict[str, Any] = field(default_factory=dict)
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    min_other_sentinels: int = 0


def parse_sentinel_url(url: str) -> SentinelSpec:
    """Parse ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]``.

    Ports default to 26379; ``user:password`` authenticate to the master and replicas (a
    Sentinel that needs a password: pass a ``Sentinel`` object instead); ``db`` defaults to
    0. Raises :class:`ConfigurationError` naming the URL for anything else."""
    if not url.startswith(SENTINEL_SCHEME):
        raise ConfigurationError(f"a Sentinel url starts with {SENTINEL_SCHEME}, got {url!r}")
    rest = url[len(SENTINEL_SCHEME):]
    if "?" in rest or "#" in rest:
        raise ConfigurationError(f"a Sentinel url takes no query or fragment, got {url!r}")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    kwargs: dict[str, Any] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if colon:
            kwargs["password"] = unquote(password)
    addresses = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":") if ":" in item else (item, "", "")
        host = host.strip()
        try:
            number = int(port) if colon else _SENTINEL_PORT
        except ValueError:
            number = -1
        if not host or not 0 < number < 65536:
            raise ConfigurationError(f"bad Sentinel address {item!r} in url {url!r}")
        addresses.append((host, number))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigurationError(
            f"a Sentinel url names the service: .../service_name[/db], got {url!r}"
        )
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigurationError(f"bad database number {parts[1]!r} in url {url!r}")
        kwargs["db"] = int(parts[1])
    return SentinelSpec(tuple(addresses), unquote(parts[0]), kwargs)


def sentinel_spec(sentinel: Any, service: Any) -> SentinelSpec:
    """The spec of a redis-py ``Sentinel`` (``redis.sentinel`` or ``redis.asyncio.sentinel``):
    its Sentinels' addresses and options. The store builds its own clients from them, so one
    object serves the sync API and every event loop of the async one."""
    if not isinstance(service, str) or not service:
        raise ConfigurationError(
            f"a Sentinel needs the service name it watches (service_name=), got {service!r}"
        )
    nodes = getattr(sentinel, "sentinels", None)
    if not isinstance(nodes, list) or not hasattr(sentinel, "master_for"):
        raise ConfigurationError(f"sentinel must be a redis-py Sentinel, got {sentinel!r}")
    addresses = []
    for node in nodes:
        kw = node.connection_pool.connection_kwargs
        addresses.append((str(kw.get("host", "localhost")), int(kw.get("port", _SENTINEL_PORT))))
    own = dict(getattr(sentinel, "sentinel_kwargs", None) or {})
    return SentinelSpec(
        tuple(addresses),
        service,
        dict(getattr(sentinel, "connection_kwargs", None) or {}),
        own,
        int(getattr(sentinel, "min_other_sentinels", 0) or 0),
    )


def sentinel_of_client(client: Any) -> SentinelSpec | None:
    """The spec behind a client from ``Sentinel.master_for`` (``None`` for other clients)."""
    redis = redis_module()
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return None
    spec = sentinel_spec(pool.sentinel_manager, pool.service_name)
    kwargs = {
        k: v for k, v in pool.connection_kwargs.items()
        if k in ("db", "username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    }
    return SentinelSpec(
        spec.addresses, spec.service, {**spec.connection_kwargs, **kwargs},
        spec.sentinel_kwargs, spec.min_other_sentinels,
    )


def sentinel_clients(
    spec: SentinelSpec, options: dict[str, Any], *, replicas: bool, asynchronous: bool = False
) -> tuple[Any, Any]:
    """``(master, replica or None)`` clients for ``spec``'s service (``master_for`` /
    ``replica_for`` of a new ``Sentinel``), with the store's timeouts and no retries; the
    Sentinels themselves get the same timeouts unless their own options say otherwise.
    ``asynchronous``: ``redis.asyncio`` clients (call it once per event loop)."""
    redis = redis_module()
    if asynchronous:
        module, retry_cls = redis.asyncio.sentinel, redis.asyncio.retry.Retry
    else:
        module, retry_cls = redis.sentinel, redis.retry.Retry
    sentinel_kwargs = {
        "socket_timeout": options.get("socket_timeout"),
        "socket_connect_timeout": options.get("socket_connect_timeout"),
        "retry": no_retry(retry_cls),
        **spec.sentinel_kwargs,
    }
    sentinel = module.Sentinel(
        list(spec.addresses),
        min_other_sentinels=spec.min_other_sentinels,
        sentinel_kwargs=sentinel_kwargs,
    )
    kwargs = {**spec.connection_kwargs, **options, "retry": no_retry(retry_cls)}
    master = own(sentinel.master_for(spec.service, **kwargs))
    replica = own(sentinel.replica_for(spec.service, **kwargs)) if replicas else None
    return master, replica
