"""CachedQueryEngine(confirm_with=retriever): a semantic hit is served only when the new
question's retrieval returns the cached answer's sources.

Real parts: a LlamaIndex ``RetrieverQueryEngine`` over a real ``BM25Retriever`` (MockLLM
answers), the packaged MiniLM as the cache's model, and no verifier, so the near-miss below
*would* be served on similarity alone and only the evidence stops it.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_rag_optimize import CachedQueryEngine
from rag_optimize import LocalEmbedder, SemanticCache
from rag_optimize.errors import ConfigurationError, InvalidTypeError

pytest.importorskip("onnxruntime")
bm25 = pytest.importorskip("llama_index.retrievers.bm25")

CANADA = "How long does shipping to Canada take?"
CANADA_PARAPHRASE = "How long does shipping to Canada usually take?"
MEXICO = "How long does shipping to Mexico take?"


class CountingRetriever(BaseRetriever):
    """A real retriever, counted (and made to fail on demand)."""

    def __init__(self, inner: BaseRetriever) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.fail = False

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("search backend down")
        return self.inner.retrieve(query_bundle)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(backend="onnx")


@pytest.fixture
def retriever() -> CountingRetriever:
    docs = [
        Document(text="Shipping to Canada takes five business days.", doc_id="canada"),
        Document(text="Shipping to Mexico takes nine business days.", doc_id="mexico"),
        Document(text="Returns are accepted within thirty days.", doc_id="returns"),
    ]
    nodes = SentenceSplitter().get_nodes_from_documents(docs)
    return CountingRetriever(bm25.BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=1))


def _engine(retriever: BaseRetriever) -> RetrieverQueryEngine:
    return RetrieverQueryEngine.from_args(retriever, llm=MockLLM())


def test_near_miss_is_vetoed_and_paraphrase_confirmed(
    embedder: LocalEmbedder, retriever: CountingRetriever
) -> None:
    cache = SemanticCache(embedder, threshold=0.7, verifier=None)
    plain = CachedQueryEngine(_engine(retriever), SemanticCache(embedder, threshold=0.7,
                                                                verifier=None))
    plain.query(CANADA)
    served = plain.query(MEXICO)
    assert served.metadata is not None and "rag_optimize_cache" in served.metadata  # the bug

    cached = CachedQueryEngine(_engine(retriever), cache, confirm_with=retriever)
    first = cached.query(CANADA)
    assert first.metadata is None or "rag_optimize_cache" not in first.metadata
    other = cached.query(MEXICO)
    assert other.metadata is None or "rag_optimize_cache" not in other.metadata
    assert [n.node.ref_doc_id for n in other.source_nodes] == ["mexico"]
    assert cached.evidence_rejections == 1
    again = cached.query(CANADA_PARAPHRASE)
    assert again.metadata is not None
    decision = again.metadata["rag_optimize_cache"]["decision"]
    assert decision["evidence"]["agree"] is True and decision["evidence"]["overlap"] == 1.0
    assert again.response == first.response


async def test_async_and_exact_repeats_skip_the_retriever(
    embedder: LocalEmbedder, retriever: CountingRetriever
) -> None:
    cache = SemanticCache(embedder, threshold=0.7, verifier=None)
    cached = CachedQueryEngine(_engine(retriever), cache, confirm_with=retriever)
    await cached.aquery(CANADA)
    await cached.aquery(MEXICO)
    assert cached.evidence_rejections == 1
    calls = retriever.calls
    exact = await cached.aquery(CANADA)
    assert exact.metadata is not None and exact.metadata["rag_optimize_cache"]["exact"]
    assert retriever.calls == calls  # an exact repeat is not confirmed


def test_a_failing_retriever_vetoes_and_the_engine_answers(
    embedder: LocalEmbedder, retriever: CountingRetriever
) -> None:
    cache = SemanticCache(embedder, threshold=0.7, verifier=None)
    engine = _engine(retriever)
    cached = CachedQueryEngine(engine, cache, confirm_with=retriever)
    cached.query(CANADA)
    retriever.fail = True
    with pytest.raises(RuntimeError):  # the wrapped engine's own retrieval fails too
        cached.query(CANADA_PARAPHRASE)
    assert cached.evidence_rejections == 1
    other: Any = CachedQueryEngine(_engine(retriever.inner), cache, confirm_with=retriever)
    response = other.query(CANADA_PARAPHRASE)  # the engine answers; nothing unchecked served
    assert response.metadata is None or "rag_optimize_cache" not in response.metadata
    assert other.evidence_rejections == 1


def test_bad_arguments(embedder: LocalEmbedder, retriever: CountingRetriever) -> None:
    cache = SemanticCache(embedder)
    with pytest.raises(InvalidTypeError, match="confirm_with"):
        CachedQueryEngine(_engine(retriever), cache, confirm_with="retriever")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="min_overlap"):
        CachedQueryEngine(_engine(retriever), cache, confirm_with=retriever, min_overlap=0)
