"""RedisStore under the faults of issue 14, each against a real server (Redis 7 and 8.2).

A full Redis that refuses writes, a foreign dimension, an oversized or absurdly nested
answer, NaN, bad numeric options, a least-privilege ACL user, many asyncio tasks at once, and
a constructor that must not touch the network.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rag_optimize import (
    ConfigurationError,
    HashingEmbedder,
    InMemoryStore,
    RedisStore,
    SemanticCache,
)
from rag_optimize.cache.redis.options import ConnectionOptions, MirrorOptions
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    REDIS_BIN,
    ROOT,
    RedisServer,
    any_server,
    namespace,
    redis_server,
)

DIM = 64


@pytest.fixture(params=["auto", "mirror"])
def search(request: pytest.FixtureRequest, any_server: RedisServer) -> str:  # noqa: F811
    """``"auto"`` on each server kind, and the mirror path forced on Redis 8.2 too (the path
    for servers without search must hold on a new server as well)."""
    if request.param == "mirror" and any_server.binary == REDIS_BIN:
        pytest.skip("Redis 7 takes the mirror path anyway")
    return str(request.param)


@pytest.fixture
def stores(
    any_server: RedisServer, namespace: str, clock: FakeClock, search: str  # noqa: F811
) -> Iterator[Any]:
    made: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        options.setdefault("clock", clock)
        options.setdefault("search", search)
        store = RedisStore(any_server.url, namespace, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def new_cache(store: Any, clock: FakeClock, dim: int = DIM) -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=dim), store=store, clock=clock, threshold=0.8)


def test_constructor_does_no_io_and_starts_no_thread(clock: FakeClock) -> None:
    before = {t.ident for t in threading.enumerate()}
    # nothing listens on port 1: a constructor that connected would fail or wait
    store = RedisStore("redis://127.0.0.1:1/0", "lazy", clock=clock)
    assert store.search_path is None and store.server is None
    assert {t.ident for t in threading.enumerate()} == before
    cache = new_cache(store, clock)
    assert cache.get("first use connects, fails open") is None
    assert cache.stats.store_errors >= 1
    store.close()


def test_start_picks_the_path_by_server_kind(
    stores: Any, any_server: RedisServer, search: str  # noqa: F811
) -> None:
    store = stores().start()
    assert store.server is not None
    server_side = store.server.vector_sets and search == "auto"
    assert store.search_path == ("server" if server_side else "mirror")
    assert store.status()["search_path"] == store.search_path
    if not store.server.vector_sets:
        with pytest.raises(ConfigurationError, match="vector sets"):
            stores(search="server").start()


def test_reads_work_when_redis_refuses_writes(
    stores: Any, clock: FakeClock, any_server: RedisServer  # noqa: F811
) -> None:
    writer = new_cache(stores().start(), clock)
    for i in range(20):
        assert writer.set(f"stored question number {i}", i)
    raw = any_server.client()
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", str(used // 2))
    try:
        assert writer.set("one more question that will not fit", "x") is False
        reader = new_cache(stores().start(), clock)
        for i in range(20):
            exact = reader.get(f"stored question number {i}")
            assert exact is not None and exact.response == i
            similar = reader.get(f"stored question number {i} please")
            assert similar is not None and similar.response == i
        assert reader.stats.store_errors == 0
    finally:
        raw.config_set("maxmemory", "0")


def test_answers_above_max_value_bytes_are_refused_at_set(stores: Any, clock: FakeClock) -> None:
    cache = new_cache(stores(max_value_bytes=10_000).start(), clock)
    assert cache.set("a small answer", "x" * 100)
    assert cache.set("a big answer", "x" * 20_000) is False
    assert cache.stats.dropped_writes == 1 and cache.get("a big answer") is None
    assert cache.store.breaker.state == "closed"
    assert RedisStore(clock=clock).connection.timeout_ms == 50  # defaults need no server
    assert RedisStore(clock=clock)._shared.max_value_bytes == 4 * 1024 * 1024


def test_deep_json_read_back_is_a_corrupt_entry(
    stores: Any, clock: FakeClock, any_server: RedisServer  # noqa: F811
) -> None:
    store = stores().start()
    cache = new_cache(store, clock)
    cache.set("deeply nested answer", "shallow for now")
    deep = "[" * 200_000 + "]" * 200_000
    raw = any_server.client()
    keys = [k for k in raw.keys("*" + store.namespace + "*:e:*")]
    assert len(keys) == 1
    raw.hset(keys[0], "resp", deep.encode())
    assert cache.get("deeply nested answer") is None
    assert cache.stats.corrupt_entries == 1 and cache.stats.store_errors == 0
    assert store.breaker.state == "closed"


def test_nan_is_refused_alike_by_every_store(stores: Any, clock: FakeClock) -> None:
    for store in (InMemoryStore(), stores().start()):
        cache = new_cache(store, clock)
        with pytest.raises(TypeError, match="JSON"):
            cache.set("a question", {"score": float("nan")})
        with pytest.raises(TypeError, match="JSON"):
            cache.set("a question", "fine", metadata={"x": float("inf")})
        assert cache.get("a question") is None


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"failure_threshold": float("nan")}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"stream_maxlen": 1e30}, "stream_maxlen"),
        ({"max_entries": float("nan")}, "max_entries"),
        ({"max_entries": 2.5}, "max_entries"),
        ({"max_entries": True}, "max_entries"),
        ({"timeout_ms": float("inf")}, "timeout_ms"),
        ({"cooldown_ms": float("nan")}, "cooldown_ms"),
        ({"sweep_interval_ms": 0}, "sweep_interval_ms"),
        ({"startup_wait_ms": -1}, "startup_wait_ms"),
        ({"ttl_grace_ms": float("nan")}, "ttl_grace_ms"),
        ({"max_value_bytes": 0}, "max_value_bytes"),
        ({"search": "fast"}, "search"),
        ({"quantization": "int4"}, "quantization"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_every_numeric_option_is_validated(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        RedisStore("redis://127.0.0.1:1/0", **options)


def test_option_groups_and_old_keywords_are_the_same_thing() -> None:
    grouped = RedisStore(
        connection=ConnectionOptions(timeout_ms=80, failure_threshold=5),
        mirror=MirrorOptions(staleness_ms=30, index="ann"),
    )
    flat = RedisStore(timeout_ms=80, failure_threshold=5, staleness_ms=30, index="ann")
    assert grouped.connection == flat.connection
    assert grouped.mirror_options == flat.mirror_options
    with pytest.raises(ConfigurationError, match="both ways"):
        RedisStore(connection=ConnectionOptions(), timeout_ms=80)


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Shared cache on Redis")
    return text[start:text.index("\n## ", start + 1)]


def test_acl_line_of_the_readme_is_enough(
    clock: FakeClock, any_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    (acl,) = [ln for ln in _readme_section().splitlines() if ln.startswith("ACL SETUSER")]
    args = acl.replace("myapp", namespace).replace("cache-user", "least").split()
    raw = any_server.client()
    raw.execute_command(*args)
    url = f"redis://least:secret@127.0.0.1:{any_server.port}/0"
    store = RedisStore(url, namespace, clock=clock).start()
    try:
        assert store.search_path in ("server", "mirror")
        cache = new_cache(store, clock)
        assert cache.set("least privilege question", "ok", scope="tenant")
        hit = cache.get("least privilege question please", scope="tenant")
        assert hit is not None and hit.response == "ok"
        assert cache.invalidate(source_ids=["d1"]) == 0
        assert cache.invalidate("tenant") == 1
        assert cache.stats.store_errors == 0
        # the pattern the README warns about really drops every write
        raw.execute_command(*acl.replace("cache-user", "wrong").replace(
            "~{myapp/* ~{myapp}:*", "~" + namespace + ":*").split())
        wrong = RedisStore(f"redis://wrong:secret@127.0.0.1:{any_server.port}/0", namespace,
                           clock=clock)
        assert new_cache(wrong, clock).set("refused question", "no") is False
        wrong.close()
    finally:
        store.close()
        raw.execute_command("ACL", "DELUSER", "least", "wrong")


def test_concurrent_asyncio_tasks_and_threads_make_no_store_errors(
    stores: Any, clock: FakeClock
) -> None:
    store = stores(timeout_ms=2000).start()
    cache = new_cache(store, clock)
    for i in range(30):
        assert cache.set(f"concurrent question {i}", i)
    if store.search_path == "mirror":
        assert store.wait_synced(5.0)

    async def task(n: int) -> int:
        hits = 0
        for i in range(30):
            hit = await cache.aget(f"concurrent question {(i + n) % 30} please")
            hits += hit is not None and hit.response == (i + n) % 30
        return hits

    async def main() -> list[int]:
        return await asyncio.gather(*(task(n) for n in range(8)))

    assert asyncio.run(main()) == [30] * 8
    results: list[int] = []

    def thread(n: int) -> None:
        results.append(sum(
            (h := cache.get(f"concurrent question {(i + n) % 30}")) is not None
            and h.response == (i + n) % 30 for i in range(30)
        ))

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [30] * 8
    assert cache.stats.store_errors == 0


def test_deep_json_answer_is_refused_at_set(stores: Any, clock: FakeClock) -> None:
    cache = new_cache(stores().start(), clock)
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match="JSON"):
        cache.set("too deep to store", deep)
    assert cache.get("too deep to store") is None


def test_invalidate_removes_a_scope_whose_index_key_was_evicted(
    stores: Any, clock: FakeClock, any_server: RedisServer  # noqa: F811
) -> None:
    """Under an ``allkeys-*`` maxmemory policy Redis may evict any key, the scope's index
    too (the mirror path's set of its entry ids, the server path's LRU set), while its entry
    hashes stay (and answer by their exact key): ``invalidate(scope)`` must still remove
    every answer of the scope, and nothing of another scope."""
    from rag_optimize.cache.redis.codec import Keys, scope_digest
    from rag_optimize.cache.redis.vsets import VectorSetKeys

    store = stores().start()
    cache = new_cache(store, clock)
    for i in range(30):
        assert cache.set(f"question number {i}", f"A-{i}", scope="A")
        assert cache.set(f"question number {i}", f"B-{i}", scope="B")
    assert store.wait_synced(5.0)
    sd = scope_digest("A")
    index = (
        VectorSetKeys(store.namespace).lru(sd)
        if store.search_path == "server"
        else Keys(store.namespace).scope(sd)
    )
    assert any_server.client().delete(index) == 1  # as evicted
    assert cache.invalidate("A") == 30
    reader = new_cache(stores().start(), clock)  # another process's view, loaded afresh
    for view in (cache, reader):
        for i in range(30):
            assert view.get(f"question number {i}", scope="A") is None
            hit = view.get(f"question number {i}", scope="B")
            assert hit is not None and hit.response == f"B-{i}"
    assert cache.stats.store_errors == 0 and reader.stats.store_errors == 0


def test_clear_removes_a_server_path_scope_whose_lru_set_was_evicted(
    stores: Any, clock: FakeClock, any_server: RedisServer  # noqa: F811
) -> None:
    """``clear()`` walks every scope's LRU set too: with one evicted, its entries (answerable
    by their exact key) must still go, found through the namespace's id map."""
    from rag_optimize.cache.redis.codec import scope_digest
    from rag_optimize.cache.redis.vsets import VectorSetKeys

    store = stores().start()
    if store.search_path != "server":
        pytest.skip("the server path's LRU set")
    cache = new_cache(store, clock)
    for i in range(10):
        assert cache.set(f"question number {i}", f"A-{i}", scope="A")
        assert cache.set(f"question number {i}", f"B-{i}", scope="B")
    raw = any_server.client()
    assert raw.delete(VectorSetKeys(store.namespace).lru(scope_digest("A"))) == 1  # as evicted
    cache.clear()
    reader = new_cache(stores().start(), clock)
    for view in (cache, reader):
        for scope in ("A", "B"):
            for i in range(10):
                assert view.get(f"question number {i}", scope=scope) is None
    assert not raw.keys("{" + store.namespace + "/*")
    assert cache.stats.store_errors == 0 and reader.stats.store_errors == 0


