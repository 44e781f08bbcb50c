"""LlamaIndex adapter: AsyncHybridRetriever and postprocessors inside real query engines."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.retrievers.bm25 import BM25Retriever

from llama_index_rag_optimize import (
    AsyncHybridRetriever,
    CohereRerank,
    ContextBudgetPostprocessor,
)
from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import InvalidInputError

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from cohere_server import CohereRerankServer  # noqa: E402
from rendezvous import ameeting, meeting  # noqa: E402

TEXTS = {
    "p": "Paris is the capital and largest city of France.",
    "e": "The Eiffel Tower is a lattice tower in Paris.",
    "b": "Berlin is the capital of Germany.",
    "s": "Photosynthesis turns light into chemical energy.",
}


class HashEmbedding(BaseEmbedding):
    """A real LlamaIndex embedding class over the deterministic hashing embedder."""

    def _inner(self) -> HashingEmbedder:
        return HashingEmbedder(dim=256)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._inner().embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._inner().embed_query(text)


async def no_ahold() -> None:
    """The default for SlowRetriever's ``ahold``: no wait at all."""


class SlowRetriever(BaseRetriever):
    """Returns fixed nodes after ``hold()`` (sync) / ``await ahold()`` (async), or fails."""

    def __init__(
        self,
        ids: list[str],
        fail: bool = False,
        hold: Callable[[], object] = lambda: None,
        ahold: Callable[[], Awaitable[object]] = no_ahold,
    ) -> None:
        super().__init__()
        self.ids, self.fail, self.hold, self.ahold = ids, fail, hold, ahold

    def _nodes(self) -> list[NodeWithScore]:
        if self.fail:
            raise ConnectionError("vector database unreachable")
        return [NodeWithScore(node=TextNode(id_=i, text=TEXTS[i]), score=1.0) for i in self.ids]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.hold()
        return self._nodes()

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        await self.ahold()
        return self._nodes()


def nodes() -> list[TextNode]:
    return [TextNode(id_=i, text=t, metadata={"src": i.upper()}) for i, t in TEXTS.items()]


@pytest.fixture(autouse=True)
def offline_settings() -> Iterator[None]:
    Settings.embed_model = HashEmbedding()
    Settings.llm = MockLLM()
    yield


def wrapped(**options: Any) -> AsyncHybridRetriever:
    bm25 = BM25Retriever.from_defaults(nodes=nodes(), similarity_top_k=3)
    vector = VectorStoreIndex(nodes(), embed_model=HashEmbedding()).as_retriever(similarity_top_k=3)
    return AsyncHybridRetriever([bm25, vector], names=["bm25", "vector"], **options)


def test_wraps_bm25_and_vector_index_retrievers() -> None:
    results = wrapped(k=2).retrieve("capital of France")
    assert results[0].node.node_id == "p" and len(results) == 2
    info = results[0].node.metadata["rag_optimize"]
    assert info["ranks"] == {"bm25": 1, "vector": 1} and info["degraded"] is False
    assert results[0].node.metadata["src"] == "P"
    llm_text = results[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "rag_optimize" not in llm_text and "src: P" in llm_text


async def test_aretrieve_matches_retrieve() -> None:
    retriever = wrapped(k=3, fusion="weighted")
    sync_ids = [n.node.node_id for n in retriever.retrieve("Eiffel tower Paris")]
    assert [n.node.node_id for n in await retriever.aretrieve("Eiffel tower Paris")] == sync_ids


@pytest.mark.parametrize("mode", ["retrieve", "aretrieve"])
def test_wrapped_retrievers_run_concurrently(mode: str) -> None:
    # Each retriever waits inside until the other is inside too: one after the other, they
    # never meet, and both fail.
    def pair(**hold: Any) -> AsyncHybridRetriever:
        return AsyncHybridRetriever(
            [SlowRetriever(["p", "e"], **hold), SlowRetriever(["e", "b"], **hold)]
        )

    async def aretrieve() -> list[NodeWithScore]:
        return await pair(ahold=ameeting(2)).aretrieve("anything")

    if mode == "retrieve":
        results = pair(hold=meeting(2)).retrieve("anything")
    else:
        results = asyncio.run(aretrieve())
    assert results[0].node.metadata["rag_optimize"]["degraded"] is False
    assert results[0].node.node_id == "e"


def test_failing_retriever_degrades() -> None:
    retriever = AsyncHybridRetriever(
        [SlowRetriever(["p", "e"]), SlowRetriever([], fail=True)], names=["ok", "down"]
    )
    results = retriever.retrieve("anything")
    assert [n.node.node_id for n in results] == ["p", "e"]
    info = results[0].node.metadata["rag_optimize"]
    assert info["degraded"] is True and "unreachable" in info["failures"]["down"]


def test_from_nodes_in_a_query_engine_with_budget() -> None:
    retriever = AsyncHybridRetriever.from_nodes(nodes(), HashEmbedding(), k=3)
    budget = ContextBudgetPostprocessor(max_tokens=14, token_counter="words")
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[budget])
    response = engine.query("capital of Germany")
    sources = [n.node.node_id for n in response.source_nodes]
    assert sources[0] == "b"  # "Berlin is the capital of Germany." = 6 words -> 8 tokens
    assert len(sources) == 1  # the next node (10 words -> 13 tokens) does not fit in 14
    assert response.source_nodes[0].node.metadata["src"] == "B"
    assert str(response)  # MockLLM answered from the prompt


