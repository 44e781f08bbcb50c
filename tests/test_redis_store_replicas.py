"""Replica reads (``read_from_replicas``) against a real master and replica.

What the cache promises (see ``rag_optimize.cache.redis.replicas``): lookups go to a replica,
changes to the master and are confirmed by the online replicas (``WAIT``) before the call
returns; a process whose change was not confirmed reads from the master for a while (its own
changes are always read back); a failing replica never fails a lookup. A lagging replica is
made with ``CLIENT PAUSE <ms> WRITE`` on the replica: it still answers reads but applies no
replication until the pause ends. Waits have deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from rag_optimize.cache.redis.codec import Keys, scope_digest
from rag_optimize.cache.redis.options import ConnectionOptions
from rag_optimize.cache.redis.vsets import VectorSetKeys
from rag_optimize.errors import ConfigurationError
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    REDIS_BIN,
    RedisCluster,
    RedisSentinelSetup,
    RedisServer,
    eventually_hit,
    namespace,
    redis8_bin,
    redis_cluster,
    wait_until,
)

QUESTION = "how long does the warranty of the blue kettle last"


def new_cache(store: RedisStore, clock: FakeClock) -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=64), store=store, clock=clock, threshold=0.8)


@pytest.fixture(scope="module", params=["redis7", "redis8"])
def pair(request: Any) -> Any:
    """A master and one replica (``--replicaof``), no Sentinel."""
    binary = REDIS_BIN if request.param == "redis7" else redis8_bin()
    setup = RedisSentinelSetup(replicas=1, sentinels=0, binary=binary).start()
    yield setup
    setup.stop()


def ro_calls(server: RedisServer) -> int:
    """How many read-only script calls ``server`` has run."""
    stats = server.client().info("commandstats")
    names = ("evalsha_ro", "eval_ro")
    return sum(int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names)


def lagging(server: RedisServer, ms: int) -> None:
    """Make ``server`` (a replica) apply no replication for ``ms`` while it answers reads."""
    server.client().execute_command("CLIENT", "PAUSE", ms, "WRITE")


def test_the_option_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="read_from_replicas"):
        ConnectionOptions(read_from_replicas="yes")  # type: ignore[arg-type]


def test_lookups_run_on_the_replica_and_changes_on_the_master(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    master, replica = pair.master, pair.replicas[0]
    # generous timeouts: on a loaded machine a healthy replica's confirmation may take long
    with RedisStore(master.url, namespace, clock=clock, read_from_replicas=True,
                    timeout_ms=2000) as store:
        cache = new_cache(store, clock)
        assert cache.set(QUESTION, "two years", scope="kettles")
        before = ro_calls(replica)
        for _ in range(5):
            exact = cache.get(QUESTION, scope="kettles")
            similar = cache.get(QUESTION + " please", scope="kettles")
            assert exact is not None and exact.response == "two years"
            assert similar is not None and similar.response == "two years"
            assert cache.get(QUESTION, scope="toasters") is None

        async def lookups() -> list[Any]:
            return await asyncio.gather(*(cache.aget(QUESTION, scope="kettles") for _ in range(8)))

        assert all(h is not None and h.response == "two years" for h in asyncio.run(lookups()))
        assert ro_calls(replica) - before >= 5 * 3 + 8, store.status()  # all on the replica
        status = store.status()
        assert status["replicas_online"] == 1 and status["replica_fallbacks"] == 0
        assert status["unconfirmed_changes"] == 0 and status["replica_reads"] >= 5 * 3 + 8
        assert cache.stats.store_errors == 0
        assert cache.invalidate("kettles") == 1
        assert cache.get(QUESTION, scope="kettles") is None  # confirmed: gone on the replica too
        assert replica.client().keys("*" + namespace + "*:e:*") == []


def test_a_confirmed_invalidation_is_never_answered_by_the_replica(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    replica = pair.replicas[0]
    opts: dict[str, Any] = {"clock": clock, "read_from_replicas": True, "timeout_ms": 4000}
    with RedisStore(pair.master.url, namespace, **opts) as writer, \
            RedisStore(pair.master.url, namespace, **opts) as reader:
        mine, theirs = new_cache(writer, clock), new_cache(reader, clock)
        assert mine.set(QUESTION, "two years")
        hit = theirs.get(QUESTION)
        assert hit is not None and hit.response == "two years"
        served = reader.status()["replica_reads"]
        lagging(replica, 300)  # the replica applies the invalidation only after 300 ms...
        assert mine.invalidate() == 1  # ...and the invalidation waits for it (up to 4 s)
        assert theirs.get(QUESTION) is None  # at once, in the other process
        assert reader.status()["replica_reads"] > served  # asked the replica, not the master
        assert writer.status()["unconfirmed_changes"] == 0


def test_own_changes_are_read_back_when_the_replica_does_not_confirm_them(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    replica = pair.replicas[0]
    opts: dict[str, Any] = {"clock": clock, "read_from_replicas": True}
    with RedisStore(pair.master.url, namespace, timeout_ms=200, cooldown_ms=60_000,
                    **opts) as writer, \
            RedisStore(pair.master.url, namespace, timeout_ms=2000, **opts) as reader:
        mine, theirs = new_cache(writer, clock), new_cache(reader, clock)
        assert mine.set(QUESTION, "two years")
        assert theirs.get(QUESTION) is not None
        lagging(replica, 60_000)
        try:
            assert mine.invalidate() == 1  # WAIT gives up after 200 ms: not confirmed
            assert mine.set("is the red kettle in stock", "yes")
            assert writer.status()["unconfirmed_changes"] >= 2
            assert writer.status()["reading_master"]
            # this process reads its own changes back (from the master)...
            assert mine.get(QUESTION) is None
            hit = mine.get("is the red kettle in stock")
            assert hit is not None and hit.response == "yes"
            # ...while another process may still read the lagging replica's older state
            # (the documented window: as long as the replica lags)
            stale = theirs.get(QUESTION)
            assert stale is not None and stale.response == "two years"
        finally:
            replica.client().execute_command("CLIENT", "UNPAUSE")
        assert wait_until(lambda: theirs.get(QUESTION) is None, timeout=10.0)
        assert mine.stats.store_errors == 0 and theirs.stats.store_errors == 0


def test_a_stopped_replica_never_fails_a_lookup(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    replica = pair.replicas[0]
    opts: dict[str, Any] = {"clock": clock, "read_from_replicas": True, "timeout_ms": 1000}
    with RedisStore(pair.master.url, namespace, **opts) as store:
        cache = new_cache(store, clock)
        assert cache.set(QUESTION, "two years")
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                hit = cache.get(QUESTION + " please")
                assert hit is not None and hit.response == "two years"  # from the master
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        status = store.status()
        assert status["replica_fallbacks"] >= 1 and status["breaker"] == "closed"
        assert cache.stats.store_errors == 0
        assert wait_until(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            timeout=20.0,
        )


def test_replica_reads_behind_sentinel_and_across_a_failover(
    namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    setup = RedisSentinelSetup(replicas=1, sentinels=1, binary=REDIS_BIN).start()
    store = RedisStore(setup.url, namespace, clock=clock, read_from_replicas=True,
                       timeout_ms=500, cooldown_ms=100)
    try:
        cache = new_cache(store.start(), clock)
        assert cache.set(QUESTION, "two years")
        replica = setup.replicas[0]
        before = ro_calls(replica)

        def read_on_replica() -> bool:  # an unconfirmed write (a slow moment) reads the master
            return eventually_hit(cache, QUESTION + " please", "two years") and (
                ro_calls(replica) > before
            )

        assert wait_until(read_on_replica, timeout=20.0, interval=0.05), store.status()
        setup.kill_master()
        # the promoted replica has no replica of its own: lookups go to it as the master
        assert wait_until(lambda: cache.set("is the red kettle in stock", "yes"),
                          timeout=30.0, interval=0.05)
        assert wait_until(lambda: store.wait_synced(1.0), timeout=30.0, interval=0.05)
        for question, answer in ((QUESTION, "two years"), ("is the red kettle in stock", "yes")):
            assert eventually_hit(cache, question + " please", answer)
        assert store.status()["replicas_online"] == 0
    finally:
        store.close()
        setup.stop()


def test_a_hit_served_by_the_replica_is_marked_used_by_the_next_put(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """The replica cannot write the LRU mark of the entry it served (semantic or exact hit);
    the store's next put to its LRU set (on the master) carries it (both paths: the scope's
    set on Redis 8, the namespace's on the mirror)."""
    master = pair.master
    with RedisStore(master.url, namespace, clock=clock, read_from_replicas=True,
                    timeout_ms=2000) as store:
        cache = new_cache(store, clock)
        assert cache.set(QUESTION, "two years", scope="kettles")
        lru = (VectorSetKeys(namespace).lru(scope_digest("kettles"))
               if store.search_path == "server" else Keys(namespace).lru)
        assert master.client().exists(lru), lru
        [(hid, written)] = master.client().zrange(lru, 0, -1, withscores=True)
        clock.advance(5)
        served_at = clock()
        before = ro_calls(pair.replicas[0])
        similar = cache.get(QUESTION + " please", scope="kettles")
        assert similar is not None and similar.response == "two years"
        assert ro_calls(pair.replicas[0]) > before  # served by the replica
        assert master.client().zscore(lru, hid) == written
        clock.advance(1)
        assert cache.set("how long does the red toaster warranty last", "one year",
                         scope="kettles")
        assert master.client().zscore(lru, hid) == served_at
        clock.advance(1)
        served_at = clock()
        exact = cache.get(QUESTION, scope="kettles")  # an exact hit: the same
        assert exact is not None and exact.exact
        clock.advance(1)
        assert cache.set("how long does the green toaster warranty last", "one year",
                         scope="kettles")
        assert master.client().zscore(lru, hid) == served_at
        assert cache.stats.store_errors == 0


