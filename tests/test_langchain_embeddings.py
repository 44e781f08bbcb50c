"""BatchingEmbeddings with real LangChain objects: DeterministicFakeEmbedding, an
InMemoryVectorStore and its retriever, a runnable chain with a fake chat model, and
CacheBackedEmbeddings."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.stores import InMemoryByteStore
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_rag_optimize import BatchingEmbeddings
from rag_optimize import EmbeddingError

DOCS = [
    "Paris is the capital of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Python was created by Guido van Rossum.",
    "Mount Everest is the highest mountain on Earth.",
    "The speed of light is about 300,000 km per second.",
]


class RecordingEmbeddings(Embeddings):
    """A real LangChain Embeddings that forwards to DeterministicFakeEmbedding and records
    every call the wrapper makes, so tests can see the batches."""

    def __init__(self, size: int = 16) -> None:
        self.model = DeterministicFakeEmbedding(size=size)
        self.document_calls: list[list[str]] = []
        self.query_calls: list[str] = []
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.document_calls.append(list(texts))
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            self.query_calls.append(text)
        return self.model.embed_query(text)


async def test_mixed_concurrent_callers_get_the_models_own_vectors() -> None:
    inner = RecordingEmbeddings()
    direct = DeterministicFakeEmbedding(size=16)
    questions = [f"question {i}" for i in range(200)]
    with BatchingEmbeddings(inner, max_batch_size=16, max_wait_ms=2) as embeddings:
        threaded = asyncio.gather(
            *(asyncio.to_thread(embeddings.embed_query, q) for q in questions[:100])
        )
        tasks = asyncio.gather(*(embeddings.aembed_query(q) for q in questions[100:]))
        results = [*await threaded, *await tasks]
        stats = embeddings.stats()
    assert results == [direct.embed_query(q) for q in questions]
    assert max(len(c) for c in inner.document_calls) <= 16
    assert inner.query_calls == []  # queries travel in batches
    assert stats.requests == 200


def test_vector_store_and_retriever_match_the_bare_model() -> None:
    bare = InMemoryVectorStore(embedding=DeterministicFakeEmbedding(size=16))
    bare.add_texts(DOCS)
    with BatchingEmbeddings(DeterministicFakeEmbedding(size=16), max_batch_size=2) as emb:
        store = InMemoryVectorStore(embedding=emb)
        store.add_texts(DOCS)  # embed_documents, chunked by 2
        for question in ["capital of France", "highest mountain", "who made Python"]:
            got = [d.page_content for d in store.similarity_search(question, k=2)]
            want = [d.page_content for d in bare.similarity_search(question, k=2)]
            assert got == want
        retrieved = store.as_retriever(search_kwargs={"k": 1}).invoke(DOCS[2])
    assert retrieved[0].page_content == DOCS[2]


async def test_concurrent_retriever_calls_share_one_batch(clock: object) -> None:
    # The clock never moves: the 5 distinct queries (8 calls, 3 repeats) can only leave
    # together, as one full batch. A repeat that arrives while that batch is in flight shares
    # its slot (dedup); one that arrives after it returned is served from the vector cache:
    # which of the two depends on the scheduler, the one model call does not.
    inner = RecordingEmbeddings()
    emb = BatchingEmbeddings(inner, max_batch_size=5, max_wait_ms=60_000, clock=clock)
    store = InMemoryVectorStore(embedding=emb)
    store.add_texts(DOCS)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    found = await asyncio.gather(*(retriever.ainvoke(doc) for doc in [*DOCS, *DOCS[:3]]))
    assert [docs[0].page_content for docs in found] == [*DOCS, *DOCS[:3]]
    stats = emb.stats()
    emb.close()
    assert stats.batches == 1 and stats.requests == 8 and stats.texts_embedded == 5
    assert stats.dedup_hits + stats.cache_hits == 3
    assert inner.document_calls[-1] == DOCS  # one model call for the 5 distinct queries


def test_chain_batch_with_fake_chat_model(clock: object) -> None:
    inner = RecordingEmbeddings()
    emb = BatchingEmbeddings(inner, max_batch_size=6, max_wait_ms=60_000, clock=clock)
    store = InMemoryVectorStore(embedding=emb)
    store.add_texts(DOCS)
    retriever = store.as_retriever(search_kwargs={"k": 1})

    def context(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    prompt = ChatPromptTemplate.from_template("Context: {context}\nQuestion: {question}")
    llm = FakeListChatModel(responses=["answer"] * 6)
    chain = (
        {"context": retriever | context, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )
    questions = [f"question {i} about {DOCS[i % 5]}" for i in range(6)]
    answers = chain.batch(questions, config={"max_concurrency": 6})
    stats = emb.stats()
    emb.close()
    assert answers == ["answer"] * 6
    assert stats.batches == 1 and stats.requests == 6  # the 6 chain runs shared one batch


def test_cache_backed_embeddings_over_the_batcher() -> None:
    from langchain_classic.embeddings import CacheBackedEmbeddings

    inner = RecordingEmbeddings()
    direct = DeterministicFakeEmbedding(size=16)
    with BatchingEmbeddings(inner, max_batch_size=2, cache_size=0) as emb:
        cached = CacheBackedEmbeddings.from_bytes_store(
            emb,
            InMemoryByteStore(),
            namespace="fake16",
            query_embedding_cache=True,
            key_encoder="sha256",
        )
        first = cached.embed_documents(DOCS)
        again = cached.embed_documents(DOCS)
        query = cached.embed_query("a question")
        query_again = cached.embed_query("a question")
    assert first == again == [direct.embed_query(d) for d in DOCS]
    assert query == query_again == direct.embed_query("a question")
    assert [len(c) for c in inner.document_calls] == [2, 2, 1, 1]  # docs once, query once


def test_errors_and_type_checks_pass_through() -> None:
    class Broken(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("model offline")

        def embed_query(self, text: str) -> list[float]:
            raise RuntimeError("model offline")

    with BatchingEmbeddings(Broken()) as emb:
        with pytest.raises(EmbeddingError, match="model offline"):
            emb.embed_query("x")
        with pytest.raises(RuntimeError, match="model offline"):
            emb.embed_documents(["x"])
    with pytest.raises(TypeError, match="LangChain Embeddings"):
        BatchingEmbeddings(object())  # type: ignore[arg-type]


def test_options_are_typed_and_an_unknown_one_is_named() -> None:
    """``BatchingEmbeddings(**options)`` takes exactly ``BatchingOptions`` (BatchingEmbedder's
    keywords); a misspelt one is refused naming it, before any thread starts."""
    import inspect

    from rag_optimize import BatchingEmbedder
    from rag_optimize.embedding import BatchingOptions
    from rag_optimize.errors import ConfigurationError, UnknownOptionError

    keywords = {
        name
        for name, p in inspect.signature(BatchingEmbedder).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(BatchingOptions.__annotations__) == keywords
    model = DeterministicFakeEmbedding(size=8)
    with pytest.raises(UnknownOptionError, match="'max_wait'") as caught:
        BatchingEmbeddings(model, max_wait=5)  # type: ignore[call-arg]
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigurationError)
    assert "max_wait_ms" in str(caught.value)  # the valid options are listed
    with BatchingEmbeddings(model, max_wait_ms=1, max_batch_size=4) as emb:
        assert emb.batcher.max_batch_size == 4
        assert emb.embed_query("x") == model.embed_query("x")
