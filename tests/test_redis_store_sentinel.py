"""RedisStore behind real Redis Sentinels: the three ways in, failover, and the change log.

Every server is a real ``redis-server`` on a free loopback port: a master, a replica started
with ``--replicaof`` and a Sentinel started as ``redis-server <conf> --sentinel``
(:class:`tests.redis_server.RedisSentinelSetup`). A failover is a SIGKILL of the master; the
Sentinel promotes the replica. Waits have deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from rag_optimize.cache.redis.server import parse_sentinel_url
from rag_optimize.errors import ConfigurationError
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    REDIS_BIN,
    RedisSentinelSetup,
    eventually_hit,
    namespace,
    redis8_bin,
    wait_until,
)


def q(word: str, i: int) -> str:
    return f"what was the {word} answer number {i} of this failover test"


def new_cache(store: RedisStore, clock: FakeClock) -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=64), store=store, clock=clock, threshold=0.8)


@pytest.fixture(scope="module", params=["redis7", "redis8"])
def sentinel_setup(request: Any) -> Any:
    """One master + replica + Sentinel per server kind (the failover tests make their own)."""
    binary = REDIS_BIN if request.param == "redis7" else redis8_bin()
    setup = RedisSentinelSetup(binary=binary).start()
    yield setup
    setup.stop()


def test_the_sentinel_url_form_is_parsed_exactly() -> None:
    spec = parse_sentinel_url("redis+sentinel://u:p%40ss@h1:26380,h2/my%20service/3")
    assert spec.addresses == (("h1", 26380), ("h2", 26379))
    assert spec.service == "my service"
    assert spec.connection_kwargs == {"username": "u", "password": "p@ss", "db": 3}
    for bad in (
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:26379/svc/x",  # db not a number
        "redis+sentinel://h1:99999/svc",  # port out of range
        "redis+sentinel://:26379/svc",  # no host
        "redis+sentinel://h1/svc?ssl=1",  # options are not part of the form
    ):
        with pytest.raises(ConfigurationError, match="url|address|database"):
            parse_sentinel_url(bad)
    with pytest.raises(ConfigurationError, match="service name"):
        RedisStore(sentinel=redis.sentinel.Sentinel([("127.0.0.1", 1)]))
    with pytest.raises(ConfigurationError, match="service_name"):
        RedisStore("redis://127.0.0.1:1/0", service_name="svc")
    with pytest.raises(ConfigurationError, match="redis-py Sentinel"):
        RedisStore(sentinel=object(), service_name="svc")


def test_url_sentinel_objects_and_a_master_for_client_all_reach_the_master(
    sentinel_setup: RedisSentinelSetup, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    setup = sentinel_setup
    service = setup.SERVICE
    sync_sentinel = redis.sentinel.Sentinel(setup.addresses, socket_timeout=1)
    async_sentinel = redis.asyncio.sentinel.Sentinel(setup.addresses, socket_timeout=1)
    master_client = sync_sentinel.master_for(service, socket_timeout=1)
    # generous timeouts: a new event loop's first call also asks a Sentinel for the master
    opts: dict[str, Any] = {"namespace": namespace, "clock": clock, "timeout_ms": 1000}
    stores = [
        RedisStore(setup.url, **opts),
        RedisStore(sentinel=sync_sentinel, service_name=service, **opts),
        RedisStore(sentinel=async_sentinel, service_name=service, **opts),
        RedisStore(client=master_client, **opts),
    ]
    try:
        caches = [new_cache(s.start(), clock) for s in stores]
        for i, cache in enumerate(caches):
            assert cache.set(f"what is the answer to question {i}", f"answer {i}", scope=f"s{i}")
        # every entry is on the master the Sentinel names (not on some other server)
        master = setup.node_on(setup.master_port() or 0).client()
        assert len(master.keys("*" + namespace + "*:e:*")) == len(stores)
        for store in stores:
            assert store.wait_synced(10.0)
        for cache in caches:
            for i in range(len(stores)):
                hit = cache.get(f"what is the answer to question {i} please", scope=f"s{i}")
                assert hit is not None and hit.response == f"answer {i}"
                assert cache.get(f"what is the answer to question {i}", scope="elsewhere") is None

        async def lookups(cache: SemanticCache) -> list[Any]:
            return await asyncio.gather(*(
                cache.aget(f"what is the answer to question {i}", scope=f"s{i}")
                for i in range(len(stores))
            ))

        for cache in caches:  # the async API, one client per loop (or the caller's in a thread)
            hits = asyncio.run(lookups(cache))
            assert [h.response for h in hits] == [f"answer {i}" for i in range(len(stores))]
        assert all(c.stats.store_errors == 0 for c in caches)
    finally:
        for store in stores:
            store.close()
    assert master_client.ping()  # the caller's client stays open
    master_client.close()


@pytest.mark.parametrize("kind", ["redis7", "redis8"])
def test_failover_fails_open_then_the_store_works_on_the_promoted_replica(
    kind: str, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    setup = RedisSentinelSetup(binary=REDIS_BIN if kind == "redis7" else redis8_bin()).start()
    store = RedisStore(setup.url, namespace, clock=clock, timeout_ms=200, cooldown_ms=100)
    try:
        cache = new_cache(store.start(), clock)
        questions = {f"scope-{s}": [f"question {s}.{i}" for i in range(5)] for s in range(4)}
        for scope, qs in questions.items():
            for q in qs:
                assert cache.set(q, f"{scope}|{q}", scope=scope)
        old = setup.node_on(setup.master_port() or 0)
        assert old.client().execute_command("WAIT", 1, 5000) == 1  # the replica has them all
        assert store.wait_synced(10.0)

        problems: list[str] = []
        stop = threading.Event()

        def reader(scope: str) -> None:
            while not stop.is_set():
                for q in questions[scope]:
                    try:
                        hit = cache.get(q + " please", scope=scope)
                    except Exception as exc:  # noqa: BLE001 - the point: none may escape
                        problems.append(f"{type(exc).__name__}: {exc}")
                        return
                    if hit is not None and hit.response != f"{scope}|{q}":
                        problems.append(f"wrong answer {hit.response!r} for {q!r} in {scope}")

        async_after: list[bool] = []

        def async_reader() -> None:  # the async API: this loop's own Sentinel clients
            async def run() -> None:
                while not stop.is_set():
                    for scope, qs in questions.items():
                        for q in qs:
                            try:
                                hit = await cache.aget(q + " please", scope=scope)
                            except Exception as exc:  # noqa: BLE001 - none may escape
                                problems.append(f"async {type(exc).__name__}: {exc}")
                                return
                            if hit is not None and hit.response != f"{scope}|{q}":
                                problems.append(f"async wrong answer {hit.response!r}")
                q = questions["scope-2"][0]  # the same loop's clients, after the switch
                for _ in range(400):
                    hit = await cache.aget(q + " please", scope="scope-2")
                    if hit is not None:
                        async_after.append(hit.response == f"scope-2|{q}")
                        return
                    await asyncio.sleep(0.05)

            asyncio.run(run())

        threads = [threading.Thread(target=reader, args=(s,), daemon=True) for s in questions]
        threads.append(threading.Thread(target=async_reader, daemon=True))
        for t in threads:
            t.start()
        try:
            new = switch_and_check(setup, cache, store, questions, old)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert problems == []
        assert async_after == [True]
        assert cache.stats.store_errors > 0  # the switch was felt, and counted
        assert new.client().exists(*new.client().keys("*" + namespace + "*:e:*")) >= 21
    finally:
        store.close()
        setup.stop()


def switch_and_check(
    setup: RedisSentinelSetup,
    cache: SemanticCache,
    store: RedisStore,
    questions: dict[str, list[str]],
    old: Any,
) -> Any:
    """Kill the master; once the Sentinel promoted the replica, the same store (no restart)
    writes there, finds what was replicated, and keeps scopes apart."""
    new = setup.kill_master()
    assert new.port != old.port
    # after the switch, without a restart: writes land on the new master, old entries hit
    assert wait_until(lambda: cache.set("after the switch", "new master", scope="scope-0"),
                      timeout=30.0, interval=0.05)
    assert wait_until(lambda: store.wait_synced(1.0), timeout=30.0, interval=0.05)
    for scope, qs in questions.items():
        for q in qs:
            assert eventually_hit(cache, q + " please", f"{scope}|{q}", scope=scope)
    assert eventually_hit(cache, "after the switch", "new master", scope="scope-0")
    assert cache.get("after the switch", scope="scope-1") is None
    return new


def test_a_promoted_replica_that_missed_changes_cannot_mislead_the_followers(
    namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """Redis 7 (the mirror path, numbered change log). The replica is cut off and takes three
    changes of its own; the old master takes three the replica never gets, dies, and the
    replica is promoted: its numbering has reached the followers' position from another
    history, so its next change follows on by number. Neither follower may skip the
    replica's own changes or keep the lost ones."""
    setup = RedisSentinelSetup(binary=REDIS_BIN).start()
    old, replica = setup.master, setup.replicas[0]
    opts: dict[str, Any] = {"clock": clock, "timeout_ms": 200, "cooldown_ms": 100}
    writer = RedisStore(setup.url, namespace, **opts)
    watcher = RedisStore(setup.url, namespace, **opts)  # only follows the change log
    try:
        cache, seen = new_cache(writer.start(), clock), new_cache(watcher.start(), clock)
        for i in range(3):
            assert cache.set(q("kept", i), f"kept {i}")
        assert old.client().execute_command("WAIT", 1, 5000) == 1
        replica.client().execute_command("REPLICAOF", "NO", "ONE")  # cut off, keeps its data
        with RedisStore(replica.url, namespace, **opts) as alone:  # as many changes there...
            for i in range(3):
                assert new_cache(alone, clock).set(q("alone", i), f"alone {i}")
        for i in range(3):  # ...as the old master takes after the cut, later
            assert cache.set(q("lost", i), f"lost {i}")
        assert writer.wait_synced(10.0) and watcher.wait_synced(10.0)
        lost_seq = watcher._follower.position[1]
        old.kill()
        sentinel = setup.sentinel()  # the operator (or Sentinel) names the promoted replica
        sentinel.sentinel_remove(setup.SERVICE)
        sentinel.sentinel_monitor(setup.SERVICE, "127.0.0.1", replica.port, 1)
        assert wait_until(lambda: setup.master_port() == replica.port, timeout=20.0)
        # the promoted replica numbers its next changes as the lost ones were numbered
        assert wait_until(lambda: cache.set(q("new", 0), "new 0"), timeout=30.0, interval=0.05)
        for i in range(1, 3):
            assert cache.set(q("new", i), f"new {i}")
        # the promoted replica numbered its changes as the old master did: the followers'
        # next event (number lost_seq + 1) follows on by number, from another history
        assert int(replica.client().get("{" + namespace + "}:seq")) == lost_seq + 3
        for store in (writer, watcher):
            assert wait_until(lambda s=store: s.wait_synced(1.0), timeout=30.0, interval=0.05)
        truth = {k.decode().rsplit(":", 1)[-1]
                 for k in replica.client().keys("{" + namespace + "}:e:*")}
        for store in (writer, watcher):  # both mirrors hold exactly what the new master holds
            assert set(store._mirror.ids()) == truth
        for c in (cache, seen):
            for i in range(3):
                for word in ("kept", "alone", "new"):
                    assert eventually_hit(c, q(word, i) + " please", f"{word} {i}")
                assert c.get(q("lost", i) + " please") is None
    finally:
        writer.close()
        watcher.close()
        setup.stop()


