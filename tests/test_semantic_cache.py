"""The semantic cache core over the in-process store."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_optimize import (
    CacheHit,
    ConfigurationError,
    EmbeddingError,
    HashingEmbedder,
    InMemoryStore,
    InvalidInputError,
    InvalidTypeError,
    InvalidVectorError,
    SemanticCache,
    StoreError,
)
from rag_optimize.tracing import LatencyTracker
from rag_optimize.tracing.tracker import SpanRecord
from tests.conftest import FakeClock


class CountingEmbedder(HashingEmbedder):
    """HashingEmbedder that counts embed_query calls precisely."""

    def __init__(self) -> None:
        super().__init__(dim=128)
        self.queries: list[str] = []

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return super().embed_query(text)


class BrokenEmbedder(HashingEmbedder):
    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("model server down")


class BadVectorEmbedder(HashingEmbedder):
    def __init__(self, vector: list[float]) -> None:
        super().__init__()
        self.vector = vector

    def embed_query(self, text: str) -> list[float]:
        return self.vector


def test_paraphrase_hits_and_unrelated_misses() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.8)
    cache.set("How do I reset my password?", "Open Settings > Security.")
    hit = cache.get("how can I reset my password")
    assert isinstance(hit, CacheHit)
    assert hit.response == "Open Settings > Security."
    assert hit.matched_query == "How do I reset my password?"
    assert 0.8 <= hit.similarity <= 1.0
    assert hit.metadata["cache_decision"]["threshold"] == 0.8
    assert cache.get("What is the capital of France?") is None
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.exact_hits, stats.sets) == (1, 1, 0, 1)
    assert stats.hit_rate == 0.5


def test_exact_repeat_makes_no_embedder_call() -> None:
    embedder = CountingEmbedder()
    cache = SemanticCache(embedder)
    cache.set("What is RAG?", "Retrieval-augmented generation.")
    calls = len(embedder.queries)
    hit = cache.get("  what   is rag?  ")
    assert hit is not None and hit.exact and hit.similarity == 1.0
    assert len(embedder.queries) == calls
    assert cache.stats.exact_hits == 1


def test_miss_then_set_embeds_once() -> None:
    embedder = CountingEmbedder()
    cache = SemanticCache(embedder)
    assert cache.get("Who wrote Hamlet?") is None
    assert cache.set("Who wrote Hamlet?", "Shakespeare")
    assert embedder.queries == ["Who wrote Hamlet?"]


def test_scopes_are_isolated() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.5)
    cache.set("reset password", "tenant A answer", scope="a")
    assert cache.get("reset password", scope="b") is None
    assert cache.get("reset password") is None
    hit = cache.get("reset password", scope="a")
    assert hit is not None and hit.response == "tenant A answer" and hit.scope == "a"
    assert cache.invalidate(scope="a") == 1
    assert cache.get("reset password", scope="a") is None


def test_ttl_expiry_with_injected_clock(clock: FakeClock) -> None:
    cache = SemanticCache(HashingEmbedder(), ttl_seconds=10, clock=clock)
    cache.set("q one", "a1")
    cache.set("q two", "a2", ttl_seconds=100)
    clock.advance(5)
    hit = cache.get("q one")
    assert hit is not None and hit.age_seconds == pytest.approx(5)
    clock.advance(6)
    assert cache.get("q one") is None
    assert cache.get("q two") is not None
    assert cache.stats.expirations == 1
    assert len(cache) == 1


def test_lru_eviction_order(clock: FakeClock) -> None:
    cache = SemanticCache(HashingEmbedder(), max_entries=3, clock=clock)
    for name in ("alpha", "bravo", "charlie"):
        cache.set(f"question {name}", name)
    assert cache.get("question alpha") is not None  # alpha is now most recently used
    cache.set("question delta", "delta")  # evicts bravo, the least recently used
    assert cache.get("question bravo") is None
    assert [cache.get(f"question {n}") is not None for n in ("alpha", "charlie", "delta")] == [
        True,
        True,
        True,
    ]
    assert cache.stats.evictions == 1
    assert len(cache) == 3


def test_set_replaces_same_query() -> None:
    cache = SemanticCache(HashingEmbedder())
    cache.set("same question", "old")
    cache.set("Same  question", "new")
    hit = cache.get("same question")
    assert hit is not None and hit.response == "new"
    assert len(cache) == 1


def test_failing_embedder_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    cache = SemanticCache(BrokenEmbedder())
    for _ in range(5):
        assert cache.get("anything") is None
    assert cache.set("anything", "answer") is False
    stats = cache.stats
    assert stats.embedder_errors == 6 and stats.misses == 5 and stats.dropped_writes == 1
    warnings = [r for r in caplog.records if "failing" in r.getMessage()]
    assert len(warnings) == 1  # logged once per incident, not per call


@pytest.mark.parametrize(
    ("vector", "message"),
    [([math.nan] * 4, "NaN"), ([0.0] * 4, "zero"), ([], "non-empty")],
)
def test_bad_vectors_from_the_embedder_raise(vector: list[float], message: str) -> None:
    cache = SemanticCache(BadVectorEmbedder(vector))
    with pytest.raises(InvalidVectorError, match=message):
        cache.get("question")


def test_dimension_change_is_rejected() -> None:
    embedder = BadVectorEmbedder([1.0, 0.0, 0.0])
    cache = SemanticCache(embedder)
    cache.set("first", "x")
    embedder.vector = [1.0, 0.0]
    with pytest.raises(InvalidVectorError, match="dimension 2, expected 3"):
        cache.get("second")


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_empty_query_rejected(query: str) -> None:
    cache = SemanticCache(HashingEmbedder())
    with pytest.raises(InvalidInputError, match="empty"):
        cache.get(query)
    with pytest.raises(InvalidInputError, match="empty"):
        cache.set(query, "x")


def test_wrong_types_rejected() -> None:
    cache = SemanticCache(HashingEmbedder())
    with pytest.raises(TypeError, match="query must be a str"):
        cache.get(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scope must be"):
        cache.get("q", scope=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        cache.set("q", object())
    with pytest.raises(TypeError, match="embed_query"):
        SemanticCache(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01, math.nan])
def test_threshold_range(threshold: float) -> None:
    with pytest.raises(ConfigurationError, match="threshold"):
        SemanticCache(HashingEmbedder(), threshold=threshold)


def test_options_validated() -> None:
    with pytest.raises(ConfigurationError, match="ttl_seconds"):
        SemanticCache(HashingEmbedder(), ttl_seconds=0)
    with pytest.raises(ConfigurationError, match="max_entries"):
        SemanticCache(HashingEmbedder(), max_entries=0)
    with pytest.raises(ConfigurationError, match="index"):
        SemanticCache(HashingEmbedder(), index="fast")  # type: ignore[arg-type]


async def test_async_api_matches_sync() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.8)
    assert await cache.aget("How do I reset my password?") is None
    assert await cache.aset("How do I reset my password?", {"text": "Settings"})
    hit = await cache.aget("how can i reset my password")
    assert hit is not None and hit.response == {"text": "Settings"}
    assert await cache.ainvalidate() == 1
    await cache.aclear()
    assert cache.stats.lookups == 0


class AsyncOnlyEmbedder(HashingEmbedder):
    """An embedder whose sync path must not be used from async code."""

    def __init__(self) -> None:
        super().__init__()
        self.async_calls = 0

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("sync embed_query called from the async path")

    async def aembed_query(self, text: str) -> list[float]:
        self.async_calls += 1
        return self._embed(text)


async def test_async_uses_native_aembed_query() -> None:
    embedder = AsyncOnlyEmbedder()
    cache = SemanticCache(embedder)
    await cache.aset("hello world question", "hi")
    assert await cache.aget("Hello  World question") is not None
    assert embedder.async_calls == 1  # the second lookup was an exact hit


def test_concurrent_threads_and_tasks_stats_add_up() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.95, max_entries=50)
    errors: list[BaseException] = []
    per_worker = 40

    def worker(i: int) -> None:
        try:
            for j in range(per_worker):
                q = f"question number {(i * 7 + j) % 60}"
                if cache.get(q) is None:
                    cache.set(q, f"answer {(i * 7 + j) % 60}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    async def tasks() -> None:
        async def one(i: int) -> None:
            for j in range(per_worker):
                q = f"question number {(i * 11 + j) % 60}"
                if await cache.aget(q) is None:
                    await cache.aset(q, f"answer {(i * 11 + j) % 60}")

        await asyncio.gather(*(one(i) for i in range(8)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert errors == []
    stats = cache.stats
    assert stats.hits + stats.misses == 16 * per_worker
    assert stats.entries <= 50
    for i in range(60):
        hit = cache.get(f"question number {i}")
        assert hit is None or hit.response == f"answer {i}"


def test_ann_index_finds_the_same_entries() -> None:
    exact = SemanticCache(HashingEmbedder(), threshold=0.7)
    ann = SemanticCache(HashingEmbedder(), threshold=0.7, index="ann")
    for i in range(300):
        for cache in (exact, ann):
            cache.set(f"topic {i} details about item {i * 3}", i)
    agree = sum(
        (exact.get(f"details about topic {i} item {i * 3}") or CacheHit(-1, 0, "", 0, {})).response
        == (ann.get(f"details about topic {i} item {i * 3}") or CacheHit(-1, 0, "", 0, {})).response
        for i in range(300)
    )
    assert agree >= 290


_scopes = st.sampled_from(["", "a", "b", "tenant-c"])
_queries = st.sampled_from(["reset password", "reset my password", "billing", "refund policy"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "get", "inv"]), _scopes, _queries), max_size=40))
def test_property_no_lookup_returns_another_scopes_entry(
    ops: list[tuple[str, str, str]],
) -> None:
    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.3, store=InMemoryStore(8))
    for op, scope, query in ops:
        if op == "set":
            cache.set(query, {"scope": scope, "query": query}, scope=scope)
        elif op == "inv":
            cache.invalidate(scope=scope)
        else:
            hit = cache.get(query, scope=scope)
            if hit is not None:
                assert hit.response["scope"] == scope
                assert hit.scope == scope


def test_cache_scope_context_applies_when_no_scope_given() -> None:
    from rag_optimize import cache_scope

    cache = SemanticCache(HashingEmbedder(), threshold=0.5)
    with cache_scope("tenant-a"):
        cache.set("reset password", "A")
        assert cache.get("reset password") is not None
        assert cache.get("reset password", scope="tenant-b") is None
    assert cache.get("reset password") is None
    assert cache.get("reset password", scope="tenant-a") is not None


def test_delete_where_on_metadata() -> None:
    store = InMemoryStore()
    cache = SemanticCache(HashingEmbedder(), store=store)
    cache.set("q1 about docs", "a", metadata={"source_ids": ["d1", "d2"]})
    cache.set("q2 other things", "b", metadata={"source_ids": ["d3"]}, scope="x")
    cache.set("q3 more", "c", metadata={"index_version": "v1"})
    assert store.delete_where(None, "source_ids", ["d2", "d3"]) == 2
    assert store.delete_where("", "index_version", ["v1"]) == 1
    assert len(cache) == 0


def test_require_scope_fails_closed() -> None:
    from rag_optimize import cache_scope

    cache = SemanticCache(HashingEmbedder(), threshold=0.5, require_scope=True)
    assert cache.set("reset password", "shared") is False  # dropped: no scope
    assert cache.set("reset password", "shared", scope="") is False  # "" is the shared scope
    assert cache.set("reset password", "A", scope="tenant-a") is True
    assert cache.get("reset password") is None  # miss, even though tenant-a has it
    with cache_scope("tenant-a"):
        hit = cache.get("reset password")
        assert hit is not None and hit.response == "A"
    stats = cache.stats
    assert (stats.unscoped_lookups, stats.unscoped_writes) == (1, 2)
    assert (stats.misses, stats.dropped_writes, stats.hits, len(cache)) == (1, 2, 1, 1)


async def test_require_scope_async() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.5, require_scope=True)
    assert await cache.aset("reset password", "A") is False
    assert await cache.aset("reset password", "A", scope="t") is True
    assert await cache.aget("reset password") is None
    assert await cache.aget("reset password", scope="t") is not None


def _sourced_cache() -> SemanticCache:
    cache = SemanticCache(HashingEmbedder(), threshold=0.9)
    for query, scope, sources, version in [
        ("q1 about docs", None, ["d1", "d2"], "v1"),
        ("q2 about docs", "t", ["d2"], "v1"),
        ("q3 about docs", "t", ["d3"], "v2"),
    ]:
        metadata = {"source_ids": sources, "index_version": version}
        cache.set(query, query[:2], scope=scope, metadata=metadata)
    return cache


def test_invalidate_by_source_ids_in_every_scope_or_one() -> None:
    cache = _sourced_cache()
    assert cache.invalidate(source_ids=["d2"], scope="t") == 1
    assert cache.get("q1 about docs") is not None
    assert cache.invalidate(source_ids=["d2", "d9"]) == 1
    assert cache.get("q1 about docs") is None
    assert cache.get("q3 about docs", scope="t") is not None
    assert len(cache) == 1


def test_invalidate_by_index_version() -> None:
    cache = _sourced_cache()
    assert cache.invalidate(index_version="v1") == 2
    assert cache.get("q3 about docs", scope="t") is not None
    assert cache.invalidate(index_version=["v2", "v3"]) == 1
    assert len(cache) == 0


async def test_ainvalidate_by_source_ids_and_version() -> None:
    cache = _sourced_cache()
    assert await cache.ainvalidate(source_ids=["d1"]) == 1
    assert await cache.ainvalidate(scope="t", source_ids=["d3"], index_version="v1") == 2
    assert len(cache) == 0
    assert await cache.ainvalidate(scope="t") == 0


def test_invalidate_input_checked() -> None:
    cache = _sourced_cache()
    with pytest.raises(TypeError, match="source_ids"):
        cache.invalidate(source_ids="d1")
    with pytest.raises(InvalidInputError, match="empty"):
        cache.invalidate(source_ids=[])
    with pytest.raises(InvalidInputError, match="non-empty str"):
        cache.invalidate(index_version=[""])
    assert len(cache) == 3


class ClockedEmbedder(HashingEmbedder):
    """Advances a fake tracker clock by 5 ms per embedding: the cache span must contain it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(dim=64)
        self.clock = clock

    def embed_query(self, text: str) -> list[float]:
        self.clock.advance(0.005)
        return super().embed_query(text)