async def test_aquery_uses_the_async_path() -> None:
    retriever = AsyncHybridRetriever.from_nodes(
        nodes(), HashEmbedding(), k=2, quantization="binary"
    )
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = await engine.aquery("Eiffel Tower")
    assert response.source_nodes[0].node.node_id == "e"


def test_budget_drops_near_duplicates_by_embedding() -> None:
    dup = [
        NodeWithScore(node=TextNode(id_="1", text="Paris is the capital of France."), score=0.9),
        NodeWithScore(node=TextNode(id_="2", text="Paris is the capital of France!"), score=0.8),
        NodeWithScore(node=TextNode(id_="3", text="Bananas are yellow."), score=0.7),
    ]
    post = ContextBudgetPostprocessor(max_tokens=100, embed_model=HashEmbedding())
    kept = post.postprocess_nodes(dup, query_str="Paris")
    assert [n.node.node_id for n in kept] == ["1", "3"]


@pytest.fixture
def server() -> Iterator[CohereRerankServer]:
    with CohereRerankServer() as srv:
        yield srv


def test_cohere_rerank_postprocessor(server: CohereRerankServer) -> None:
    rerank = CohereRerank(
        model="rerank-test", top_n=1, api_key="k", base_url=server.url, max_retries=0, timeout=0.5
    )
    engine = RetrieverQueryEngine.from_args(
        wrapped(k=4), llm=MockLLM(), node_postprocessors=[rerank]
    )
    top = engine.query("Eiffel Tower").source_nodes
    assert [n.node.node_id for n in top] == ["e"] and top[0].score == 1.0
    fused = [n.node.node_id for n in wrapped(k=4).retrieve("Berlin capital")]
    server.script = ["slow"]  # held until the test ends
    degraded = engine.query("Berlin capital").source_nodes
    assert not server.slow_answered.is_set()  # gave up (0.5 s timeout) before the answer
    assert [n.node.node_id for n in degraded] == fused[:1]
    assert "Timeout" in degraded[0].node.metadata["rag_optimize"]["rerank_failed"]


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="query is empty"):
        wrapped().retrieve(" ")
    with pytest.raises(ValueError, match="at least one retriever"):
        AsyncHybridRetriever([])
    with pytest.raises(ValueError, match="unknown fusion"):
        wrapped(fusion="borda")


class CountingEmbedding(HashEmbedding):
    """Records every text it embeds (to see what was re-embedded, and with what)."""

    seen: list[str] = []

    def _get_text_embedding(self, text: str) -> list[float]:
        self.seen.append(text)
        return super()._get_text_embedding(text)


def test_from_nodes_takes_a_callback_manager_and_embeds_like_the_index() -> None:
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    debug = LlamaDebugHandler()
    manager = CallbackManager([debug])
    given = nodes()
    given[0].embedding = HashEmbedding().get_text_embedding(given[0].get_content())
    embed = CountingEmbedding(seen=[])
    retriever = AsyncHybridRetriever.from_nodes(given, embed, callback_manager=manager, k=2)
    assert retriever.callback_manager is manager
    # The node with a stored embedding is not re-embedded; the others are embedded with
    # the metadata LlamaIndex's own index embeds ("src: B\n\nBerlin ...").
    assert len(embed.seen) == len(given) - 1
    assert embed.seen[1] == given[2].get_content(metadata_mode=MetadataMode.EMBED)
    assert "src: B" in embed.seen[1]
    assert retriever.retrieve("capital of Germany")[0].node.node_id == "b"
    assert debug.get_event_pairs(CBEventType.RETRIEVE)
    assert len(retriever.retrieve_result("capital of Germany", k=1)) == 1


