"""Two OS processes share one RedisStore namespace (the worker is a separate Python process).

Each side has its own clock that the test moves by the same amounts, so TTLs are tested
without sleeping; visibility is real time by nature and is measured with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    CacheWorker,
    RedisServer,
    namespace,
    redis_server,
    wait_until,
)

START = 1_000.0
VISIBLE = 15.0  # seconds to wait for another process's write: a deadline, not a measurement


@pytest.fixture
def pair(
    redis_server: RedisServer, namespace: str  # noqa: F811
) -> Iterator[tuple[SemanticCache, CacheWorker, FakeClock]]:
    clock = FakeClock(START)
    store = RedisStore(redis_server.url, namespace, clock=clock, max_entries=3)
    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.8, store=store, clock=clock)
    worker = CacheWorker(redis_server.url, namespace, start=START, max_entries=3)
    yield cache, worker, clock
    worker.close()
    store.close()


def advance(clock: FakeClock, worker: CacheWorker, seconds: float) -> None:
    clock.advance(seconds)
    assert worker.call("advance", seconds) == clock()


@pytest.mark.slow
def test_entries_cross_processes_within_the_staleness_bound(pair: Any) -> None:
    cache, worker, _ = pair
    assert cache.set("how do I rotate my api key", {"steps": "Settings > Keys"})
    # Visibility is eventual: the test waits for it (how fast it is, p50/p99, is a benchmark:
    # benchmarks/cache_redis_mirror.py), it never asserts a duration.
    waited = worker.call("until_hit", "how do I rotate my api key quickly", None, VISIBLE)
    assert waited is not None
    assert worker.call("get", "How do I rotate my API key") == {
        "response": {"steps": "Settings > Keys"}, "exact": True
    }
    assert worker.call("set", "where are the invoices", "Billing > Invoices", "tenant-a")
    assert wait_until(lambda: cache.get("where are the invoices", "tenant-a") is not None, VISIBLE)
    hit = cache.get("where are the invoices", scope="tenant-a")
    assert hit is not None and hit.response == "Billing > Invoices"
    assert cache.get("where are the invoices") is None  # other scope
    assert worker.call("get", "where are the invoices", "tenant-b") is None


@pytest.mark.slow
def test_invalidate_ttl_and_eviction_hold_across_processes(pair: Any) -> None:
    cache, worker, clock = pair
    # invalidate(scope) in one process reaches the other at once (Redis is the truth)
    assert worker.call("set", "tenant one question", 1, "t1")
    assert worker.call("set", "tenant two question", 2, "t2")
    assert wait_until(lambda: cache.get("tenant one question", "t1") is not None, VISIBLE)
    assert cache.invalidate("t1") == 1
    assert worker.call("get", "tenant one question", "t1") is None
    assert worker.call("get", "tenant two question", "t2") is not None

    # TTL on both clocks
    assert cache.set("short lived answer", "soon gone", scope="t2", ttl_seconds=30)
    assert worker.call("until_hit", "short lived answer", "t2", 5.0) is not None
    advance(clock, worker, 31)
    assert worker.call("get", "short lived answer", "t2") is None
    assert cache.get("short lived answer", scope="t2") is None

    # eviction: capacity 3 for the namespace, least recently used goes first
    cache.clear()
    for query in ("red apple pie", "blue whale song", "green tea leaf"):
        assert worker.call("set", query, query)
        advance(clock, worker, 1)
    # touch (once visible here): blue whale is now the least recently used
    assert wait_until(lambda: cache.get("red apple pie") is not None, VISIBLE)
    advance(clock, worker, 1)
    assert cache.set("yellow submarine ride", "yellow")
    assert cache.stats.evictions == 1
    assert worker.call("get", "blue whale song") is None
    for query in ("red apple pie", "green tea leaf", "yellow submarine ride"):
        # the last one was written here: visible in the worker after the change log delivers it
        assert worker.call("until_hit", query, None, VISIBLE) is not None, query
    assert len(cache) == 3


@pytest.mark.slow
def test_source_invalidation_and_wrong_hit_feedback_reach_the_other_process(pair: Any) -> None:
    cache, worker, _ = pair
    assert worker.call("set", "how to export a report", "Reports > Export", None,
                       metadata={"source_ids": ["doc-7", "doc-9"]})
    assert worker.call("set", "how to print a report", "Reports > Print", None,
                       metadata={"source_ids": ["doc-8"]})
    assert wait_until(lambda: cache.get("how to export a report") is not None, VISIBLE)
    assert cache.invalidate(source_ids=["doc-9"]) == 1
    assert worker.call("get", "how to export a report") is None
    assert worker.call("get", "how to print a report") is not None

    # a wrong hit reported in this process removes the answer for the worker too
    hit = cache.get("how to print a report quickly")
    assert hit is not None and not hit.exact
    assert cache.feedback(hit, correct=False) == "deleted"
    assert worker.call("get", "how to print a report") is None


@pytest.mark.slow
def test_learned_entry_threshold_reaches_the_other_process(
    redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    """With an error budget a wrong hit raises the entry's own threshold (a ``put`` of the
    revised entry); the other process's mirror picks the new threshold up."""
    clock = FakeClock(START)
    budget = {"max_error_rate": 0.05}
    worker = CacheWorker(redis_server.url, namespace, start=START, cache_options=budget)
    try:
        with RedisStore(redis_server.url, namespace, clock=clock) as store:
            cache = SemanticCache(
                HashingEmbedder(dim=64), threshold=0.8, store=store, clock=clock, **budget
            )
            assert worker.call("set", "how to export a report", "Reports > Export")
            paraphrase = "how to export a report quickly"
            assert wait_until(lambda: cache.get(paraphrase) is not None, VISIBLE)
            assert worker.call("get", paraphrase) is not None
            hit = cache.get(paraphrase)
            assert hit is not None
            assert cache.feedback(hit, correct=False) == "updated"
            assert cache.get(paraphrase) is None
            assert wait_until(lambda: worker.call("get", paraphrase) is None, VISIBLE)
            assert worker.call("get", "how to export a report") is not None  # exact still
    finally:
        worker.close()
