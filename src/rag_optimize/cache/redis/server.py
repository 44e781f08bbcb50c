"""What kind of Redis the store talks to, and the clients that talk to it.

:func:`detect` asks the server once, at start: its version, whether it has vector sets
(``VADD``/``VSIM``, built into Redis 8), whether it has the Query Engine (``FT.SEARCH``) and
whether it runs in cluster mode. The store then picks its search path (see
:mod:`~rag_optimize.cache.redis.store`). Commands a least-privilege ACL user may not run
(``COMMAND INFO``) count as "not available", never as an error.

:func:`sync_client` / :func:`async_client` build redis-py clients from a URL (a plain
``redis.Redis``; a ``redis.cluster.RedisCluster`` when the node at the URL says it is a
cluster member, so any node's URL works) with no retries (the circuit breaker decides) and
the store's socket timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag_optimize.errors import ConfigurationError

__all__ = ["ServerInfo", "async_client", "detect", "is_cluster_client", "sync_client"]


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
        import redis.cluster
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
        return redis.Redis.from_url(url, retry=no_retry(redis.retry.Retry), **options)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis url {url!r}: {exc}") from exc


def async_client(url: str, options: dict[str, Any], *, cluster: bool) -> Any:
    """Async twin of :func:`sync_client` (``redis.asyncio``); one per event loop."""
    redis = redis_module()
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, retry=no_retry(redis.asyncio.retry.Retry), **_cluster_options(options)
        )
    return redis.asyncio.Redis.from_url(
        url, retry=no_retry(redis.asyncio.retry.Retry), **options
    )


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    # a cluster client follows MOVED/ASK itself; it has no database number
    return {k: v for k, v in options.items() if k not in ("db",)}
