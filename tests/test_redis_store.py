"""RedisStore against a real redis-server: sharing, TTL, eviction, invalidation, safety.

Two ``RedisStore`` instances on one namespace behave like two processes (separate
connections, separate mirrors and change-log threads); the OS-process tests are in
``test_redis_store_processes.py``. Tests that use ``make_store`` run twice: on Redis 7 (the
mirror path) and on Redis 8.2 (vector sets: the server-side path); ``make_mirror_store`` is the
mirror path only (its layout, change log, sweeper thread). TTL is tested with the injected
clock, never by sleeping; only change propagation (real time by nature) is polled with a
deadline.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from rag_optimize import (
    ConfigurationError,
    HashingEmbedder,
    RedisStore,
    SemanticCache,
    Store,
    StoreError,
)
from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.keys import digest
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.codec import Keys, encode_vector, hex_id, scope_digest
from rag_optimize.cache.redis.vsets import VectorSetKeys
from rag_optimize.embedding.vectors import unit_vector
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    RedisServer,
    any_server,
    namespace,
    redis_server,
    wait_until,
)

DIM = 64
MakeStore = Callable[..., RedisStore]


def _factory(
    server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> Iterator[MakeStore]:
    stores: list[RedisStore] = []

    def make(ns: str | None = None, *, start: bool = True, **options: Any) -> RedisStore:
        options.setdefault("clock", clock)
        options.setdefault("timeout_ms", 1000)  # a loaded test machine is not an outage
        store = RedisStore(server.url, ns or namespace, **options)
        stores.append(store)
        return store.start() if start else store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def make_store(
    any_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> Iterator[MakeStore]:
    """Stores on each server kind in turn (the test runs once per kind)."""
    yield from _factory(any_server, namespace, clock)


@pytest.fixture
def make_mirror_store(
    redis_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> Iterator[MakeStore]:
    """Stores on plain Redis 7: the mirror path."""
    yield from _factory(redis_server, namespace, clock)


def entry_key(store: RedisStore, scope: str, hid: str) -> str:
    """The Redis key of an entry on the store's search path."""
    if store.search_path == "server":
        return VectorSetKeys(store.namespace).entry(scope_digest(scope), hid)
    return Keys(store.namespace).entry(hid)


def new_cache(store: RedisStore, clock: FakeClock, **options: Any) -> SemanticCache:
    options.setdefault("threshold", 0.8)
    return SemanticCache(HashingEmbedder(dim=DIM), store=store, clock=clock, **options)


def make_entry(query: str, response: Any, scope: str = "", **fields: Any) -> CacheEntry:
    key = " ".join(query.split()).casefold()
    vector = unit_vector(HashingEmbedder(dim=DIM).embed_query(query))
    return CacheEntry(
        id=digest(scope, key), scope=scope, query=query, query_key=key, vector=vector,
        response=response, **fields,
    )


def test_is_a_store(make_store: MakeStore) -> None:
    assert isinstance(make_store(), Store)


def test_two_stores_share_entries_exact_and_semantic(
    make_store: MakeStore, clock: FakeClock
) -> None:
    b_store = make_store()
    a, b = new_cache(make_store(), clock), new_cache(b_store, clock)
    assert a.set("How do I reset my password?", {"answer": "Settings > Security"})
    # the barrier: b's mirror (mirror path) now reflects a's finished write; exact lookups
    # always ask Redis, so an exact hit alone would not prove the semantic path sees it
    assert b_store.wait_synced()
    exact = b.get("How do I reset my password?")
    assert exact is not None and exact.exact and exact.response == {"answer": "Settings > Security"}
    similar = b.get("how can I reset my password quickly")
    assert similar is not None and not similar.exact and 0.8 <= similar.similarity < 1.0
    assert b.get("What is the capital of France?") is None
    assert b.get("How do I reset my password?", scope="tenant-b") is None
    assert len(a) == len(b) == 1


