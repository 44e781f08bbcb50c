"""The server-side lookup in one round trip (Redis 8.2, vector sets), against a real server.

On the server-side path :class:`SemanticCache` embeds the query first and calls
``RedisStore.lookup``: one script checks the exact key and, only when it is absent, searches
the scope's vector set and returns the candidates (the first one whole, so the answer needs
no second call). Round trips are counted with the server's own ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rag_optimize import ConfigurationError, HashingEmbedder, RedisStore, SemanticCache
from rag_optimize.cache.keys import digest
from rag_optimize.cache.redis.codec import scope_digest
from rag_optimize.cache.redis.vsets import VectorSetKeys
from tests.conftest import FakeClock
from tests.redis_server import RedisServer, namespace, redis8_server, wait_until  # noqa: F401

DIM = 64
QUERY = "how do i reset my router password"
NEAR = "how do i reset my router password please"


class CountingEmbedder:
    """HashingEmbedder that counts its calls and can be made to fail."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(dim=DIM)
        self.calls = 0
        self.fail = False

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model down")
        return list(self.inner.embed_query(text))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


@pytest.fixture
def make(redis8_server: RedisServer, namespace: str, clock: FakeClock) -> Iterator[Any]:  # noqa: F811
    stores: list[RedisStore] = []

    def build(**options: Any) -> tuple[SemanticCache, CountingEmbedder]:
        options.setdefault("clock", clock)
        options.setdefault("timeout_ms", 1000)
        options.setdefault("exact_first", False)  # the one-call lookup these tests are about
        # VSIM only: these tests count the server's commands, and a local table's loader
        # thread runs its own (one test below counts them with local codes on)
        options.setdefault("local_codes", False)
        store = RedisStore(redis8_server.url, namespace, **options).start()
        stores.append(store)
        embedder = CountingEmbedder()
        cache = SemanticCache(
            embedder, threshold=0.8, store=store, clock=clock, verifier=None
        )
        return cache, embedder

    yield build
    for store in stores:
        store.close()


def calls(server: RedisServer) -> dict[str, int]:
    """Commands the server ran since the last reset (inner script commands included)."""
    stats = server.client().info("commandstats")
    return {k.removeprefix("cmdstat_").lower(): int(v["calls"]) for k, v in stats.items()}


def counted(server: RedisServer, run: Any) -> dict[str, int]:
    server.client().config_resetstat()
    run()
    out = calls(server)
    out.pop("info", None)
    return out


@pytest.mark.parametrize("local_codes", [False, True])
def test_a_semantic_hit_is_one_round_trip(
    make: Any, redis8_server: RedisServer, local_codes: bool  # noqa: F811
) -> None:
    cache, _ = make(local_codes=local_codes)
    cache.set(QUERY, "unplug it")
    assert cache.store.combined_lookup
    if local_codes:  # the first lookup loads the scope's local table (in the background)
        assert cache.get(NEAR) is not None
        assert wait_until(lambda: cache.store.status()["local_tables"] == 1)
    seen: dict[str, Any] = {}
    ran = counted(redis8_server, lambda: seen.setdefault("hit", cache.get(NEAR)))
    assert seen["hit"] is not None and seen["hit"].response == "unplug it"
    # with local codes the candidates come from the table: the script runs no VSIM
    assert ran.get("evalsha") == 1 and ran.get("vsim") == (None if local_codes else 1), ran
    assert cache.stats.hits == 1 + local_codes and cache.stats.exact_hits == 0


def test_an_exact_hit_is_one_round_trip_without_a_vector_search(
    make: Any, redis8_server: RedisServer  # noqa: F811
) -> None:
    cache, embedder = make()
    cache.set(QUERY, "unplug it")
    seen: dict[str, Any] = {}
    ran = counted(redis8_server, lambda: seen.setdefault("hit", cache.get(QUERY.upper())))
    assert seen["hit"] is not None and seen["hit"].response == "unplug it"
    assert ran.get("evalsha") == 1 and "vsim" not in ran, ran
    assert cache.stats.exact_hits == 1


def test_exact_first_checks_the_key_before_the_model(
    make: Any, redis8_server: RedisServer  # noqa: F811
) -> None:
    cache, embedder = make(exact_first=True)
    cache.set(QUERY, "unplug it")
    assert not cache.store.combined_lookup
    before = embedder.calls
    assert cache.get(QUERY) is not None
    assert embedder.calls == before  # an exact repeat never runs the model
    ran = counted(redis8_server, lambda: cache.get(NEAR))
    assert ran.get("evalsha") == 2, ran  # exact check, then the search
    with pytest.raises(ConfigurationError, match="exact_first"):
        RedisStore(exact_first="yes")  # type: ignore[arg-type]


