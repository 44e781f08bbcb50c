"""CohereReranker with the real cohere SDK against a local server speaking the v2 rerank API."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from cohere_server import CohereRerankServer  # noqa: E402

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError
from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.retrieval import (
    CohereReranker,
    HybridRetriever,
    RerankError,
    RetrievedDocument,
    aapply_reranker,
    apply_reranker,
)

DOCS = [
    "Bananas are yellow fruit.",
    "The capital of France is Paris.",
    "Paris hosts the Louvre museum, the capital's biggest.",
    "Rust is a systems programming language.",
]


@pytest.fixture
def server() -> Iterator[CohereRerankServer]:
    with CohereRerankServer() as srv:
        yield srv


def reranker(server: CohereRerankServer, **options: object) -> CohereReranker:
    kwargs: dict = {"api_key": "test-key", "base_url": server.url, "timeout": 0.5, **options}
    return CohereReranker("rerank-test", **kwargs)


def docs() -> list[RetrievedDocument]:
    return [RetrievedDocument(id=str(i), text=t, score=1.0 / (i + 1)) for i, t in enumerate(DOCS)]


def test_rerank_sends_a_v2_request_and_parses_the_answer(server: CohereRerankServer) -> None:
    ranking = reranker(server).rerank("capital of France Paris", DOCS, top_n=2)
    assert ranking == [(1, 1.0), (2, 0.5)]  # word overlap: 4/4 and 2/4
    body = server.requests[0]
    assert body["model"] == "rerank-test" and body["top_n"] == 2 and body["documents"] == DOCS


async def test_async_rerank(server: CohereRerankServer) -> None:
    ranking = await reranker(server).arerank("Rust programming", DOCS, top_n=1)
    assert ranking == [(3, 1.0)]


def test_retries_a_429_then_succeeds(server: CohereRerankServer) -> None:
    server.script = ["429"]
    ranked, failure = apply_reranker(reranker(server, max_retries=1), "bananas", docs(), 2)
    assert failure is None
    assert ranked[0].id == "0" and ranked[0].rerank_score == 1.0
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", ["429", "500"])
def test_errors_after_retries_keep_the_fused_order_flagged(
    server: CohereRerankServer, status: str
) -> None:
    server.script = [status, status]
    ranked, failure = apply_reranker(reranker(server, max_retries=1), "bananas", docs(), 3)
    assert [d.id for d in ranked] == ["0", "1", "2"]  # fused order, unchanged
    assert all(d.rerank_score is None for d in ranked)
    assert failure is not None and "Cohere rerank failed" in failure and status in failure
    assert len(server.requests) == 2  # first try + one retry
    with pytest.raises(RerankError, match=status):
        server.script = [status]
        reranker(server, max_retries=0).rerank("bananas", DOCS, 1)


def test_slow_answer_times_out_and_keeps_the_fused_order(server: CohereRerankServer) -> None:
    server.script = ["slow"]  # held until the test ends
    ranked, failure = apply_reranker(reranker(server, max_retries=0), "Rust", docs(), 2)
    assert not server.slow_answered.is_set()  # gave up (0.5 s timeout) before the answer
    assert [d.id for d in ranked] == ["0", "1"]
    assert failure is not None and "Timeout" in failure


async def test_async_slow_answer_is_flagged(server: CohereRerankServer) -> None:
    server.script = ["slow"]
    ranked, failure = await aapply_reranker(reranker(server, max_retries=0), "Rust", docs(), 2)
    assert not server.slow_answered.is_set()  # gave up before the answer
    assert [d.id for d in ranked] == ["0", "1"] and failure is not None and "Timeout" in failure


def test_hybrid_with_cohere_reranks_and_degrades(
    server: CohereRerankServer, hashing_embedder: HashingEmbedder
) -> None:
    retriever = HybridRetriever(
        BM25Index(), DenseIndex(), hashing_embedder, k=2, reranker=reranker(server, max_retries=0)
    )
    retriever.add_texts(DOCS)
    good = retriever.retrieve("Paris capital of France")
    assert not good.degraded and good.ids == ["1", "2"]
    assert good[0].rerank_score == 1.0
    server.script = ["500"]
    bad = asyncio.run(retriever.aretrieve("Paris capital of France"))
    assert bad.degraded and "500" in bad.failures["reranker"]
    assert bad[0].rerank_score is None and len(bad) == 2


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        CohereReranker(timeout=0)
    with pytest.raises(ConfigurationError, match="max_retries"):
        CohereReranker(max_retries=-1)