def _traced_cache(clock: FakeClock) -> tuple[SemanticCache, LatencyTracker, list[SpanRecord]]:
    tracker = LatencyTracker(clock=clock)
    samples: list[SpanRecord] = []
    tracker.add_listener(samples.append)
    cache = SemanticCache(ClockedEmbedder(clock), threshold=0.9, tracker=tracker)
    return cache, tracker, samples


def test_tracker_records_cache_stage_with_hit_flag_in_current_run(clock: FakeClock) -> None:
    cache, tracker, samples = _traced_cache(clock)
    with tracker.run() as run_id:
        assert cache.get("what is the capital of france") is None
        cache.set("what is the capital of france", "Paris")
        assert cache.get("what is the capital of france") is not None  # exact path
        hit = cache.get("what is the capital of france please")
    assert [s.stage for s in samples if s.stage == "cache"] == ["cache"] * 3
    cache_samples = [s for s in samples if s.stage == "cache"]
    assert [s.attributes["hit"] for s in cache_samples] == [False, True, hit is not None]
    assert all(s.run_id == run_id for s in cache_samples)
    assert cache_samples[0].seconds == pytest.approx(0.005)  # the miss embedded the query
    assert cache_samples[1].seconds == pytest.approx(0.0)  # exact hit: no embedding
    record = tracker.run_report(run_id)
    assert record is not None and record.counts["cache"] == 3
    assert tracker.report()["cache"].count == 3


