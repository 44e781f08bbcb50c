"""LangChain's own standard test suites (``langchain-tests``) over every LangChain class we ship.

Each class below subclasses a suite unchanged (the suites fail if a test is overridden or
removed); only the fixtures that build our objects are ours. ``SemanticLLMCache`` runs the
sync and the async cache suite over the in-process store and over a real ``redis-server``;
``BatchingEmbeddings`` and ``TimedEmbeddings`` run the embeddings unit and integration suites
over LangChain's ``DeterministicFakeEmbedding``. The retriever suite lives with the retriever
tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    EmbeddingsIntegrationTests,
    SyncCacheTestSuite,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_rag_optimize import BatchingEmbeddings, SemanticLLMCache, TimedEmbeddings
from rag_optimize import HashingEmbedder, LatencyTracker, RedisStore, SemanticCache
from tests.redis_server import RedisServer, namespace, redis_server  # noqa: F401

THRESHOLD = 0.9


def _memory_cache() -> SemanticLLMCache:
    return SemanticLLMCache(SemanticCache(HashingEmbedder(dim=64), THRESHOLD))


@pytest.fixture
def redis_cache(redis_server: RedisServer, namespace: str) -> Iterator[SemanticLLMCache]:  # noqa: F811
    """An empty ``SemanticLLMCache`` over a ``RedisStore`` in a namespace of its own."""
    store = RedisStore(redis_server.url, namespace)
    cache = SemanticLLMCache(SemanticCache(HashingEmbedder(dim=64), THRESHOLD, store=store))
    cache.clear()
    yield cache
    store.close()


class TestSemanticLLMCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> SemanticLLMCache:
        return _memory_cache()


class TestSemanticLLMCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> SemanticLLMCache:
        return _memory_cache()


class TestSemanticLLMCacheRedisSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, redis_cache: SemanticLLMCache) -> SemanticLLMCache:
        return redis_cache


class TestSemanticLLMCacheRedisAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, redis_cache: SemanticLLMCache) -> AsyncIterator[SemanticLLMCache]:
        yield redis_cache


class _ClosingModel:
    """Builds the model from the suite's parameters and closes it after the test."""

    embeddings_class: Any
    embedding_model_params: dict[str, Any]

    @pytest.fixture
    def model(self) -> Iterator[Embeddings]:
        model = self.embeddings_class(**self.embedding_model_params)
        yield model
        close = getattr(model, "close", None)
        if close is not None:
            close()


def _batching_params() -> dict[str, Any]:
    return {"embeddings": DeterministicFakeEmbedding(size=32), "max_wait_ms": 2}


def _timed_params() -> dict[str, Any]:
    return {"embeddings": DeterministicFakeEmbedding(size=32), "tracker": LatencyTracker()}


class TestBatchingEmbeddingsUnit(_ClosingModel, EmbeddingsUnitTests):
    embeddings_class = BatchingEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _batching_params()


class TestBatchingEmbeddingsIntegration(_ClosingModel, EmbeddingsIntegrationTests):
    embeddings_class = BatchingEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _batching_params()


class TestTimedEmbeddingsUnit(EmbeddingsUnitTests):
    embeddings_class = TimedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _timed_params()


class TestTimedEmbeddingsIntegration(EmbeddingsIntegrationTests):
    embeddings_class = TimedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _timed_params()


def test_batching_embeddings_agree_with_the_wrapped_model() -> None:
    """The suites check shapes; this checks the batcher returns the wrapped model's vectors."""
    inner = DeterministicFakeEmbedding(size=32)
    with BatchingEmbeddings(inner, max_wait_ms=2) as outer:
        assert outer.embed_query("refunds") == inner.embed_query("refunds")
        assert outer.embed_documents(["a", "b"]) == inner.embed_documents(["a", "b"])