def test_metadata_filters_apply_inside_both_branches() -> None:
    from llama_index.core.vector_stores import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )

    only_b = MetadataFilters(filters=[MetadataFilter(key="src", value="B")])
    # k above the number of matches: exactly the match comes back, no zero-score leaks.
    retriever = AsyncHybridRetriever.from_nodes(nodes(), HashEmbedding(), k=4, filters=only_b)
    assert [n.node.node_id for n in retriever.retrieve("Paris")] == ["b"]
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="src", value=["P", "E"], operator=FilterOperator.IN),
            MetadataFilters(
                filters=[MetadataFilter(key="src", value="S", operator=FilterOperator.EQ)]
            ),
        ],
        condition=FilterCondition.OR,
    )
    result = retriever.retrieve_result("Paris", filters=either)
    assert sorted(result.ids) == ["e", "p", "s"]
    none_of = MetadataFilters(
        filters=[MetadataFilter(key="src", value="P"), MetadataFilter(key="src", value="E")],
        condition=FilterCondition.NOT,
    )
    assert sorted(retriever.retrieve_result("Paris", filters=none_of).ids) == ["b", "s"]
    text = MetadataFilters(
        filters=[MetadataFilter(key="src", value="B", operator=FilterOperator.TEXT_MATCH)]
    )
    with pytest.raises(ValueError, match="unsupported filter operator 'text_match' on 'src'"):
        retriever.retrieve_result("Paris", filters=text)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    assert [n.node.node_id for n in engine.query("Paris").source_nodes] == ["b"]


def test_from_index_reuses_the_vector_store_and_round_trips(tmp_path: Path) -> None:
    embed = CountingEmbedding(seen=[])
    index = VectorStoreIndex(nodes(), embed_model=embed)
    embed.seen.clear()
    retriever = AsyncHybridRetriever.from_index(index, k=2)
    assert embed.seen == []  # the simple vector store's embeddings were reused
    assert retriever.retrieve("capital of Germany")[0].node.node_id == "b"
    retriever.insert_nodes([TextNode(id_="r", text="Rome is the capital of Italy.")])
    assert retriever.retrieve("capital of Italy")[0].node.node_id == "r"
    assert retriever.delete_nodes(["b"]) == 1
    assert "b" not in [n.node.node_id for n in retriever.retrieve("Germany Berlin")]
    retriever.update_nodes([TextNode(id_="r", text="Madrid is the capital of Spain.")])
    assert retriever.retrieve("capital of Spain")[0].node.node_id == "r"
    retriever.save(tmp_path / "idx")
    embed.seen.clear()
    loaded = AsyncHybridRetriever.load(tmp_path / "idx", embed, mmap=True)
    assert embed.seen == []
    top = loaded.retrieve("capital of Spain")[0].node
    assert top.node_id == "r" and top.get_content() == "Madrid is the capital of Spain."
    assert loaded.retrieve("capital of France")[0].node.metadata["src"] == "P"


def test_calibrate_fusion_sets_the_engine_weights() -> None:
    retriever = AsyncHybridRetriever.from_nodes(nodes(), HashEmbedding(), k=2)
    result = retriever.calibrate_fusion(
        ["capital of France", "light into energy"], [["p"], ["s"]], steps=4
    )
    assert retriever.engine.weights == result.weights
    assert result.ndcg >= result.before
    assert retriever.retrieve("capital of France")[0].node.node_id == "p"


async def test_consistency_fusion_in_index_mode_learns_on_both_paths() -> None:
    retriever = AsyncHybridRetriever.from_nodes(nodes(), HashEmbedding())  # the default fusion
    retriever.retrieve("capital of Germany")
    await retriever.aretrieve("tower in Paris")
    assert retriever.engine.consistency.to_dict()["served"] == 2
