"""CachedQueryEngine over a real VectorStoreIndex query engine (MockLLM, MockEmbedding)."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from llama_index_rag_optimize import CachedQueryEngine, LlamaIndexEmbedder
from llama_index_rag_optimize.embedder import as_embedder
from rag_optimize.cache import SemanticCache, cache_scope
from rag_optimize.embedding import HashingEmbedder

RESET = "How do I reset my password?"
RESET_PARAPHRASE = "how can I reset my password"
DELETE = "How do I delete my account?"


@pytest.fixture(scope="module")
def index() -> VectorStoreIndex:
    docs = [
        Document(text="Passwords are reset under Settings, Security.", doc_id="doc-security"),
        Document(text="Accounts are deleted by the support team.", doc_id="doc-delete"),
    ]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


@pytest.fixture
def cache(hashing_embedder: HashingEmbedder) -> SemanticCache:
    return SemanticCache(hashing_embedder, threshold=0.8)


def engine(index: VectorStoreIndex, streaming: bool = False):  # noqa: ANN201
    # MockLLM without max_tokens echoes its prompt, so an answer names the question it was
    # generated for: a hit for a paraphrase shows the *original* question.
    return index.as_query_engine(llm=MockLLM(), similarity_top_k=2, streaming=streaming)


def test_paraphrase_hit_other_question_miss(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache)
    first = cached.query(RESET)
    assert isinstance(first, Response) and RESET in str(first)
    again = cached.query(RESET_PARAPHRASE)
    assert isinstance(again, Response)
    assert again.response == first.response
    assert again.metadata is not None and again.metadata["rag_optimize_cache"]["similarity"] > 0.8
    other = cached.query(DELETE)
    assert DELETE in str(other)
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)


def test_source_ids_and_source_nodes_replay(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache)
    first = cached.query(RESET)
    (entry,) = cache.store.entries()  # type: ignore[attr-defined]
    ids = entry.metadata["source_ids"]
    assert {"doc-security", "doc-delete"} <= set(ids)
    assert {n.node.node_id for n in first.source_nodes} <= set(ids)
    again = cached.query(RESET_PARAPHRASE)
    assert [n.node.node_id for n in again.source_nodes] == [
        n.node.node_id for n in first.source_nodes
    ]
    assert [n.node.ref_doc_id for n in again.source_nodes] == [
        n.node.ref_doc_id for n in first.source_nodes
    ]
    assert [n.node.get_content() for n in again.source_nodes] == [
        n.node.get_content() for n in first.source_nodes
    ]
    assert cache.store.delete_where(None, "source_ids", ["doc-delete"]) == 1


def test_ids_only_when_source_text_not_kept(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache, store_source_nodes=False)
    cached.query(RESET)
    again = cached.query(RESET)
    assert again.source_nodes and all(n.node.get_content() == "" for n in again.source_nodes)
    assert {n.node.ref_doc_id for n in again.source_nodes} == {"doc-security", "doc-delete"}


async def test_aquery(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache)
    first = await cached.aquery(RESET)
    again = await cached.aquery(RESET_PARAPHRASE)
    assert isinstance(again, Response) and again.response == first.response
    assert cache.stats.hits == 1


def test_streaming_engine_stores_after_full_consumption(
    index: VectorStoreIndex, cache: SemanticCache
) -> None:
    cached = CachedQueryEngine(engine(index, streaming=True), cache)
    assert cached.streaming
    first = cached.query(RESET)
    assert isinstance(first, StreamingResponse)
    assert len(cache) == 0  # nothing stored before the stream is consumed
    text = "".join(first.response_gen)
    assert RESET in text and len(cache) == 1
    again = cached.query(RESET_PARAPHRASE)
    assert isinstance(again, StreamingResponse)
    chunks = list(again.response_gen)
    assert len(chunks) > 3 and "".join(chunks) == text
    assert again.source_nodes


def test_streaming_response_helpers_consume_and_store(
    index: VectorStoreIndex, cache: SemanticCache
) -> None:
    cached = CachedQueryEngine(engine(index, streaming=True), cache)
    text = str(cached.query(RESET))  # LlamaIndex's __str__ drains the stream
    assert len(cache) == 1
    assert cached.query(RESET).get_response().response == text


def test_abandoned_stream_is_not_stored(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index, streaming=True), cache)
    response = cached.query(RESET)
    gen = response.response_gen
    assert isinstance(gen, Generator)
    next(gen)
    gen.close()
    assert len(cache) == 0


async def test_async_streaming(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index, streaming=True), cache)
    first = await cached.aquery(RESET)
    assert isinstance(first, AsyncStreamingResponse)
    text = "".join([t async for t in first.async_response_gen()])
    assert len(cache) == 1
    again = await cached.aquery(RESET_PARAPHRASE)
    assert isinstance(again, AsyncStreamingResponse)
    chunks = [t async for t in again.async_response_gen()]
    assert len(chunks) > 3 and "".join(chunks) == text


def test_scopes(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache)
    with cache_scope("tenant-a"):
        cached.query(RESET)
    with cache_scope("tenant-b"):
        cached.query(RESET)
    assert cache.stats.hits == 0
    with cache_scope("tenant-a"):
        cached.query(RESET_PARAPHRASE)
    assert cache.stats.hits == 1
    fixed = CachedQueryEngine(engine(index), cache, scope="tenant-b")
    with cache_scope("tenant-a"):
        fixed.query(RESET_PARAPHRASE)  # the explicit scope wins: tenant-b's entry
    assert cache.stats.hits == 2


def test_namespace_and_index_version_separate_engines(
    index: VectorStoreIndex, cache: SemanticCache
) -> None:
    a = CachedQueryEngine(engine(index), cache, namespace="index-a")
    b = CachedQueryEngine(engine(index), cache, namespace="index-b")
    a.query(RESET)
    b.query(RESET)
    assert cache.stats.hits == 0
    v2 = CachedQueryEngine(engine(index), cache, namespace="index-a", index_version="v2")
    v2.query(RESET)
    assert cache.stats.hits == 0
    assert cache.store.delete_where(None, "index_version", ["v2"]) == 1


def test_llama_index_embedding_as_cache_embedder(index: VectorStoreIndex) -> None:
    model = MockEmbedding(embed_dim=8)
    cached = CachedQueryEngine(engine(index), model, threshold=0.95)
    assert isinstance(cached.cache.embedder, LlamaIndexEmbedder)
    cached.query(RESET)
    cached.query(RESET_PARAPHRASE)  # MockEmbedding gives every text the same vector
    assert cached.cache.stats.hits == 1


async def test_llama_index_embedder_wrapper() -> None:
    wrapped = LlamaIndexEmbedder(MockEmbedding(embed_dim=4))
    assert wrapped.embed_query("x") == [0.5] * 4
    assert wrapped.embed_documents(["a", "b"]) == [[0.5] * 4, [0.5] * 4]
    assert await wrapped.aembed_query("x") == [0.5] * 4
    hashing = HashingEmbedder(dim=16)
    assert as_embedder(hashing) is hashing
    with pytest.raises(TypeError, match="BaseEmbedding"):
        LlamaIndexEmbedder(hashing)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="embed_query"):
        as_embedder(object())


def test_bad_arguments(index: VectorStoreIndex, cache: SemanticCache) -> None:
    with pytest.raises(TypeError, match="BaseQueryEngine"):
        CachedQueryEngine(object(), cache)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache options"):
        CachedQueryEngine(engine(index), cache, threshold=0.5)


def test_cache_options_are_typed_and_an_unknown_one_is_named(index: VectorStoreIndex) -> None:
    """``cache_options`` are exactly ``SemanticCacheOptions`` (SemanticCache's keywords but
    the embedder and ttl_seconds, which the engine has itself); a misspelt one is named."""
    import inspect

    from rag_optimize.cache import SemanticCacheOptions
    from rag_optimize.errors import UnknownOptionError

    parameters = set(inspect.signature(SemanticCache).parameters) - {"embedder", "ttl_seconds"}
    assert set(SemanticCacheOptions.__annotations__) == parameters
    model = HashingEmbedder(dim=64)
    with pytest.raises(UnknownOptionError, match="'treshold'") as caught:
        CachedQueryEngine(engine(index), model, treshold=0.5)  # type: ignore[call-arg]
    assert isinstance(caught.value, TypeError)
    assert "threshold" in str(caught.value)
    built = CachedQueryEngine(engine(index), model, threshold=0.5, max_entries=7)
    assert built.cache.threshold == 0.5 and built.cache.store.max_entries == 7  # type: ignore[attr-defined]


def test_source_invalidation_and_feedback(index: VectorStoreIndex, cache: SemanticCache) -> None:
    cached = CachedQueryEngine(engine(index), cache)
    cached.query(RESET)
    assert cache.invalidate(source_ids=["doc-security"]) == 1
    cached.query(RESET)
    hit_response = cached.query(RESET_PARAPHRASE)
    assert hit_response.metadata is not None
    hit = hit_response.metadata["rag_optimize_cache"]["hit"]
    assert cache.feedback(hit, correct=False) == "deleted"
    assert len(cache) == 0


def test_require_scope_fails_closed(
    index: VectorStoreIndex, hashing_embedder: HashingEmbedder
) -> None:
    cache = SemanticCache(hashing_embedder, threshold=0.8, require_scope=True)
    cached = CachedQueryEngine(engine(index), cache)
    cached.query(RESET)
    assert len(cache) == 0
    with cache_scope("tenant-a"):
        cached.query(RESET)
        assert "rag_optimize_cache" in (cached.query(RESET_PARAPHRASE).metadata or {})


def test_invalidate_user_scope(index: VectorStoreIndex, cache: SemanticCache) -> None:
    a = CachedQueryEngine(engine(index), cache, namespace="a")
    b = CachedQueryEngine(engine(index), cache, namespace="b")
    with cache_scope("tenant-a"):
        a.query(RESET)
        b.query(RESET)
        a.query(DELETE)
    assert a.invalidate("tenant-a") == 3
    assert len(cache) == 0


def test_a_question_about_another_year_is_not_served_the_cached_answer(
    index: VectorStoreIndex,
) -> None:
    # a loose threshold: the two questions are near-identical to the embedding; the default
    # verifier sees the different number and makes the second one a miss
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5)
    cached = CachedQueryEngine(engine(index), cache)
    first = cached.query("How many passwords were reset in 2023?")
    second = cached.query("How many passwords were reset in 2024?")
    assert "2024" in str(second) and str(second) != str(first)
    assert (cache.stats.hits, cache.stats.verifier_rejections) == (0, 1)