def test_an_event_that_does_not_follow_the_last_one_makes_the_follower_reload(
    namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """The connection moves to the promoted replica without an error (a proxy or a DNS name
    that follows the master): the next event's number follows on, its ``prev`` does not."""
    setup = RedisSentinelSetup(binary=REDIS_BIN).start()
    old, replica = setup.master, setup.replicas[0]
    store = RedisStore(old.url, namespace, clock=clock)
    other = RedisStore(replica.url, namespace, clock=clock, search="mirror")
    try:
        cache = new_cache(store.start(), clock)
        assert cache.set("kept", "kept")
        assert old.client().execute_command("WAIT", 1, 5000) == 1
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        on_replica = new_cache(other.start(), clock)
        # numbered N+1 on the replica; then N+1 on the old master, later; then N+2 on the
        # replica, after both
        assert on_replica.set("the first answer written on the replica alone", 1)
        assert cache.set("lost", "lost")
        # stream ids are millisecond clocks: the replica's next event must be numbered after
        # the old master's last one (in the same millisecond it could sort before it, and the
        # follower would not read it at all: the case the test is not about)
        time.sleep(0.005)
        assert on_replica.set("the second answer written on the replica alone", 2)
        assert store.wait_synced(10.0)
        # the two servers' second events may carry the same log id (the same millisecond:
        # that made this test fail 1 run in 8); their links differ, as their changes do
        log = "{" + namespace + "}:log"
        (_, on_old), (_, on_new) = old.client().xrange(log)[1], replica.client().xrange(log)[1]
        assert on_old[b"prev"] == on_new[b"prev"] and on_old[b"seq"] == on_new[b"seq"] == b"2"
        assert on_old[b"link"] != on_new[b"link"]
        follower = store._follower
        follower.stop()
        follower._thread.join(10)
        loads = follower.loads
        # the connections now reach the replica (as through a proxy that follows the master)
        follower._client = store._client = replica.client()
        try:
            follower._tail()
        except Exception as exc:  # noqa: BLE001 - the gap the loop turns into a reload
            assert "another history" in str(exc)
            follower._load()
        assert follower.loads == loads + 1
        truth = {k.decode().rsplit(":", 1)[-1]
                 for k in replica.client().keys("{" + namespace + "}:e:*")}
        assert len(truth) == 3 and set(store._mirror.ids()) == truth  # not "lost"
        hit = cache.get("the first answer written on the replica alone please")
        assert hit is not None and hit.response == 1
    finally:
        store.close()
        other.close()
        setup.stop()