def test_by_default_an_exact_repeat_never_runs_the_model(
    redis8_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    with RedisStore(redis8_server.url, namespace, clock=clock, timeout_ms=1000) as store:
        embedder = CountingEmbedder()
        cache = SemanticCache(embedder, threshold=0.8, store=store, clock=clock, verifier=None)
        cache.set(QUERY, "unplug it")
        assert store.exact_first and not store.combined_lookup
        before = embedder.calls
        hit = cache.get(QUERY)
        assert hit is not None and hit.response == "unplug it"
        assert embedder.calls == before and cache.stats.exact_hits == 1


def test_with_a_local_table_a_semantic_lookup_is_one_call_and_repeats_skip_the_model(
    make: Any, redis8_server: RedisServer, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """``exact_first`` (the default) with the scope's local table loaded: a query whose exact
    entry the table does not hold is embedded and looked up in one call; a repeat it holds
    is checked without the model; one written since by another process is still served
    exactly (the one call checks the key first), at the cost of an embedding."""
    cache, embedder = make(exact_first=True, local_codes=True)
    store = cache.store
    store._path.codes.inline = True  # load the table in this thread
    cache.set(QUERY, "unplug it")
    assert cache.get(NEAR) is not None  # the scope's first lookup: loads the table
    assert store.status()["local_tables"] == 1
    assert not store.lookup_in_one_call("", QUERY) and store.lookup_in_one_call("", NEAR)
    seen: dict[str, Any] = {}
    ran = counted(redis8_server, lambda: seen.setdefault("near", cache.get(NEAR)))
    assert seen["near"] is not None and seen["near"].response == "unplug it"
    assert ran.get("evalsha") == 1 and "vsim" not in ran, ran  # was 2: exact check, search
    before = embedder.calls
    ran = counted(redis8_server, lambda: seen.setdefault("repeat", cache.get(QUERY)))
    assert seen["repeat"] is not None and embedder.calls == before  # the model never ran
    assert ran.get("evalsha", 0) + ran.get("evalsha_ro", 0) + ran.get("hgetall", 0) >= 1
    other = RedisStore(redis8_server.url, namespace, clock=clock, timeout_ms=1000,
                       local_codes=False).start()
    try:
        SemanticCache(HashingEmbedder(dim=DIM), threshold=0.8, store=other, clock=clock,
                      verifier=None).set("what is the wifi password", "on the sticker")
    finally:
        other.close()
    hits = cache.stats.exact_hits
    newer = cache.get("what is the wifi password")
    assert newer is not None and newer.response == "on the sticker"
    assert cache.stats.exact_hits == hits + 1  # exact, though the table did not hold it


def test_a_failing_model_still_serves_exact_hits(make: Any) -> None:
    cache, embedder = make()
    cache.set(QUERY, "unplug it")
    embedder.fail = True
    hit = cache.get(QUERY)
    assert hit is not None and hit.response == "unplug it"
    assert cache.get(NEAR) is None
    assert cache.stats.exact_hits == 1 and cache.stats.embedder_errors == 2


def test_an_expired_exact_entry_is_removed_and_the_search_still_runs(
    make: Any, clock: FakeClock
) -> None:
    cache, _ = make()
    cache.set(QUERY, "short lived", ttl_seconds=10)
    cache.set(QUERY + " today", "lives on")
    clock.advance(11)
    hit = cache.get(QUERY)
    assert hit is not None and hit.response == "lives on"  # the near entry, by search
    assert cache.stats.expirations == 1 and cache.stats.exact_hits == 0
    assert cache.store.count() == 1


def test_a_foreign_key_at_the_exact_id_is_corrupt_and_the_search_still_runs(
    make: Any, redis8_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    cache, _ = make()
    cache.set(NEAR, "by search")
    key = VectorSetKeys(namespace).entry(scope_digest(""), digest("", QUERY))
    redis8_server.client().set(key, b"not a hash")
    hit = cache.get(QUERY)
    assert hit is not None and hit.response == "by search"
    assert cache.stats.corrupt_entries == 1 and cache.stats.store_errors == 0


def test_a_candidate_with_a_broken_vector_is_skipped_and_counted(
    make: Any, redis8_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    cache, _ = make()
    cache.set(QUERY, "broken")
    cache.set("how to reset my router password", "good")
    key = VectorSetKeys(namespace).entry(scope_digest(""), digest("", QUERY))
    redis8_server.client().hset(key, "vec", np.full(DIM, np.nan, dtype="<f4").tobytes())
    hit = cache.get(NEAR)
    assert hit is not None and hit.response == "good"
    assert cache.stats.corrupt_entries == 1


def test_async_lookup_is_the_same_one_call(make: Any, redis8_server: RedisServer) -> None:  # noqa: F811
    cache, _ = make()
    cache.set(QUERY, "unplug it")

    async def both() -> tuple[Any, Any]:
        return await cache.aget(NEAR), await cache.aget(QUERY)

    seen: dict[str, Any] = {}
    ran = counted(redis8_server, lambda: seen.setdefault("hits", asyncio.run(both())))
    near, exact = seen["hits"]
    assert near is not None and exact is not None and near.response == exact.response
    assert ran.get("evalsha") == 2 and ran.get("vsim") == 1, ran
    assert cache.stats.exact_hits == 1 and cache.stats.hits == 2
    cache.store.close()  # the loop's client is gone with the loop


def test_async_lookups_route_by_the_local_table_as_sync_ones_do(
    make: Any, redis8_server: RedisServer  # noqa: F811
) -> None:
    """``exact_first`` with a loaded table, through ``aget``: a semantic lookup is one call,
    a held repeat is answered without the model."""
    cache, embedder = make(exact_first=True, local_codes=True)
    cache.store._path.codes.inline = True
    cache.set(QUERY, "unplug it")
    assert cache.get(NEAR) is not None  # loads the table
    seen: dict[str, Any] = {}
    ran = counted(redis8_server, lambda: seen.setdefault("near", asyncio.run(cache.aget(NEAR))))
    assert seen["near"] is not None and seen["near"].response == "unplug it"
    assert ran.get("evalsha") == 1 and "vsim" not in ran, ran
    before = embedder.calls
    repeat = asyncio.run(cache.aget(QUERY))
    assert repeat is not None and repeat.response == "unplug it" and embedder.calls == before
    cache.store.close()
