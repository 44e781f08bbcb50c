"""LangChain adapter: AsyncHybridRetriever and CohereRerank inside real LangChain objects."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_community.retrievers import BM25Retriever
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    BaseCallbackHandler,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_rag_optimize import AsyncHybridRetriever, CohereRerank
from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from cohere_server import CohereRerankServer  # noqa: E402
from rendezvous import ameeting, meeting  # noqa: E402

DOCS = [
    Document("Paris is the capital and largest city of France.", metadata={"src": "a"}, id="p"),
    Document("The Eiffel Tower is a lattice tower in Paris.", metadata={"src": "b"}, id="e"),
    Document("Berlin is the capital of Germany.", metadata={"src": "c"}, id="b"),
    Document("Photosynthesis turns light into chemical energy.", metadata={"src": "d"}, id="s"),
]


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class HashEmbeddings(Embeddings):
    """LangChain Embeddings over the deterministic hashing embedder."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(dim=256)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


async def no_ahold() -> None:
    """The default for SlowRetriever's ``ahold``: no wait at all."""


class SlowRetriever(BaseRetriever):
    """Returns fixed documents after ``hold()`` (sync) / ``await ahold()`` (async), or raises."""

    docs: list[Document]
    fail: bool = False
    hold: Callable[[], object] = lambda: None
    ahold: Callable[[], Awaitable[object]] = no_ahold

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.hold()
        if self.fail:
            raise ConnectionError("vector store unreachable")
        return self.docs

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        await self.ahold()
        if self.fail:
            raise ConnectionError("vector store unreachable")
        return self.docs


def wrapped(**options: Any) -> AsyncHybridRetriever:
    bm25 = BM25Retriever.from_documents(DOCS, k=3, preprocess_func=words)
    vectors = InMemoryVectorStore.from_documents(DOCS, HashEmbeddings())
    return AsyncHybridRetriever(
        retrievers=[bm25, vectors.as_retriever(search_kwargs={"k": 3})],
        names=["bm25", "vector"],
        **options,
    )


def test_wraps_bm25_and_vector_store_retrievers() -> None:
    retriever = wrapped(k=2)
    docs = retriever.invoke("capital of France")
    assert docs[0].id == "p" and len(docs) == 2
    meta = docs[0].metadata
    assert meta["src"] == "a"
    assert meta["rag_optimize"]["ranks"] == {"bm25": 1, "vector": 1}
    assert meta["rag_optimize"]["degraded"] is False


async def test_ainvoke_matches_invoke() -> None:
    retriever = wrapped(k=3, fusion="relative_score")
    assert [d.id for d in await retriever.ainvoke("Eiffel tower Paris")] == [
        d.id for d in retriever.invoke("Eiffel tower Paris")
    ]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_wrapped_retrievers_run_concurrently(mode: str) -> None:
    # Each retriever waits inside until the other is inside too: one after the other, they
    # never meet, and both fail.
    def pair(**hold: Any) -> AsyncHybridRetriever:
        return AsyncHybridRetriever(
            retrievers=[SlowRetriever(docs=DOCS[:2], **hold), SlowRetriever(docs=DOCS[1:3], **hold)]
        )

    async def ainvoke() -> list[Document]:
        return await pair(ahold=ameeting(2)).ainvoke("anything")

    if mode == "invoke":
        docs = pair(hold=meeting(2)).invoke("anything")
    else:
        docs = asyncio.run(ainvoke())
    assert docs[0].metadata["rag_optimize"]["degraded"] is False
    assert docs[0].id == "e"  # found by both


def test_a_failing_retriever_degrades_instead_of_failing() -> None:
    retriever = AsyncHybridRetriever(
        retrievers=[SlowRetriever(docs=DOCS[:2]), SlowRetriever(docs=[], fail=True)],
        names=["good", "bad"],
    )
    docs = retriever.invoke("anything")
    assert [d.id for d in docs] == ["p", "e"]
    info = docs[0].metadata["rag_optimize"]
    assert info["degraded"] is True and "vector store unreachable" in info["failures"]["bad"]


def test_callbacks_reach_the_wrapped_retrievers() -> None:
    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.started: list[str] = []

        def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
            self.started.append(kwargs.get("name") or (serialized or {}).get("name", "?"))

    recorder = Recorder()
    wrapped().invoke("Berlin", config={"callbacks": [recorder]})
    assert len(recorder.started) == 3  # ours and both children, in their worker threads