async def test_tracker_records_cache_stage_for_aget(clock: FakeClock) -> None:
    cache, tracker, samples = _traced_cache(clock)
    with tracker.run() as run_id:
        assert await cache.aget("who wrote hamlet") is None
        await cache.aset("who wrote hamlet", "Shakespeare")
        assert await cache.aget("who wrote hamlet") is not None
    cache_samples = [s for s in samples if s.stage == "cache"]
    assert [s.attributes["hit"] for s in cache_samples] == [False, True]
    assert all(s.run_id == run_id for s in cache_samples)
    assert cache_samples[0].seconds == pytest.approx(0.005)


def test_no_tracker_records_nothing_and_lookups_still_work(clock: FakeClock) -> None:
    cache = SemanticCache(ClockedEmbedder(clock), threshold=0.9)
    assert cache.tracker is None
    cache.set("q one", "a")
    assert cache.get("q one") is not None


# --------------------------------------------------------------------------------------
# One flow, two drivers: the tests below run every call through the sync API and through
# the async API (``mode``), so the async plans are exercised as much as the sync ones.


class Api:
    """A cache called through its sync methods or their async twins, one interface."""

    def __init__(self, cache: SemanticCache, mode: str) -> None:
        self.cache = cache
        self.mode = mode

    def __getattr__(self, name: str):  # noqa: ANN204 - forwards any cache method
        if self.mode == "sync":
            return getattr(self.cache, name)
        twin = getattr(self.cache, "a" + name)
        return lambda *args, **kwargs: asyncio.run(twin(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FailingStore(InMemoryStore):
    """An in-process store whose backend is 'down' while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("backend unreachable")

    def get_exact(self, *args: object, **kwargs: object):  # noqa: ANN201
        self._check()
        return super().get_exact(*args, **kwargs)  # type: ignore[arg-type]

    def search(self, *args: object, **kwargs: object):  # noqa: ANN201
        self._check()
        return super().search(*args, **kwargs)  # type: ignore[arg-type]

    def put(self, *args: object, **kwargs: object) -> None:
        self._check()
        super().put(*args, **kwargs)  # type: ignore[arg-type]

    def put_many(self, *args: object, **kwargs: object) -> None:
        self._check()
        super().put_many(*args, **kwargs)  # type: ignore[arg-type]

    def invalidate(self, scope: str) -> int:
        self._check()
        return super().invalidate(scope)


class BatchCountingEmbedder(HashingEmbedder):
    """Counts embed_query and embed_documents calls (and the texts of each batch)."""

    def __init__(self) -> None:
        super().__init__(dim=128)
        self.queries: list[str] = []
        self.batches: list[list[str]] = []

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return super().embed_query(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return super().embed_documents(texts)


def test_exact_parts_never_answer_each_other(mode: str) -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.8)
    api = Api(cache, mode)
    model_a = {"model": "model-a", "system": "You are terse."}
    model_b = {"model": "model-b", "system": "You are terse."}
    assert api.set("How do I reset my password?", "a says", "t", exact=model_a)
    assert api.set("How do I reset my password?", "b says", "t", exact=model_b)
    for exact, expected in ((model_a, "a says"), (model_b, "b says")):
        hit = api.get("How do I reset my password?", "t", exact=exact)
        assert hit is not None and hit.exact and hit.response == expected
        near = api.get("how can I reset my password", "t", exact=exact)
        assert near is not None and not near.exact and near.response == expected
    assert api.get("How do I reset my password?", "t") is None  # no exact part: other entries
    assert api.get("how can I reset my password", "t", exact={"model": "model-c"}) is None
    assert api.get("How do I reset my password?", "u", exact=model_a) is None  # other scope
    # mapping key order does not matter, the values do
    reordered = {"system": "You are terse.", "model": "model-a"}
    hit = api.get("How do I reset my password?", "t", exact=reordered)
    assert hit is not None and hit.response == "a says"
    assert len(cache) == 2
    assert api.invalidate("t") == 2  # a scope goes with all its exact parts
    assert api.get("How do I reset my password?", "t", exact=model_a) is None
    assert cache.stats.invalidated == 2


def test_exact_part_is_hashed_canonically() -> None:
    from rag_optimize.cache import exact_digest

    assert exact_digest(None) == ""
    assert exact_digest({"a": 1, "b": [1, 2]}) == exact_digest({"b": [1, 2], "a": 1})
    assert exact_digest([1, 2]) != exact_digest([2, 1])
    assert exact_digest("x") != exact_digest(["x"])
    assert len(exact_digest("model")) == 32
    with pytest.raises(InvalidTypeError, match="JSON"):
        exact_digest({"tool": object()})
    with pytest.raises(TypeError, match="exact must be"):
        exact_digest(42)
    cache = SemanticCache(HashingEmbedder())
    with pytest.raises(ValueError, match="exact must be"):
        cache.get("a question", exact=b"bytes")  # type: ignore[arg-type]


def test_set_many_embeds_in_one_batch(mode: str) -> None:
    embedder = BatchCountingEmbedder()
    cache = SemanticCache(embedder, threshold=0.8)
    api = Api(cache, mode)
    assert api.get("Who wrote Hamlet?", "s") is None  # its vector is kept for the write
    items = [
        ("Who wrote Hamlet?", "Shakespeare"),
        ("What is the capital of France?", "Paris", {"source_ids": ["atlas"]}),
        ("How tall is Mount Everest?", "8849 m"),
    ]
    assert api.set_many(items, "s", metadata={"source_ids": ["default"]}) == 3
    assert embedder.batches == [["What is the capital of France?", "How tall is Mount Everest?"]]
    assert embedder.queries == ["Who wrote Hamlet?"]  # the lookup, not the write
    hit = api.get("what is the  capital of France?", "s")
    assert hit is not None and hit.exact and hit.response == "Paris"
    assert hit.metadata["source_ids"] == ["atlas"]
    near = api.get("how tall is mount everest exactly", "s")
    assert near is not None and near.response == "8849 m"
    assert near.metadata["source_ids"] == ["default"]
    assert cache.stats.sets == 3
    assert api.invalidate(source_ids=["atlas"]) == 1
    with pytest.raises(InvalidInputError, match="at least one"):
        api.set_many([])
    with pytest.raises(TypeError, match="pairs"):
        api.set_many({"q": "a"})  # type: ignore[arg-type]


def test_set_many_with_a_failing_model_or_store_drops_the_batch(mode: str) -> None:
    class DownEmbedder(HashingEmbedder):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("model server down")

    cache = SemanticCache(DownEmbedder())
    api = Api(cache, mode)
    assert api.set_many([("one question", 1), ("two question", 2)]) == 0
    assert (cache.stats.embedder_errors, cache.stats.dropped_writes) == (1, 2)
    store = FailingStore()
    cache = SemanticCache(HashingEmbedder(), store=store)
    api = Api(cache, mode)
    store.down = True
    assert api.set_many([("one question", 1), ("two question", 2)]) == 0
    assert (cache.stats.store_errors, cache.stats.dropped_writes, cache.stats.sets) == (1, 2, 0)
    store.down = False
    assert api.set_many([("one question", 1), ("two question", 2)]) == 2


def test_store_outage_fails_open_in_both_modes(mode: str) -> None:
    store = FailingStore()
    cache = SemanticCache(HashingEmbedder(), store=store)
    api = Api(cache, mode)
    assert api.set("what is the refund policy", "30 days")
    store.down = True
    assert api.get("what is the refund policy") is None
    assert api.set("another question", "x") is False
    assert api.invalidate() == 0
    stats = cache.stats
    assert (stats.store_errors, stats.misses, stats.dropped_writes) == (4, 1, 1)
    store.down = False
    hit = api.get("what is the refund policy")
    assert hit is not None and hit.response == "30 days"


def test_ttl_and_eviction_counted_in_both_modes(mode: str, clock: FakeClock) -> None:
    cache = SemanticCache(HashingEmbedder(), ttl_seconds=10, max_entries=2, clock=clock)
    api = Api(cache, mode)
    api.set("question alpha", "a")
    api.set("question bravo", "b", ttl_seconds=100)
    api.set("question charlie", "c", ttl_seconds=100)  # evicts alpha
    assert cache.stats.evictions == 1
    clock.advance(11)
    api.set("question delta", "d")  # evicts bravo (charlie is newer)
    clock.advance(11)
    assert api.get("question delta") is None  # expired
    assert (cache.stats.evictions, cache.stats.expirations) == (2, 1)


def test_feedback_in_both_modes(mode: str) -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.8)
    api = Api(cache, mode)
    api.set("How do I reset my password?", "Settings")
    hit = api.get("how can I reset my password")
    assert hit is not None
    assert api.feedback(hit, True) == "updated"
    assert api.feedback(hit, False) == "deleted"
    assert api.feedback(hit, False) == "missing"
    stats = cache.stats
    assert (stats.feedback_correct, stats.feedback_wrong, stats.tombstones) == (1, 2, 1)


def test_error_budget_settings_object_and_old_keywords_agree() -> None:
    from rag_optimize import ErrorBudgetSettings

    settings = ErrorBudgetSettings(max_error_rate=0.05, confidence=0.9, min_threshold=0.6,
                                   learn_from_misses=False)
    grouped = SemanticCache(HashingEmbedder(), threshold=0.85, error_budget=settings)
    old = SemanticCache(HashingEmbedder(), threshold=0.85, max_error_rate=0.05, confidence=0.9,
                        min_threshold=0.6, learn_from_misses=False)
    for cache in (grouped, old):
        budget = cache.error_budget
        assert budget is not None
        assert (budget.max_error_rate, budget.confidence, budget.min_threshold) == (0.05, 0.9, 0.6)
        assert cache.learn_from_misses is False
    assert SemanticCache(HashingEmbedder()).error_budget is None
    assert SemanticCache(HashingEmbedder(), learn_from_misses=False).learn_from_misses is False
    with pytest.raises(ConfigurationError, match="not both.*confidence"):
        SemanticCache(HashingEmbedder(), error_budget=settings, confidence=0.99)
    with pytest.raises(TypeError, match="ErrorBudgetSettings"):
        SemanticCache(HashingEmbedder(), error_budget=0.02)  # type: ignore[arg-type]


def test_verifier_explanation_is_recorded_on_the_hit(mode: str) -> None:
    class ExplainingVerifier:
        def __call__(self, query: str, cached_query: str) -> bool:
            return True

        def explain(self, query: str, cached_query: str) -> dict[str, object]:
            return {"compared": [query, cached_query], "vote": "allow"}

    cache = SemanticCache(HashingEmbedder(), threshold=0.8, verifier=ExplainingVerifier())
    api = Api(cache, mode)
    api.set("How do I reset my password?", "Settings")
    hit = api.get("how can I reset my password")
    assert hit is not None
    decision = hit.metadata["cache_decision"]
    assert decision["verifier"] == "ExplainingVerifier"
    assert decision["verifier_detail"] == {
        "compared": ["how can I reset my password", "How do I reset my password?"],
        "vote": "allow",
    }
    exact = api.get("How do I reset my password?")
    assert exact is not None and "verifier_detail" not in exact.metadata["cache_decision"]


def test_constructor_touches_no_store() -> None:
    """No I/O in the constructor: the store is not called (not even for its dimension)."""

    class Untouchable:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the constructor used store.{name}")

    cache = SemanticCache(HashingEmbedder(), store=Untouchable())  # type: ignore[arg-type]
    assert isinstance(cache.store, Untouchable)


def test_str_subclasses_and_bad_keys_through_the_fast_key_path(mode: str) -> None:
    """The key is built on a fast path for plain str; a str subclass (query or scope) is
    still a str, and a non-str or blank query or a non-str scope is still refused."""

    class Text(str):
        pass

    cache = SemanticCache(HashingEmbedder(), verifier=None)
    api = Api(cache, mode)
    api.set("How do I reset my password?", "Settings", scope="tenant-a")
    hit = api.get(Text("  how do I RESET my password?"), scope=Text("tenant-a"))
    assert hit is not None and hit.exact and hit.response == "Settings"
    assert api.get("How do I reset my password?", scope="tenant-b") is None
    with pytest.raises(InvalidTypeError, match="query must be a str"):
        api.get(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="query is empty"):
        api.get(Text("   "))
    with pytest.raises(InvalidTypeError, match="scope must be a str"):
        api.get("How do I reset my password?", scope=7)  # type: ignore[arg-type]


def test_set_many_stores_what_set_one_at_a_time_stores(mode: str) -> None:
    """The bulk plan (one JSON pass, one matrix normalised at once, one put_many) writes the
    same entries as ``set`` per item: ids, vectors, responses, metadata, lookups."""
    items = [(f"question number {i} about topic {i % 7}", {"n": i}) for i in range(40)]
    one, bulk = SemanticCache(HashingEmbedder(), threshold=0.8), SemanticCache(
        HashingEmbedder(), threshold=0.8
    )
    for query, response in items:
        assert one.set(query, response, "s", metadata={"source_ids": [str(response["n"])]})
    api = Api(bulk, mode)
    with_meta = [(q, r, {"source_ids": [str(r["n"])]}) for q, r in items]
    assert api.set_many(with_meta, "s") == len(items)
    a = {e.id: e for e in one.store.entries()}  # type: ignore[attr-defined]
    b = {e.id: e for e in bulk.store.entries()}  # type: ignore[attr-defined]
    assert a.keys() == b.keys()
    for entry_id, entry in a.items():
        other = b[entry_id]
        assert (entry.query, entry.query_key, entry.response, entry.metadata) == (
            other.query, other.query_key, other.response, other.metadata
        )
        assert np.allclose(entry.vector, other.vector, atol=1e-6)
    for query, response in items:
        hit = api.get(query.upper() + " ", "s")
        assert hit is not None and hit.exact and hit.response == response


def test_set_many_refuses_a_bad_batch_naming_the_fault(mode: str) -> None:
    class ShortBatchEmbedder(HashingEmbedder):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return super().embed_documents(texts)[:-1]

    api = Api(SemanticCache(ShortBatchEmbedder()), mode)
    with pytest.raises(EmbeddingError, match="1 vectors for 2 texts"):
        api.set_many([("one question", 1), ("two question", 2)])
    cache = SemanticCache(HashingEmbedder())
    api = Api(cache, mode)
    with pytest.raises(InvalidTypeError, match="JSON-serialisable"):
        api.set_many([("one question", 1), ("two question", object())])
    with pytest.raises(InvalidTypeError, match="metadata must be a dict"):
        api.set_many([("one question", 1, ["not", "a", "dict"])])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="JSON-serialisable"):
        api.set_many([("one question", math.nan)])
    assert len(cache) == 0  # nothing of a refused batch is kept
