"""BatchingEmbedding with real LlamaIndex objects: MockEmbedding as Settings.embed_model in a
VectorStoreIndex query engine with MockLLM, and a deterministic BaseEmbedding of our own (so
every caller's vector can be checked) in an index and its retriever."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from pydantic import PrivateAttr

from llama_index_rag_optimize import BatchingEmbedding
from rag_optimize import EmbeddingError, HashingEmbedder

DOCS = [
    "Paris is the capital of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Python was created by Guido van Rossum.",
    "Mount Everest is the highest mountain on Earth.",
    "The speed of light is about 300,000 km per second.",
]


class HashEmbedding(BaseEmbedding):
    """A real LlamaIndex BaseEmbedding backed by the package's deterministic HashingEmbedder;
    it records the batches it receives."""

    _hasher: HashingEmbedder = PrivateAttr(default_factory=lambda: HashingEmbedder(dim=64))
    _batches: list[list[str]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def batches(self) -> list[list[str]]:
        return self._batches

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._hasher.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._hasher.embed_query(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._hasher.embed_query(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self._batches.append(list(texts))
        return self._hasher.embed_documents(texts)


@pytest.fixture
def restore_settings() -> Iterator[None]:
    saved_embed, saved_llm = Settings._embed_model, Settings._llm
    yield
    Settings._embed_model, Settings._llm = saved_embed, saved_llm


async def test_mixed_concurrent_callers_get_their_own_vectors() -> None:
    inner = HashEmbedding()
    questions = [f"question about topic {i}" for i in range(200)]
    with BatchingEmbedding(inner, max_batch_size=16, max_wait_ms=2) as emb:
        threaded = asyncio.gather(
            *(asyncio.to_thread(emb.get_query_embedding, q) for q in questions[:100])
        )
        tasks = asyncio.gather(*(emb.aget_query_embedding(q) for q in questions[100:]))
        results = [*await threaded, *await tasks]
        stats = emb.stats()
    assert results == [inner.get_query_embedding(q) for q in questions]
    assert max(len(b) for b in inner.batches) <= 16
    assert stats.requests == 200


def test_settings_embed_model_in_a_query_engine(restore_settings: None) -> None:
    emb = BatchingEmbedding(MockEmbedding(embed_dim=8))
    Settings.embed_model = emb
    Settings.llm = MockLLM()
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    response = index.as_query_engine(similarity_top_k=2).query("What is the capital of France?")
    stats = emb.stats()
    emb.close()
    assert Settings.embed_model is emb
    assert len(response.source_nodes) == 2 and str(response)
    assert stats.requests == 1  # the query went through the batcher


def test_index_retriever_matches_the_bare_model() -> None:
    nodes = [Document(text=t) for t in DOCS]
    bare = VectorStoreIndex.from_documents(nodes, embed_model=HashEmbedding())
    with BatchingEmbedding(HashEmbedding(), max_batch_size=2) as emb:
        index = VectorStoreIndex.from_documents(nodes, embed_model=emb)
        for question in ["capital of France", "highest mountain Earth", "Python created"]:
            # top 1 only: the toy embedder gives unrelated texts tied zero scores
            (got,) = index.as_retriever(similarity_top_k=1).retrieve(question)
            (want,) = bare.as_retriever(similarity_top_k=1).retrieve(question)
            assert got.node.get_content() == want.node.get_content()
            assert got.score == pytest.approx(want.score) and (got.score or 0) > 0
        inner_batches = emb.embed_model.batches  # type: ignore[attr-defined]
    assert inner_batches and max(len(b) for b in inner_batches) <= 2


async def test_concurrent_aretrieve_calls_share_one_batch(clock: object) -> None:
    inner = HashEmbedding()
    emb = BatchingEmbedding(inner, max_batch_size=5, max_wait_ms=60_000, clock=clock)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=emb)
    retriever = index.as_retriever(similarity_top_k=1)
    queries = [*DOCS, *DOCS[:3]]
    found = await asyncio.gather(*(retriever.aretrieve(q) for q in queries))
    stats = emb.stats()
    emb.close()
    assert [r[0].node.get_content() for r in found] == queries
    assert stats.batches == 1 and stats.requests == 8 and stats.texts_embedded == 5
    # The 3 repeats share a slot in flight or, if their batch already finished by the time
    # LlamaIndex reaches the embed call, come from the vector cache: never a second model call.
    assert stats.dedup_hits + stats.cache_hits == 3
    assert inner.batches[-1] == DOCS


async def test_text_embeddings_are_forwarded_in_chunks() -> None:
    inner = HashEmbedding(embed_batch_size=3)
    with BatchingEmbedding(inner, max_batch_size=2) as emb:
        vectors = emb.get_text_embedding_batch(DOCS)
        one = emb.get_text_embedding(DOCS[0])
        avectors = await emb.aget_text_embedding_batch(DOCS)
        aone = await emb.aget_text_embedding(DOCS[1])
    want = [inner.get_text_embedding(t) for t in DOCS]
    assert vectors == avectors == want and one == want[0] and aone == want[1]
    assert emb.embed_batch_size == 3 and emb.model_name.startswith("batching:")
    assert max(len(b) for b in inner.batches) <= 2


def test_model_errors_and_bad_arguments() -> None:
    class Broken(HashEmbedding):
        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("model offline")

    with BatchingEmbedding(Broken()) as emb:
        with pytest.raises(EmbeddingError, match="model offline"):
            emb.get_query_embedding("x")
    with pytest.raises(TypeError, match="LlamaIndex BaseEmbedding"):
        BatchingEmbedding(HashingEmbedder())  # type: ignore[arg-type]


def test_options_are_typed_and_an_unknown_one_is_named() -> None:
    from rag_optimize.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError, match="'cache_entries'") as caught:
        BatchingEmbedding(HashEmbedding(), cache_entries=10)  # type: ignore[call-arg]
    assert isinstance(caught.value, TypeError)
    assert "cache_size" in str(caught.value)
    with BatchingEmbedding(HashEmbedding(), cache_size=0, max_wait_ms=1) as emb:
        assert emb.get_query_embedding("x") == HashEmbedding().get_query_embedding("x")
