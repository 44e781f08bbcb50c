"""RedisStore on a real 3-master Redis 8.2 cluster, and with client objects passed in.

Any node's URL works (the store notices the cluster and uses a cluster client); one
namespace spreads over the masters (one hash tag per scope) and every script stays in one
slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.cluster

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from rag_optimize.cache.redis.codec import scope_digest
from rag_optimize.cache.redis.vsets import VectorSetKeys
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    RedisCluster,
    RedisServer,
    namespace,
    redis8_server,
    redis_cluster,
)

SCOPES = [f"tenant-{i}" for i in range(20)]


def new_cache(store: RedisStore, clock: FakeClock) -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=64), store=store, clock=clock, threshold=0.8)


def test_twenty_scopes_over_three_masters_through_any_node(
    redis_cluster: RedisCluster, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    stores = [RedisStore(url, namespace, clock=clock).start() for url in redis_cluster.urls]
    try:
        caches = [new_cache(s, clock) for s in stores]
        assert all(s.search_path == "server" and s.server and s.server.cluster for s in stores)
        for i, scope in enumerate(SCOPES):  # each write through another node's URL
            assert caches[i % 3].set(f"question of {scope}", scope, scope=scope)
        for cache in caches:  # every node's URL finds all of them, exact and similar
            for scope in SCOPES:
                exact = cache.get(f"question of {scope}", scope=scope)
                assert exact is not None and exact.response == scope
                similar = cache.get(f"question of {scope} please", scope=scope)
                assert similar is not None and similar.response == scope
                assert cache.get(f"question of {scope}", scope="someone-else") is None
        assert all(c.stats.store_errors == 0 for c in caches)
        assert stores[1].count() == 20
        # the namespace really spreads: its scopes live on more than one master
        keys = VectorSetKeys(namespace)
        owners = {
            redis_cluster.nodes[0].client().cluster("keyslot", keys.lru(scope_digest(s)))
            for s in SCOPES
        }
        assert len(owners) > 1
        assert caches[2].invalidate("tenant-3") == 1
        assert caches[0].get("question of tenant-3", scope="tenant-3") is None
        assert caches[1].invalidate(source_ids=["nothing"]) == 0
        caches[0].clear()
        assert stores[2].count() == 0
    finally:
        for s in stores:
            s.close()


def test_a_cluster_client_object_and_async_through_it(
    redis_cluster: RedisCluster, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    node = redis_cluster.nodes[2]
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=node.port)
    store = RedisStore(client=client, namespace=namespace, clock=clock)
    try:
        cache = new_cache(store, clock)
        assert cache.set("given cluster client", "yes", scope="a")

        async def lookups() -> list[Any]:
            return await asyncio.gather(*(
                cache.aget("given cluster client please", scope="a") for _ in range(8)
            ))

        hits = asyncio.run(lookups())
        assert all(h is not None and h.response == "yes" for h in hits)
        assert cache.stats.store_errors == 0
    finally:
        store.close()
    assert client.ping()  # the caller's client stays open
    client.close()


def test_a_plain_client_object(
    redis8_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis8_server.port)
    with RedisStore(client=client, namespace=namespace, clock=clock) as store:
        cache = new_cache(store, clock)
        assert cache.set("given plain client", "yes")
        hit = cache.get("given plain client please")
        assert hit is not None and hit.response == "yes"
    assert client.ping()
