"""InMemoryStore over the vector engine: bulk put, replacement, and no stale vector served
after delete / TTL / LRU eviction, also once a scope is large enough for binary codes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rag_optimize.cache import InMemoryStore, SemanticCache
from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.store import StoreReport
from rag_optimize.cache.vector_table import VectorTable
from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidVectorError

DIM = 32


def vectors(n: int, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def entries(n: int, scope: str = "s", ttl_from: float | None = None) -> list[CacheEntry]:
    vecs = vectors(n)
    return [
        CacheEntry(
            id=f"{scope}-{i}",
            scope=scope,
            query=f"q{i}",
            query_key=f"q{i}",
            vector=vecs[i],
            response=i,
            expires_at=None if ttl_from is None else ttl_from + i,
        )
        for i in range(n)
    ]


def nearest_ids(store: InMemoryStore, scope: str, vector: np.ndarray, k: int = 5) -> list[str]:
    return [c.entry_id for c in store.search(scope, vector, k, now=0.0)]


def test_put_many_equals_one_put_at_a_time() -> None:
    batch = entries(300) + entries(50, scope="t")
    bulk, single = InMemoryStore(max_entries=None), InMemoryStore(max_entries=None)
    bulk.put_many(batch, now=0.0)
    for entry in batch:
        single.put(entry, now=0.0)
    assert bulk.count() == single.count() == 350
    for query in vectors(10, seed=4):
        for scope in ("s", "t"):
            assert nearest_ids(bulk, scope, query) == nearest_ids(single, scope, query)
    assert [e.id for e in bulk.entries()] == [e.id for e in single.entries()]


def test_put_many_checks_every_vector_before_writing() -> None:
    store = InMemoryStore()
    batch = entries(5)
    batch[3].vector = np.ones(DIM + 1, dtype=np.float32)
    with pytest.raises(InvalidVectorError, match="dimension 33"):
        store.put_many(batch, now=0.0)
    assert store.count() == 0


def test_put_many_keeps_the_last_entry_per_id_and_per_query() -> None:
    store = InMemoryStore()
    first, second = entries(2)
    again = CacheEntry("s-0", "s", "q0", "q0", second.vector, "new")
    same_query = CacheEntry("other-id", "s", "q1", "q1", first.vector, "newer")
    store.put_many([first, second, again, same_query], now=0.0)
    assert store.count() == 2
    assert store.get_exact("s", "q0", 0.0).response == "new"  # type: ignore[union-attr]
    assert store.get_exact("s", "q1", 0.0).id == "other-id"  # type: ignore[union-attr]
    assert nearest_ids(store, "s", second.vector, 2)[0] == "s-0"


def test_replacing_an_entry_with_another_query_under_the_same_id_forgets_the_old_key() -> None:
    store = InMemoryStore()
    entry = entries(1)[0]
    store.put(entry, 0.0)
    store.put(CacheEntry(entry.id, "s", "other", "other", entry.vector, "x"), 0.0)
    assert store.get_exact("s", entry.query_key, 0.0) is None
    assert store.get_exact("s", "other", 0.0) is not None


@pytest.mark.parametrize("index", ("auto", "exact", "binary", "hnsw"))
def test_deleted_expired_and_evicted_entries_are_never_found(index: str) -> None:
    n = 5000  # past the 4096 rows where "auto" switches to binary codes
    report = StoreReport()
    store = InMemoryStore(max_entries=n - 200, index=index)  # type: ignore[arg-type]
    batch = entries(n, ttl_from=1000.0)
    store.put_many(batch, now=0.0, report=report)
    assert store.count() == n - 200 and report.evicted == 200
    deleted = [e.id for e in batch[200:400]]
    assert store.delete(deleted) == 200
    # TTLs are 1000 + i: at t=1450 entries 0..450 have expired.
    gone = {e.id for e in batch[:451]}
    for entry in batch[:451:5]:
        found = [c.entry_id for c in store.search("s", entry.vector, 5, now=1450.0)]
        assert len(found) == 5
        assert not set(found) & gone
    entry = batch[600]
    assert nearest_ids(store, "s", entry.vector, 1) == [entry.id]


def test_unknown_index_and_storage_name_the_value() -> None:
    with pytest.raises(ConfigurationError, match="'fast'"):
        InMemoryStore(index="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'f8'"):
        InMemoryStore(storage="f8")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'fast'"):
        VectorTable(DIM, index="fast")  # type: ignore[arg-type]


def test_int8_storage_store_serves_the_same_hits() -> None:
    plain = SemanticCache(HashingEmbedder(), threshold=0.8)
    small = SemanticCache(HashingEmbedder(), threshold=0.8, store=InMemoryStore(storage="int8"))
    for i in range(200):
        for cache in (plain, small):
            cache.set(f"how do I configure feature {i} on the server", f"a{i}")
    for i in range(0, 200, 7):
        question = f"how do I configure feature {i} on the server?"
        want, got = plain.get(question), small.get(question)
        assert want is not None and got is not None
        assert got.response == want.response
        assert got.similarity == pytest.approx(want.similarity, abs=2e-3)


def test_vector_table_add_many_and_search_from_threads() -> None:
    table = VectorTable(DIM)
    vecs = vectors(6000)
    table.add_many([f"id{i}" for i in range(6000)], list(vecs))
    assert table.method == "binary"
    failures: list[str] = []

    def look(start: int) -> None:
        for i in range(start, 6000, 300):
            best = table.search(vecs[i], 1)
            if best[0][0] != f"id{i}":
                failures.append(f"id{i}")

    threads = [threading.Thread(target=look, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for i in range(0, 6000, 2):
        if i % 300 >= 4:  # keep the looked-up ids
            table.remove(f"id{i}")
    for t in threads:
        t.join()
    assert failures == []
    assert len(table) == 6000 - sum(1 for i in range(0, 6000, 2) if i % 300 >= 4)