def test_from_documents_on_our_indexes_in_a_chain() -> None:
    retriever = AsyncHybridRetriever.from_documents(
        DOCS, HashEmbeddings(), quantization="int8", k=2
    )
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")

    def join(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    context_and_prompt = {"context": retriever | join, "question": RunnablePassthrough()} | prompt
    text = context_and_prompt.invoke("capital of Germany").to_string()
    assert "Berlin is the capital of Germany." in text
    chain = context_and_prompt | FakeListChatModel(responses=["Berlin."]) | StrOutputParser()
    assert chain.invoke("capital of Germany") == "Berlin."
    top = retriever.invoke("capital of Germany")[0]
    assert top.id == "b" and top.metadata["src"] == "c"
    assert set(top.metadata["rag_optimize"]["ranks"]) == {"bm25", "dense"}


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="query is empty"):
        wrapped().invoke("   ")
    with pytest.raises(ValueError, match="at least one retriever"):
        AsyncHybridRetriever()
    with pytest.raises(ValueError, match="unknown fusion"):
        wrapped(fusion="borda")
    with pytest.raises(ValueError, match="2 retrievers but 1 weights"):
        wrapped(weights=[1.0])


@pytest.fixture
def server() -> Iterator[CohereRerankServer]:
    with CohereRerankServer() as srv:
        yield srv


def test_cohere_rerank_compressor(server: CohereRerankServer) -> None:
    compressor = CohereRerank(
        model="rerank-test", top_n=2, cohere_api_key="k", base_url=server.url, max_retries=0
    )
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=wrapped(k=4)
    )
    docs = retriever.invoke("Eiffel Tower")
    assert docs[0].id == "e" and docs[0].metadata["relevance_score"] == 1.0
    assert len(docs) == 2 and docs[0].metadata["rag_optimize"]["rerank_failed"] is None

    server.script = ["500"]
    fused = wrapped(k=4).invoke("Eiffel Tower")
    degraded = asyncio.run(retriever.ainvoke("Eiffel Tower"))
    assert [d.id for d in degraded] == [d.id for d in fused[:2]]
    assert "500" in degraded[0].metadata["rag_optimize"]["rerank_failed"]
    assert "relevance_score" not in degraded[0].metadata


# -- LangChain's standard retriever suite, in both modes -----------------------------------