def test_a_cluster_refuses_replica_reads(
    redis_cluster: RedisCluster, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    store = RedisStore(redis_cluster.urls[0], namespace, clock=clock, read_from_replicas=True)
    with pytest.raises(ConfigurationError, match="read_from_replicas"):
        store.start()
    store.close()


def test_a_lagging_replica_cannot_make_the_mirror_forget_an_entry(
    namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """Redis 7 (the mirror path): the change log (read on the master) delivers an entry the
    replica does not have yet; an exact lookup that finds nothing on the replica must not
    drop the entry from the mirror (a later semantic lookup would miss it)."""
    setup = RedisSentinelSetup(replicas=1, sentinels=0, binary=REDIS_BIN).start()
    replica = setup.replicas[0]
    try:
        with RedisStore(setup.master.url, namespace, clock=clock, timeout_ms=2000,
                        read_from_replicas=True) as store, \
                RedisStore(setup.master.url, namespace, clock=clock) as elsewhere:
            cache = new_cache(store, clock)
            lagging(replica, 60_000)
            try:
                assert new_cache(elsewhere, clock).set(QUESTION, "two years")
                assert store.wait_synced(10.0) and len(store._mirror) == 1
                hit = cache.get(QUESTION)  # nothing on the replica: the master confirms
                assert hit is not None and hit.response == "two years"
                assert len(store._mirror) == 1
            finally:
                replica.client().execute_command("CLIENT", "UNPAUSE")
            assert wait_until(lambda: replica.client().keys("*" + namespace + "*:e:*") != [],
                              timeout=10.0)
            similar = cache.get(QUESTION + " please")
            assert similar is not None and similar.response == "two years"
            assert cache.stats.store_errors == 0
    finally:
        setup.stop()


def test_a_user_who_may_not_run_role_or_wait_reads_from_the_master(
    pair: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    admin = pair.master.client()
    admin.execute_command("ACL", "SETUSER", "norole", "on", ">secret", "~*", "+@all",
                          "-role", "-wait")
    url = f"redis://norole:secret@127.0.0.1:{pair.master.port}/0"
    try:
        with RedisStore(url, namespace, clock=clock, read_from_replicas=True,
                        timeout_ms=2000) as store:
            cache = new_cache(store, clock)
            assert cache.set(QUESTION, "two years")
            hit = cache.get(QUESTION + " please")
            assert hit is not None and hit.response == "two years"
            assert store.status()["replica_reads"] == 0  # nothing confirms: the master
            assert cache.stats.store_errors == 0
    finally:
        admin.execute_command("ACL", "DELUSER", "norole")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_replica_that_comes_online_after_the_start_gets_the_lookups(
    mode: str, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """A master lists a replica in ROLE only once its sync is done: a store started before
    that (or while its replica restarts) must move its lookups to the replica once it is
    listed, without waiting for a change of its own to refresh ROLE."""
    master = RedisServer().start()
    replica = None
    try:
        with RedisStore(master.url, namespace, clock=clock, read_from_replicas=True,
                        timeout_ms=2000) as store:
            cache = new_cache(store, clock)
            assert cache.set(QUESTION, "two years")
            assert cache.get(QUESTION) is not None  # read from the master: no replica yet
            assert store.status()["replicas_online"] == 0
            replica = RedisServer(
                extra_args=["--replicaof", "127.0.0.1", str(master.port)]
            ).start()
            assert wait_until(
                lambda: len(master.client().execute_command("ROLE")[2]) == 1, timeout=20.0
            )

            def on_replica() -> bool:
                if mode == "sync":
                    hit = cache.get(QUESTION + " please")
                else:
                    hit = asyncio.run(cache.aget(QUESTION + " please"))
                assert hit is not None and hit.response == "two years"
                return ro_calls(replica) > 0  # type: ignore[arg-type]

            assert wait_until(on_replica, timeout=20.0, interval=0.1), store.status()
            assert store.status()["replicas_online"] == 1
            assert cache.stats.store_errors == 0
    finally:
        if replica is not None:
            replica.stop()
        master.stop()
