"""One contract for every Store, run over each implementation in sync and in async mode.

Like cachetools' ``CacheTestMixin`` run over every cache policy: the same tests over
``InMemoryStore`` (exact and ANN index) and ``RedisStore`` (a real redis-server started for
the session), each once through the blocking methods and once through their ``a``-twins on
an event loop. TTLs run on an injected clock, never by sleeping. A single store is used per
test (a store sees its own writes at once), so nothing here waits for propagation.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rag_optimize import (
    HashingEmbedder,
    InMemoryStore,
    InvalidVectorError,
    RedisStore,
    SemanticCache,
    Store,
)
from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.keys import entry_id, exact_digest, normalise_query
from rag_optimize.cache.store import StoreReport
from rag_optimize.embedding.vectors import unit_vector
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    RedisServer,
    namespace,
    redis8_server,
    redis_server,
    wait_until,
)

DIM = 64
EMBEDDER = HashingEmbedder(dim=DIM)
# "redis": plain Redis 7 (the mirror path); "redis8": Redis 8.2 vector sets (server-side path);
# "redis8-mirror": Redis 8.2 with the mirror path forced (``search="mirror"``);
# "redis8-vsim": the server-side path without local codes (``VSIM`` for every search), while
# "redis8" (the default, local codes) loads each scope's table in the asking thread, so every
# lookup after a scope's first one takes its candidates from the table
KINDS = ["memory-exact", "memory-ann", "redis", "redis8", "redis8-vsim", "redis8-mirror"]
MODES = ["sync", "async"]


class Driven:
    """A store called through its sync methods or through its async twins, one API."""

    def __init__(self, store: Any, mode: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.mode = mode
        self.loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.mode == "sync" or name in ("count", "dim", "drain_report"):
            return getattr(self.store, name)  # type: ignore[no-any-return]
        twin = getattr(self.store, "a" + name)
        return lambda *args, **kwargs: self.loop.run_until_complete(twin(*args, **kwargs))


MakeStore = Callable[..., Driven]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server not on PATH")
    return str(request.param)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def make_store(
    kind: str, mode: str, loop: asyncio.AbstractEventLoop, request: pytest.FixtureRequest,
    clock: FakeClock,
) -> Iterator[MakeStore]:
    made: list[Any] = []

    def make(max_entries: int | None = 100) -> Driven:
        store: Any
        if kind in ("redis", "redis8", "redis8-vsim", "redis8-mirror"):
            fixture = "redis_server" if kind == "redis" else "redis8_server"
            server: RedisServer = request.getfixturevalue(fixture)
            ns = request.getfixturevalue("namespace") + f"-{len(made)}"
            # 1 s timeouts: a loaded test machine is not an outage (outages have their tests)
            store = RedisStore(server.url, ns, max_entries=max_entries, clock=clock,
                               timeout_ms=1000,
                               search="mirror" if kind == "redis8-mirror" else "auto",
                               local_codes=kind != "redis8-vsim")
            if kind == "redis8-mirror":
                assert store.start().search_path == "mirror"
            if kind == "redis8":
                store.start()._path.codes.inline = True
        else:
            store = InMemoryStore(max_entries, index="ann" if kind == "memory-ann" else "exact")
        made.append(store)
        return Driven(store, mode, loop)

    yield make
    for store in made:
        if isinstance(store, RedisStore):
            store.close()


def entry(
    query: str,
    response: Any = None,
    scope: str = "",
    partition: str = "",
    **fields: Any,
) -> CacheEntry:
    key = normalise_query(query)
    return CacheEntry(
        id=entry_id(scope, key, partition),
        scope=scope,
        query=query,
        query_key=key,
        vector=vec(query),
        response=query if response is None else response,
        partition=partition,
        **fields,
    )


def vec(text: str) -> Any:
    return unit_vector(EMBEDDER.embed_query(text))


def test_is_a_store(make_store: MakeStore) -> None:
    assert isinstance(make_store().store, Store)


def test_put_get_exact_fetch_and_search(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    e = entry("How do I reset my password?", {"steps": [1, 2]}, metadata={"src": "d1"})
    store.put(e, now)
    found = store.get_exact("", e.query_key, now)
    assert found is not None and found.response == {"steps": [1, 2]}
    assert found.metadata == {"src": "d1"} and found.id == e.id
    fetched = store.fetch(e.id, now)
    assert fetched is not None and fetched.query == e.query
    best = store.search("", vec("how do i reset my password"), 3, now)
    assert [c.entry_id for c in best][:1] == [e.id] and best[0].similarity > 0.8
    assert store.get_exact("", "some other question", now) is None
    assert store.fetch(entry_id("", "nobody stored this"), now) is None
    assert store.count() == 1 and store.dim == DIM


def test_put_replaces_the_same_id(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    store.put(entry("same question", "old"), now)
    store.put(entry("same question", "new", threshold=0.97), now)
    found = store.get_exact("", "same question", now)
    assert found is not None and found.response == "new" and found.threshold == 0.97
    assert [c.threshold for c in store.search("", vec("same question"), 1, now)] == [0.97]
    assert store.count() == 1


def test_put_many_writes_every_entry_in_order(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    batch = [entry(f"bulk question {i}", i) for i in range(5)] + [entry("bulk question 0", "last")]
    report = StoreReport()
    store.put_many(batch, now, report=report)
    assert store.count() == 5
    found = store.get_exact("", "bulk question 0", now)
    assert found is not None and found.response == "last"
    for i in range(1, 5):
        hit = store.get_exact("", f"bulk question {i}", now)
        assert hit is not None and hit.response == i
    assert report == StoreReport()


def test_scopes_are_isolated(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    store.put(entry("shared question", "answer a", scope="a"), now)
    store.put(entry("shared question", "answer b", scope="b"), now)
    a = store.get_exact("a", "shared question", now)
    assert a is not None and a.response == "answer a" and a.scope == "a"
    found = store.search("b", vec("shared question"), 4, now)
    assert len(found) == 1
    hit = store.fetch(found[0].entry_id, now)
    assert hit is not None and hit.response == "answer b"
    assert store.search("c", vec("shared question"), 4, now) == []
    assert store.invalidate("a") == 1
    assert store.get_exact("a", "shared question", now) is None
    assert store.get_exact("b", "shared question", now) is not None


def test_partitions_are_isolated_and_invalidated_with_their_scope(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store, now = make_store(), clock()
    p1, p2 = exact_digest({"model": "m1"}), exact_digest({"model": "m2"})
    store.put(entry("what is the capital", "m1 says", scope="t", partition=p1), now)
    store.put(entry("what is the capital", "m2 says", scope="t", partition=p2), now)
    store.put(entry("what is the capital", "plain", scope="t"), now)
    store.put(entry("what is the capital", "other tenant", scope="u", partition=p1), now)
    for partition, expected in ((p1, "m1 says"), (p2, "m2 says"), ("", "plain")):
        found = store.get_exact("t", "what is the capital", now, partition=partition)
        assert found is not None and found.response == expected and found.partition == partition
        near = store.search("t", vec("what is the capital"), 4, now, partition=partition)
        assert len(near) == 1
        fetched = store.fetch(near[0].entry_id, now)
        assert fetched is not None and fetched.response == expected
    assert store.get_exact("t", "what is the capital", now, partition=exact_digest("x")) is None
    assert store.invalidate("t") == 3
    for partition in (p1, p2, ""):
        assert store.get_exact("t", "what is the capital", now, partition=partition) is None
        assert store.search("t", vec("what is the capital"), 4, now, partition=partition) == []
    assert store.get_exact("u", "what is the capital", now, partition=p1) is not None
    assert store.count() == 1


def test_delete_counts_only_existing_entries(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    one, two = entry("first question"), entry("second question")
    store.put_many([one, two], now)
    assert store.delete([one.id, entry_id("", "never stored")]) == 1
    assert store.fetch(one.id, now) is None
    assert store.get_exact("", "first question", now) is None
    assert [c.entry_id for c in store.search("", vec("first question"), 4, now)] == [two.id]
    assert store.delete([]) == 0


def test_delete_where_matches_strings_and_lists(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    store.put(entry("q one", metadata={"source_ids": ["d1", "d2"]}), now)
    store.put(entry("q two", metadata={"source_ids": ["d3"]}), now)
    store.put(entry("q three", metadata={"index_version": "v1"}), now)
    store.put(entry("q four", scope="s", metadata={"index_version": "v1"}), now)
    assert store.delete_where(None, "source_ids", ["d2", "d9"]) == 1
    assert store.delete_where("", "index_version", ["v1"]) == 1
    assert store.get_exact("", "q two", now) is not None
    assert store.get_exact("s", "q four", now) is not None
    assert store.delete_where(None, "index_version", ["v1"]) == 1
    assert store.delete_where(None, "source_ids", ["nothing"]) == 0
    assert store.count() == 1


def test_clear_and_count(make_store: MakeStore, clock: FakeClock) -> None:
    store, now = make_store(), clock()
    store.put_many([entry(f"question {i}", scope=str(i % 2)) for i in range(4)], now)
    assert store.count() == 4
    store.clear()
    assert store.count() == 0
    assert store.get_exact("0", "question 0", now) is None
    assert store.search("1", vec("question 1"), 4, now) == []
    store.put(entry("after clear"), now)
    assert store.count() == 1


def test_ttl_expiry_is_reported_once(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    short = entry("short lived", expires_at=clock() + 10)
    store.put(short, clock())
    store.put(entry("long lived"), clock())
    clock.advance(9)
    assert store.fetch(short.id, clock()) is not None
    clock.advance(2)
    report = StoreReport()
    assert store.search("", vec("short lived"), 4, clock(), report=report)[0].entry_id != short.id
    assert store.get_exact("", "short lived", clock(), report=report) is None
    assert store.fetch(short.id, clock(), report=report) is None
    # The expiry may be found by this call's lookups (report) or by a Redis store's background
    # sweep, whose count reaches drain_report() just after its script ran: wait for the one.
    def drained() -> bool:
        report.add(store.drain_report())
        return report.expired > 0

    wait_until(drained, timeout=10.0)
    assert report.expired + store.drain_report().expired == 1
    assert report.evicted == 0
    assert store.get_exact("", "long lived", clock()) is not None


def test_lru_eviction_is_reported_to_the_caller(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store(max_entries=3)
    for query in ("red apple pie", "blue whale song", "green tea leaf"):
        store.put(entry(query), clock())
        clock.advance(1)
    assert store.fetch(entry("red apple pie").id, clock()) is not None  # most recent now
    clock.advance(1)
    report = StoreReport()
    store.put(entry("yellow submarine ride"), clock(), report=report)
    assert report.evicted == 1 and report.expired == 0
    assert store.count() == 3
    assert store.get_exact("", "blue whale song", clock()) is None
    for query in ("red apple pie", "green tea leaf", "yellow submarine ride"):
        assert store.get_exact("", query, clock()) is not None, query
    bulk = StoreReport()
    store.put_many([entry("one more"), entry("and another")], clock(), report=bulk)
    assert bulk.evicted == 2 and store.count() == 3


def test_a_search_marks_nothing_used_but_what_is_fetched(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """LRU order follows what the cache reads: the fetched entry, not every candidate a
    search looked at (the Redis 8 path once marked all of them: then the oldest, the oak
    tree, went first, its id being the lowest of the equal marks)."""
    store = make_store(max_entries=3)
    for query in ("red apple pie", "red apple crumble", "old oak tree"):
        store.put(entry(query), clock())
        clock.advance(1)
    found = store.search("", vec("red apple pie"), 2, clock())
    assert [c.entry_id for c in found] == [entry("red apple pie").id, entry("red apple crumble").id]
    assert store.fetch(entry("red apple pie").id, clock()) is not None
    clock.advance(1)
    report = StoreReport()
    store.put(entry("green tea leaf"), clock(), report=report)
    assert report.evicted == 1
    assert store.get_exact("", "red apple crumble", clock()) is None  # only looked at
    for query in ("red apple pie", "old oak tree", "green tea leaf"):
        assert store.get_exact("", query, clock()) is not None, query


def test_a_search_alone_marks_nothing_used(make_store: MakeStore, clock: FakeClock) -> None:
    """A search the cache does not follow with a fetch (a miss) changes no LRU order: the
    oldest entry still goes first (the Redis 8 path once marked the nearest entry its
    search read whole, so every miss kept an entry it did not serve)."""
    store = make_store(max_entries=3)
    for query in ("red apple pie", "red apple crumble", "old oak tree"):
        store.put(entry(query), clock())
        clock.advance(1)
    found = store.search("", vec("red apple pie"), 2, clock())
    assert found and found[0].entry_id == entry("red apple pie").id
    clock.advance(1)
    report = StoreReport()
    store.put(entry("green tea leaf"), clock(), report=report)
    assert report.evicted == 1
    assert store.get_exact("", "red apple pie", clock()) is None  # the oldest, only looked at
    for query in ("red apple crumble", "old oak tree", "green tea leaf"):
        assert store.get_exact("", query, clock()) is not None, query


def test_wrong_dimension_is_an_input_error(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    store.put(entry("sixty four dims"), clock())
    small = entry("eight dims")
    small.vector = unit_vector([1.0] * 8)
    with pytest.raises(InvalidVectorError):
        store.put(small, clock())
    assert store.count() == 1


def test_drain_report_hands_over_once(make_store: MakeStore) -> None:
    store = make_store()
    first = store.drain_report()
    assert isinstance(first, StoreReport)
    assert store.drain_report() == StoreReport()


def test_two_caches_on_one_store_count_only_their_own_evictions(
    make_store: MakeStore, clock: FakeClock, mode: str, loop: asyncio.AbstractEventLoop
) -> None:
    """The eviction cache ``a`` causes is ``a``'s, not the other cache's (issue: stores
    holding one cache's counters counted ``a.evictions 0, b.evictions 1``)."""
    store = make_store(max_entries=2).store
    a = SemanticCache(EMBEDDER, store=store, clock=clock)
    b = SemanticCache(EMBEDDER, store=store, clock=clock)

    def put(cache: SemanticCache, query: str) -> bool:
        if mode == "sync":
            return cache.set(query, query)
        return loop.run_until_complete(cache.aset(query, query))

    assert put(b, "first question from b")
    clock.advance(1)
    assert put(b, "second question from b")
    clock.advance(1)
    assert put(a, "a question from a")
    assert (a.stats.evictions, b.stats.evictions) == (1, 0)
    assert len(a) == len(b) == 2
