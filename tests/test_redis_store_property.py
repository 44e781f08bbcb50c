"""Property: no interleaving of set/get/invalidate across scopes and two stores ever answers
a lookup with another scope's entry, or with an entry that was invalidated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from tests.conftest import FakeClock
from tests.redis_server import RedisServer, redis_server  # noqa: F401

SCOPES = ["", "tenant-a", "tenant-b"]
# near-paraphrases: semantically tempting across scopes at threshold 0.75
QUERIES = [
    "how do I reset my password",
    "how do I reset my password now",
    "reset password steps",
    "how do I change my email",
    "change my email address now",
]

op = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1), st.sampled_from(SCOPES),
              st.integers(0, len(QUERIES) - 1)),
    st.tuples(st.just("get"), st.integers(0, 1), st.sampled_from(SCOPES),
              st.integers(0, len(QUERIES) - 1)),
    st.tuples(st.just("invalidate"), st.integers(0, 1), st.sampled_from(SCOPES), st.just(0)),
)


@pytest.fixture(scope="module")
def caches(redis_server: RedisServer) -> Iterator[list[SemanticCache]]:  # noqa: F811
    clock = FakeClock()
    stores = [RedisStore(redis_server.url, "property", clock=clock) for _ in range(2)]
    yield [
        SemanticCache(HashingEmbedder(dim=64), threshold=0.75, store=s, clock=clock)
        for s in stores
    ]
    for s in stores:
        s.close()


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_never_another_scopes_or_an_invalidated_answer(
    caches: list[SemanticCache], ops: list[tuple[str, int, str, int]]
) -> None:
    caches[0].clear()
    live: dict[str, set[str]] = {scope: set() for scope in SCOPES}
    version = 0
    for kind, who, scope, qi in ops:
        cache, query = caches[who], QUERIES[qi]
        if kind == "set":
            version += 1
            assert cache.set(query, {"scope": scope, "query": query, "v": version}, scope)
            live[scope].add(query)
        elif kind == "invalidate":
            cache.invalidate(scope)
            live[scope].clear()
        else:
            hit = cache.get(query, scope)
            if hit is not None:
                response: dict[str, Any] = hit.response
                assert hit.scope == scope and response["scope"] == scope
                assert response["query"] in live[scope], (response, live[scope])
                assert hit.matched_query == response["query"]


def test_the_query_pool_is_tempting_across_scopes(caches: list[SemanticCache]) -> None:
    """The property above is only meaningful if paraphrases hit within a scope."""
    caches[0].clear()
    caches[0].set(QUERIES[0], {"scope": "tenant-a"}, "tenant-a")
    hit = caches[0].get(QUERIES[1], "tenant-a")
    assert hit is not None and not hit.exact
    assert caches[0].get(QUERIES[1], "tenant-b") is None
    assert caches[0].get(QUERIES[0], "") is None