@pytest.mark.parametrize("binary", ["redis7", "redis8"])
def test_allkeys_lru_evicting_the_stores_keys_gives_no_error_and_no_wrong_answer(
    binary: str, clock: FakeClock, namespace: str  # noqa: F811
) -> None:
    """A Redis at ``maxmemory`` with ``allkeys-lru`` evicts entry hashes under the store,
    and may evict its index keys too (simulated by deleting the change log, its counter,
    the LRU set and the dimension mid-run): lookups stay answers of their own scope and
    question or misses; no exception reaches the caller. The mirror path on both servers."""
    from tests.redis_server import redis8_bin

    server = RedisServer(
        binary=REDIS_BIN if binary == "redis7" else redis8_bin(),
        extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"],
    ).start()
    try:
        raw = server.client()
        keys = [f"{{{namespace}}}:{name}" for name in ("log", "seq", "lru", "dim")]

        def store() -> RedisStore:
            return RedisStore(server.url, namespace, clock=clock, timeout_ms=2000,
                              max_entries=None, search="mirror").start()

        writer, reader = new_cache(store(), clock), new_cache(store(), clock)
        wrong = hits = 0
        for i in range(700):
            for scope in ("A", "B"):
                writer.set(f"question number {i}", f"{scope}-{i}", scope=scope)
            if i % 120 == 60:  # an index key "evicted"
                raw.delete(keys[(i // 120) % len(keys)])
            if i % 100 == 99:
                for j in range(i - 99, i + 1, 5):
                    for scope in ("A", "B"):
                        for text in (f"question number {j}", f"question number {j} please"):
                            hit = reader.get(text, scope=scope)
                            hits += hit is not None
                            # (a semantic hit may be a neighbour whose own entry survived:
                            # right if it is that entry's answer, in this scope)
                            wrong += hit is not None and (
                                hit.scope != scope
                                or hit.response != f"{scope}-{hit.matched_query.split()[-1]}"
                                or (hit.exact and hit.response != f"{scope}-{j}")
                            )
        assert int(raw.info("stats")["evicted_keys"]) > 100  # the scenario really happened
        assert hits > 0 and wrong == 0
        for cache in (writer, reader):
            cache.store.close()
    finally:
        server.stop()


@pytest.mark.parametrize("evicted", ["lru", "scope"])
def test_invalidate_by_source_removes_answers_whose_index_key_was_evicted(
    evicted: str, stores: Any, clock: FakeClock, any_server: RedisServer  # noqa: F811
) -> None:
    """``invalidate(source_ids=...)`` scans the LRU set (or, with a scope, the scope's set;
    on the server path each scope's LRU set): with that key evicted while the entries stay,
    the matching answers must still go (the server path finds them in the id map)."""
    from rag_optimize.cache.redis.codec import Keys, scope_digest
    from rag_optimize.cache.redis.vsets import VectorSetKeys

    store = stores().start()
    cache = new_cache(store, clock)
    for i in range(30):
        source = "doc-1" if i % 2 else "doc-2"
        assert cache.set(f"question number {i}", f"A-{i}", scope="A",
                         metadata={"source_ids": [source]})
    assert store.wait_synced(5.0)
    keys = Keys(store.namespace)
    raw = any_server.client()
    if store.search_path == "server":  # one LRU set per scope, the only list of its entries
        assert raw.delete(VectorSetKeys(store.namespace).lru(scope_digest("A"))) == 1
    else:
        assert raw.delete(keys.lru if evicted == "lru" else keys.scope(scope_digest("A"))) == 1
    scope = None if evicted == "lru" else "A"
    assert cache.invalidate(scope, source_ids=["doc-1"]) == 15
    reader = new_cache(stores().start(), clock)
    for view in (cache, reader):
        for i in range(30):
            hit = view.get(f"question number {i}", scope="A")
            assert (hit is None) if i % 2 else (hit is not None and hit.response == f"A-{i}")