def test_layout_is_json_and_float32_and_keys_hide_user_text(
    make_mirror_store: MakeStore, clock: FakeClock, redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    cache = new_cache(make_mirror_store(), clock)
    scope = "tenant}:e:*evil"
    cache.set("reset my password", {"steps": [1, 2]}, scope=scope, metadata={"src": "d1"})
    raw = redis_server.client()
    names = [k.decode() for k in raw.keys("*" + namespace + "*")]
    assert names and not any("evil" in name or "password" in name for name in names)
    key = Keys(namespace).entry(digest(scope, "reset my password"))
    fields = raw.hgetall(key)
    assert json.loads(fields[b"resp"]) == {"steps": [1, 2]}
    assert json.loads(fields[b"meta"]) == {"src": "d1"}
    assert fields[b"scope"].decode() == scope
    vector = np.frombuffer(fields[b"vec"], dtype="<f4")
    expected = unit_vector(HashingEmbedder(dim=DIM).embed_query("reset my password"))
    assert vector.shape == (DIM,) and np.allclose(vector, expected)
    assert hex_id("not hex at all") == digest("not hex at all")


def test_ttl_expires_on_the_injected_clock_in_every_store(
    make_store: MakeStore, clock: FakeClock
) -> None:
    a, b = new_cache(make_store(), clock), new_cache(make_store(), clock)
    a.set("what is the refund policy", "30 days", ttl_seconds=60)
    assert wait_until(lambda: b.get("what is the refund policy") is not None)
    clock.advance(59)
    assert b.get("what is the refund policy") is not None
    clock.advance(2)
    assert b.get("what is the refund policy") is None
    assert a.get("what is the refund policy") is None
    assert a.stats.expirations + b.stats.expirations == 1
    assert len(a) == 0


def test_sweeper_deletes_expired_entries_nobody_asks_for(
    make_mirror_store: MakeStore, clock: FakeClock
) -> None:
    store = make_mirror_store(sweep_interval_ms=20)
    cache = new_cache(store, clock)
    cache.set("first question", "a", ttl_seconds=5)
    cache.set("second question", "b")
    assert len(cache) == 2
    clock.advance(6)
    # The sweeper deletes first and reports after: wait for the report, not the count,
    # or the count can be seen between the two (a CI run did).
    assert wait_until(lambda: cache.stats.expirations == 1)
    assert len(cache) == 1
    assert cache.get("second question") is not None


def test_lru_eviction_is_coherent_across_stores(make_store: MakeStore, clock: FakeClock) -> None:
    a = new_cache(make_store(max_entries=3), clock)
    b = new_cache(make_store(max_entries=3), clock)
    for query in ("red apple pie", "blue whale song", "green tea leaf"):
        a.set(query, query)
        clock.advance(1)
    assert wait_until(lambda: b.get("red apple pie") is not None)  # touches alpha
    clock.advance(1)
    b.set("yellow submarine ride", "yellow")
    assert b.stats.evictions == 1
    assert len(a) == 3
    assert a.get("blue whale song") is None  # the least recently used one
    for query in ("red apple pie", "green tea leaf", "yellow submarine ride"):
        assert wait_until(lambda q=query: a.get(q) is not None, 1.0), query


def test_concurrent_writers_never_over_evict(make_store: MakeStore, clock: FakeClock) -> None:
    stores = [make_store(max_entries=20), make_store(max_entries=20)]
    caches = [new_cache(s, clock) for s in stores]
    errors: list[BaseException] = []

    def writer(cache: SemanticCache, base: int) -> None:
        try:
            for i in range(40):
                assert cache.set(f"question number {base + i}", base + i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(caches[i % 2], 1000 * i)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(caches[0]) == 20
    assert sum(c.stats.evictions for c in caches) == 4 * 40 - 20


def test_invalidate_scope_reaches_other_stores(make_store: MakeStore, clock: FakeClock) -> None:
    a, b = new_cache(make_store(), clock), new_cache(make_store(), clock)
    for i in range(5):
        a.set(f"tenant question {i}", i, scope="t1")
    a.set("tenant question 0", "other tenant", scope="t2")
    assert wait_until(lambda: b.get("tenant question 4", scope="t1") is not None)
    assert b.invalidate("t1") == 5
    for i in range(5):
        assert a.get(f"tenant question {i}", scope="t1") is None
    hit = a.get("tenant question 0", scope="t2")
    assert hit is not None and hit.response == "other tenant"
    assert wait_until(lambda: a.store.search("t1", _vec("tenant question 1"), 4, clock()) == [])


def _vec(text: str) -> Any:
    return unit_vector(HashingEmbedder(dim=DIM).embed_query(text))


def test_delete_where_matches_strings_and_lists(make_store: MakeStore, clock: FakeClock) -> None:
    a_store, b_store = make_store(), make_store()
    now = clock()
    a_store.put(make_entry("q one", 1, metadata={"source_ids": ["d1", "d2"]}), now)
    a_store.put(make_entry("q two", 2, metadata={"source_ids": ["d3"]}), now)
    a_store.put(make_entry("q three", 3, metadata={"index_version": "v1"}), now)
    a_store.put(make_entry("q four", 4, "s", metadata={"index_version": "v1"}), now)
    assert b_store.delete_where(None, "source_ids", ["d2", "d9"]) == 1
    assert b_store.delete_where("", "index_version", ["v1"]) == 1
    assert a_store.count() == 2
    assert a_store.get_exact("", "q two", now) is not None
    assert a_store.get_exact("s", "q four", now) is not None
    assert b_store.delete_where(None, "index_version", ["v1"]) == 1
    assert b_store.delete([digest("", "q two"), digest("", "missing")]) == 1
    assert a_store.count() == 0


def test_put_updates_threshold_seen_by_other_stores(
    make_store: MakeStore, clock: FakeClock
) -> None:
    a, b = make_store(), make_store()
    entry = make_entry("shipping times to canada", "5 days")
    a.put(entry, clock())
    vec = _vec("shipping times to canada")
    assert wait_until(lambda: [c.threshold for c in b.search("", vec, 1, clock())] == [None])
    entry.threshold = 0.97
    a.put(entry, clock())
    assert wait_until(lambda: [c.threshold for c in b.search("", vec, 1, clock())] == [0.97])
    fetched = b.fetch(entry.id, clock())
    assert fetched is not None and fetched.threshold == 0.97 and fetched.response == "5 days"


def test_clear_empties_namespace_for_everyone(
    make_mirror_store: MakeStore, clock: FakeClock, redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    a, b = new_cache(make_mirror_store(), clock), new_cache(make_mirror_store(), clock)
    a.set("keep nothing", 1)
    other = new_cache(make_mirror_store(ns=namespace + "-other"), clock)
    other.set("keep nothing", 2)
    b.clear()
    assert len(a) == 0 and a.get("keep nothing") is None
    assert wait_until(lambda: a.store.dim is None and len(a.store._mirror) == 0)
    hit = other.get("keep nothing")
    assert hit is not None and hit.response == 2
    keys = redis_server.client().keys("{" + namespace + "}:*")
    assert {k.decode().rsplit(":", 1)[-1] for k in keys} <= {"log", "seq", "last"}


def test_foreign_dimension_is_a_counted_miss_never_an_exception(
    make_store: MakeStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_store(), make_store()
    assert b.dim is None
    a.put(make_entry("dimension sixty four", 1), clock())
    small = make_entry("short vector", 2)
    small.vector = unit_vector(np.ones(8, dtype=np.float32))
    with pytest.raises(StoreError, match="dimension 8"):  # the cache turns it into a miss
        b.put(small, clock())
    assert b.breaker.state == "closed"  # the server is fine: not a failure of Redis
    # another model's cache on the same namespace: every call a counted miss, logged once
    other = SemanticCache(HashingEmbedder(dim=8), store=b, clock=clock, threshold=0.8)
    with caplog.at_level("WARNING", logger="rag_optimize.cache.redis"):
        assert other.set("short vector", 2) is False
        assert other.get("short vector question") is None
        assert other.get("another short vector question") is None
    assert other.stats.store_errors == 3
    logged = [r for r in caplog.records if r.name == "rag_optimize.cache.redis"]
    assert sum("dimension" in r.getMessage() for r in logged) == 1
    assert a.dim == DIM and b.dim is None and a.count() == 1


def test_corrupt_foreign_and_wrong_dimension_entries_are_skipped(
    make_store: MakeStore, clock: FakeClock, any_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    writer = new_cache(make_store(), clock)
    queries = ["bad json answer", "foreign namespace entry", "wrong dimension vector",
               "not a hash at all", "a healthy entry"]
    for q in queries:
        writer.set(q, q)
    raw = any_server.client()
    key = {q: entry_key(writer.store, "", digest("", q)) for q in queries}  # type: ignore[arg-type]
    raw.hset(key["bad json answer"], "resp", b"{not json")
    raw.hset(key["foreign namespace entry"], "ns", b"someone-else")
    small = encode_vector(unit_vector(np.ones(8, dtype=np.float32)))
    raw.hset(key["wrong dimension vector"], "vec", small)
    raw.delete(key["not a hash at all"])
    raw.set(key["not a hash at all"], b"\x80\x04pickle?")
    # another namespace's entry for the same query never shows here
    new_cache(make_store(ns=namespace + "-x"), clock).set("other namespace only", "x")

    reader = new_cache(make_store(), clock)  # loads the namespace with the bad entries
    for q in queries[:-1]:
        assert reader.get(q) is None, q
        assert writer.get(q) is None, q
    assert reader.get("other namespace only") is None
    hit = reader.get("a healthy entry")
    assert hit is not None and hit.response == "a healthy entry"
    assert reader.stats.corrupt_entries == 4
    assert writer.stats.corrupt_entries == 4
    assert reader.stats.store_errors == 0 and reader.store.breaker.state == "closed"
    assert reader.invalidate() == 5


async def test_async_twins_across_event_loops(make_store: MakeStore, clock: FakeClock) -> None:
    a, b = new_cache(make_store(), clock), new_cache(make_store(), clock)
    assert await a.aset("async shared question", "yes", scope="s")
    assert wait_until(lambda: b.store.search("s", _vec("async shared question"), 1, clock()))
    hit = await b.aget("async shared question please", scope="s")
    assert hit is not None and hit.response == "yes"

    def other_loop() -> Any:
        return asyncio.run(b.aget("async shared question", scope="s"))

    exact = await asyncio.to_thread(other_loop)
    assert exact is not None and exact.exact
    assert await b.store.acount() == 1
    assert await b.ainvalidate("s") == 1
    assert await a.aget("async shared question", scope="s") is None
    await a.store.aclear()
    await a.store.aclose()


def test_acl_user_from_url_and_wrong_password_fails_open(
    redis_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    raw = redis_server.client()
    raw.execute_command("ACL", "SETUSER", "cacheuser", "on", ">s3cret", "~*", "&*", "+@all")
    url = f"redis://cacheuser:s3cret@127.0.0.1:{redis_server.port}/0"
    with RedisStore(url, namespace, clock=clock) as store:
        cache = new_cache(store, clock)
        assert cache.set("authenticated question", "ok")
        assert cache.get("authenticated question") is not None
    bad = f"redis://cacheuser:wrong@127.0.0.1:{redis_server.port}/0"
    with RedisStore(bad, namespace, clock=clock, startup_wait_ms=0) as store:
        cache = new_cache(store, clock)
        assert cache.set("authenticated question", "no") is False
        assert cache.get("authenticated question") is None
        assert cache.stats.store_errors >= 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a cert")
def test_tls_via_rediss_url(clock: FakeClock) -> None:
    server = RedisServer(tls=True).start()
    try:
        url = server.url + "?ssl_cert_reqs=required"
        with RedisStore(url, "tls", clock=clock, client_options={"ssl_ca_certs": server.cert},
                        timeout_ms=500) as store:
            cache = new_cache(store, clock)
            assert cache.set("encrypted question", "over TLS")
            hit = cache.get("encrypted question")
            assert hit is not None and hit.response == "over TLS"
            assert cache.stats.store_errors == 0
        # a client that does not trust the certificate fails open instead of raising
        with RedisStore(server.url, "tls", clock=clock, startup_wait_ms=0) as untrusted:
            assert new_cache(untrusted, clock).get("encrypted question") is None
    finally:
        server.stop()


def test_plain_server_has_no_search_module(make_store: MakeStore) -> None:
    assert make_store().search_module() is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "glob*"}, "namespace"),
        ({"url": "http://localhost:6379"}, "url"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"max_entries": 0}, "max_entries"),
        ({"staleness_ms": -1}, "staleness_ms"),
        ({"index": "hnsw"}, "index"),
    ],
)
def test_bad_configuration_is_named(options: dict[str, Any], message: str) -> None:
    options.setdefault("url", "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match=message):
        RedisStore(startup_wait_ms=0, **options)


def test_circuit_breaker_opens_cools_down_and_probes() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(failure_threshold=3, cooldown=1.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again for a full cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.opened == 2


def test_gap_in_the_change_log_reloads_the_mirror(
    make_mirror_store: MakeStore, clock: FakeClock, redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    a, b = make_mirror_store(), make_mirror_store()
    a.put(make_entry("before the gap", 1), clock())
    assert wait_until(lambda: b.status()["mirror_entries"] == 1)
    loads = b.status()["loads"]
    # changes the reader never saw (a trimmed stream, a restarted or flushed server)
    redis_server.client().incrby(Keys(namespace).seq, 5)
    a.put(make_entry("after the gap", 2), clock())
    assert wait_until(lambda: b.status()["loads"] == loads + 1)
    assert wait_until(lambda: b.status()["mirror_entries"] == 2)
    assert b.search("", _vec("after the gap"), 1, clock())[0].similarity > 0.99


def test_a_store_dropped_without_close_stops_its_thread(
    redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    import gc

    store = RedisStore(redis_server.url, namespace)
    assert store._path is None and store.search_path is None  # the constructor did no I/O
    store.start()
    thread = store._follower._thread
    assert thread.is_alive()
    del store
    gc.collect()
    thread.join(2.0)
    assert not thread.is_alive()
