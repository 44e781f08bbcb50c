"""CachedQueryEngine's ``query`` and ``aquery`` run one plan: the same questions asked through
either give the same answers, the same served/vetoed decisions and the same retriever calls,
including the paths the async side had no test of (a confirming retriever that raises, a
veto, an exact repeat that skips the retriever, an engine that fails).

Real parts: a LlamaIndex ``RetrieverQueryEngine`` over a real ``BM25Retriever`` (MockLLM
answers), a deterministic hashing embedder at a low threshold so the near-miss *would* be
served on similarity alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_rag_optimize import CachedQueryEngine
from rag_optimize import SemanticCache
from rag_optimize.embedding import HashingEmbedder

bm25 = pytest.importorskip("llama_index.retrievers.bm25")

CANADA = "How long does shipping to Canada take?"
CANADA_PARAPHRASE = "How long does shipping to Canada usually take?"
CANADA_AGAIN = "How long does shipping to Canada normally take?"
MEXICO = "How long does shipping to Mexico take?"


class CountingRetriever(BaseRetriever):
    """A real BM25 retriever, counted per mode, failing on demand (sync and async alike)."""

    def __init__(self, inner: BaseRetriever) -> None:
        super().__init__()
        self.inner = inner
        self.calls = {"sync": 0, "async": 0}
        self.fail = False

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["sync"] += 1
        if self.fail:
            raise RuntimeError("search backend down")
        return self.inner.retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["async"] += 1
        if self.fail:
            raise RuntimeError("search backend down")
        return await self.inner.aretrieve(query_bundle)


def _retriever() -> CountingRetriever:
    docs = [
        Document(text="Shipping to Canada takes five business days.", doc_id="canada"),
        Document(text="Shipping to Mexico takes nine business days.", doc_id="mexico"),
    ]
    nodes = SentenceSplitter().get_nodes_from_documents(docs)
    return CountingRetriever(bm25.BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=1))


def _ask(cached: CachedQueryEngine, question: str, mode: str) -> Any:
    if mode == "sync":
        return cached.query(question)
    return asyncio.run(cached.aquery(question))


def _served(response: Any) -> tuple[bool, bool]:
    """(answered from the cache, as an exact repeat)."""
    info = (response.metadata or {}).get("rag_optimize_cache")
    return (info is not None, bool(info and info["exact"]))


def _trace(mode: str) -> list[Any]:
    """Ask the same questions in ``mode``; what happened at each step."""
    retriever = _retriever()
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=None)
    engine = RetrieverQueryEngine.from_args(retriever.inner, llm=MockLLM())
    cached = CachedQueryEngine(engine, cache, confirm_with=retriever)
    trace: list[Any] = []

    def step(question: str) -> None:
        response = _ask(cached, question, mode)
        sources = [n.node.ref_doc_id for n in response.source_nodes]
        trace.append(
            (question, _served(response), str(response), sources, cached.evidence_rejections)
        )
        trace.append(dict(retriever.calls))

    step(CANADA)  # miss, stored
    step(MEXICO)  # similar enough to serve, but its retrieval names other sources: vetoed
    step(CANADA_PARAPHRASE)  # confirmed and served
    step(CANADA)  # exact repeat: served without asking the retriever
    retriever.fail = True
    step(CANADA_PARAPHRASE)  # the confirming retriever raises: vetoed, the engine answers
    failing = CachedQueryEngine(
        RetrieverQueryEngine.from_args(retriever, llm=MockLLM()), cache, confirm_with=retriever
    )
    with pytest.raises(RuntimeError, match="search backend down"):
        _ask(failing, CANADA_AGAIN, mode)  # the engine's own failure reaches the caller
    trace.append((failing.evidence_rejections, cache.stats.hits, cache.stats.misses, len(cache)))
    return trace


def test_query_and_aquery_take_the_same_path() -> None:
    sync, asynchronous = _trace("sync"), _trace("async")
    # The same decisions, answers and sources; only which retriever method ran differs.
    swap = {"sync": "async", "async": "sync"}
    assert [
        {swap[k]: v for k, v in s.items()} if isinstance(s, dict) else s for s in asynchronous
    ] == sync
    decisions = [s[1] for s in sync if isinstance(s, tuple) and len(s) == 5]
    assert decisions == [
        (False, False),  # miss
        (False, False),  # vetoed near-miss
        (True, False),  # confirmed paraphrase
        (True, True),  # exact repeat
        (False, False),  # retriever down: vetoed, answered by the engine
    ]
    rejections = [s[4] for s in sync if isinstance(s, tuple) and len(s) == 5]
    assert rejections == [0, 1, 1, 1, 2]
    calls = [s["sync"] for s in sync if isinstance(s, dict)]
    assert calls == [0, 1, 2, 2, 3]  # no call on a miss or an exact repeat
    assert sync[-1][0] == 1  # the failing engine's hit was vetoed before it ran