class TestIndexModeStandard(RetrieversIntegrationTests):
    """``langchain-tests``' retriever suite over our own BM25 + dense indexes."""

    @property
    def retriever_constructor(self) -> type[AsyncHybridRetriever]:
        return AsyncHybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        engine = AsyncHybridRetriever.from_documents(DOCS, HashEmbeddings()).engine
        return {"engine": engine, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "capital of France"


class TestWrapModeStandard(RetrieversIntegrationTests):
    """The same suite with two wrapped LangChain retrievers."""

    @property
    def retriever_constructor(self) -> type[AsyncHybridRetriever]:
        return AsyncHybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        bm25 = BM25Retriever.from_documents(DOCS, k=3, preprocess_func=words)
        vectors = InMemoryVectorStore.from_documents(DOCS, HashEmbeddings())
        return {"retrievers": [bm25, vectors.as_retriever(search_kwargs={"k": 3})], "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "capital of France"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_per_call_k_and_search_kwargs(mode: str) -> None:
    retriever = AsyncHybridRetriever.from_documents(DOCS, HashEmbeddings(), k=4)

    def run(**kwargs: Any) -> list[Document]:
        if mode == "invoke":
            return retriever.invoke("capital of France", **kwargs)
        return asyncio.run(retriever.ainvoke("capital of France", **kwargs))

    assert len(run()) == 4
    assert len(run(k=1)) == 1
    assert len(run(search_kwargs={"k": 2})) == 2
    assert run(k=1)[0].id == run()[0].id == "p"
    defaults = AsyncHybridRetriever(engine=retriever.engine, search_kwargs={"k": 3})
    assert len(defaults.invoke("capital of France")) == 3
    with pytest.raises(ConfigurationError, match="top_n"):
        run(top_n=2)


def test_filters_per_call_and_by_default() -> None:
    retriever = AsyncHybridRetriever.from_documents(DOCS, HashEmbeddings(), k=4)
    assert [d.id for d in retriever.invoke("capital", filter={"src": "c"})] == ["b"]
    picked = retriever.invoke("Paris", search_kwargs={"filter": {"src": {"$in": ["b", "d"]}}})
    assert sorted(d.id for d in picked) == ["e", "s"]  # every match, nothing filtered out
    default = AsyncHybridRetriever(engine=retriever.engine, filter={"src": {"$ne": "a"}}, k=4)
    assert "p" not in [d.id for d in default.invoke("capital of France")]
    assert [d.id for d in default.invoke("capital", filter={"src": "a"})] == ["p"]
    with pytest.raises(ConfigurationError, match="unknown filter operator '\\$regex'"):
        retriever.invoke("Paris", filter={"src": {"$regex": "a"}})
    with pytest.raises(ConfigurationError, match="unknown filter field"):
        retriever.invoke("Paris", filter={"source": "a"})
    with pytest.raises(ConfigurationError, match="cannot apply a metadata filter"):
        wrapped().invoke("Paris", filter={"src": "a"})


class CountingEmbeddings(HashEmbeddings):
    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return super().embed_documents(texts)


def test_from_vectorstore_reuses_stored_vectors() -> None:
    from langchain_community.vectorstores import FAISS

    embeddings = CountingEmbeddings()
    stores = [
        InMemoryVectorStore.from_documents(DOCS, embeddings),
        FAISS.from_documents(DOCS, embeddings, ids=[d.id for d in DOCS]),
    ]
    for store in stores:
        embeddings.embedded.clear()
        retriever = AsyncHybridRetriever.from_vectorstore(store, k=2)
        assert embeddings.embedded == []  # nothing embedded again
        top = retriever.invoke("capital of Germany")[0]
        assert top.id == "b" and top.metadata["src"] == "c"
        assert [d.id for d in retriever.invoke("Paris", filter={"src": "b"})] == ["e"]
    with pytest.raises(ConfigurationError, match="cannot read the documents of a"):
        AsyncHybridRetriever.from_vectorstore(FakeStore(), HashEmbeddings())


class FakeStore(VectorStore):
    """A vector store rag-optimize cannot enumerate (only the VectorStore interface)."""

    def __init__(self) -> None:
        pass

    def add_texts(self, *args: Any, **kwargs: Any) -> list[str]:
        return []

    def similarity_search(self, *args: Any, **kwargs: Any) -> list[Document]:
        return []

    @classmethod
    def from_texts(cls, *args: Any, **kwargs: Any) -> FakeStore:
        return cls()


def test_add_delete_update_save_and_load(tmp_path: Path) -> None:
    embeddings = CountingEmbeddings()
    retriever = AsyncHybridRetriever.from_documents(DOCS, embeddings, k=2)
    retriever.add_documents([Document("Rome is the capital of Italy.", id="r", metadata={})])
    assert retriever.invoke("capital of Italy")[0].id == "r"
    assert retriever.delete(["b"]) == 1
    assert "b" not in [d.id for d in retriever.invoke("capital of Germany", k=5)]
    retriever.update_documents([Document("Madrid is the capital of Spain.", id="r")])
    assert retriever.invoke("capital of Spain")[0].id == "r"
    retriever.save(tmp_path / "idx")
    embeddings.embedded.clear()
    loaded = AsyncHybridRetriever.load(tmp_path / "idx", embeddings, mmap=True)
    assert embeddings.embedded == []
    assert [d.id for d in loaded.invoke("capital of Spain")] == [
        d.id for d in retriever.invoke("capital of Spain")
    ]
    assert loaded.k == 2
    with pytest.raises(ConfigurationError, match="needs index mode"):
        wrapped().save(tmp_path / "nope")


def test_calibrate_fusion_sets_the_weights_of_the_wrapped_branches() -> None:
    retriever = wrapped(k=2)
    result = retriever.calibrate_fusion(
        ["capital of France", "light into energy"], [["p"], ["s"]], steps=4
    )
    assert set(result.weights) == {"bm25", "vector"}
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert result.ndcg >= result.before
    assert retriever.invoke("capital of France")[0].id == "p"
    with pytest.raises(InvalidInputError, match="1 entries for 2 queries"):
        retriever.calibrate_fusion(["a", "b"], [["p"]])


def test_an_engine_brings_its_own_k_and_fusion() -> None:
    from rag_optimize.retrieval import HybridRetriever

    engine = HybridRetriever.from_texts(
        [d.page_content for d in DOCS], HashEmbeddings(), ids=[str(d.id) for d in DOCS], k=2
    )
    retriever = AsyncHybridRetriever(engine=engine)
    assert (retriever.k, retriever.fusion) == (2, "consistency")  # HybridRetriever's default
    assert len(retriever.invoke("capital")) == 2
    assert len(AsyncHybridRetriever(engine=engine, k=3).invoke("capital")) == 3


async def test_consistency_fusion_in_index_mode_learns_and_wrap_mode_refuses_it() -> None:
    retriever = AsyncHybridRetriever.from_documents(DOCS, HashEmbeddings())  # the default
    assert retriever.fusion == "consistency"
    retriever.invoke("capital of Germany")
    await retriever.ainvoke("tower in Paris")
    assert retriever.engine.consistency.to_dict()["served"] == 2  # both paths feed it
    bm25 = BM25Retriever.from_documents(DOCS, k=3, preprocess_func=words)
    with pytest.raises(ValueError, match="only HybridRetriever"):  # pydantic wraps it
        AsyncHybridRetriever(retrievers=[bm25], fusion="consistency")
