"""LlamaIndex adapter for hybrid retrieval: a concurrent fusion retriever with real async.

``AsyncHybridRetriever`` is a LlamaIndex ``BaseRetriever``. Either it wraps retrievers you
already have (e.g. ``BM25Retriever`` and ``index.as_retriever()``) and runs them at the same
time, in ``retrieve`` (threads) and in ``aretrieve`` (tasks on the loop, a real
``_aretrieve``), each with a timeout, answering from the others when one fails; or
:meth:`AsyncHybridRetriever.from_nodes` builds rag-optimize's BM25 and dense indexes.
Each node's ``metadata["rag_optimize"]`` holds its fused score, per-branch ranks and whether
the result was degraded; that key is excluded from what the LLM and embedder see.

Rerank and context-budget postprocessors are in :mod:`llama_index_rag_optimize.postprocessors`.
All logic lives in :mod:`rag_optimize.retrieval`; this module only translates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from llama_index_rag_optimize.embedder import LlamaIndexEmbedder
from rag_optimize.index import Hit
from rag_optimize.retrieval import (
    CallableBranch,
    FusionRetriever,
    HybridRetriever,
    RetrievalResult,
    RetrievedDocument,
    wrap_retrievers,
)

METADATA_KEY = "rag_optimize"


def with_provenance(node: BaseNode, score: float, info: dict[str, Any]) -> NodeWithScore:
    """A copy of ``node`` carrying ``info`` in metadata (hidden from LLM and embedder)."""
    copy = node.model_copy()
    copy.metadata = {**node.metadata, METADATA_KEY: info}
    # New lists: model_copy is shallow and the original node's lists must stay as they were.
    if METADATA_KEY not in copy.excluded_llm_metadata_keys:
        copy.excluded_llm_metadata_keys = [*copy.excluded_llm_metadata_keys, METADATA_KEY]
    if METADATA_KEY not in copy.excluded_embed_metadata_keys:
        copy.excluded_embed_metadata_keys = [*copy.excluded_embed_metadata_keys, METADATA_KEY]
    return NodeWithScore(node=copy, score=score)


def _to_hits(nodes: Sequence[NodeWithScore]) -> list[Hit]:
    return [
        Hit(
            n.node.node_id,
            float(n.score) if n.score is not None else 1.0 / rank,
            n.node.get_content(),
            n.node.metadata,
            n.node,
        )
        for rank, n in enumerate(nodes, start=1)
    ]


def _branch(name: str, retriever: BaseRetriever) -> CallableBranch:
    def search(query: str, k: int) -> list[Hit]:
        return _to_hits(retriever.retrieve(query))

    async def asearch(query: str, k: int) -> list[Hit]:
        return _to_hits(await retriever.aretrieve(query))

    return CallableBranch(name, search, asearch)


class AsyncHybridRetriever(BaseRetriever):
    """Run several retrievers (or our BM25 + dense indexes) concurrently and fuse them.

    Wrap mode: ``AsyncHybridRetriever([bm25, vector_retriever], weights=[1, 1])``; branch
    names default to ``"r0", "r1", ...``. ``fusion`` is ``"rrf"``, ``"weighted"`` or
    ``"relative_score"``; ``k`` results; ``branch_timeout_ms`` abandons a slow branch;
    ``reranker`` is any rag-optimize ``Reranker``. Index mode: :meth:`from_nodes`.
    """

    def __init__(
        self,
        retrievers: Sequence[BaseRetriever] | None = None,
        *,
        names: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        fusion: str = "rrf",
        k: int = 10,
        candidates: int = 50,
        branch_timeout_ms: float | None = None,
        reranker: Any = None,
        engine: FusionRetriever | None = None,
        nodes: Sequence[BaseNode] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._nodes = {n.node_id: n for n in nodes or ()}
        if engine is not None:
            self.engine = engine
            return
        self.engine = wrap_retrievers(
            retrievers or [],
            _branch,
            names=names,
            weights=weights,
            fusion=fusion,
            k=k,
            candidates=candidates,
            reranker=reranker,
            branch_timeout_ms=branch_timeout_ms,
        )

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        embed_model: BaseEmbedding,
        *,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **options: Any,
    ) -> AsyncHybridRetriever:
        """Index ``nodes`` in rag-optimize's BM25 and dense indexes.

        A node that already carries an ``embedding`` keeps it; the others are embedded from
        ``node.get_content(metadata_mode=MetadataMode.EMBED)``, the text a LlamaIndex index
        embeds (content plus the metadata not excluded from embedding). BM25 indexes the
        content alone. ``options`` go to :meth:`rag_optimize.HybridRetriever.from_texts`
        (``fusion``, ``weights`` as ``{"bm25": .., "dense": ..}``, ``k``, ``candidates``,
        ``reranker``, ``branch_timeout_ms``, ``quantization``, ``ann``, ``bm25_options``).
        """
        nodes = list(nodes)
        engine = HybridRetriever.from_texts(
            [n.get_content() for n in nodes],
            LlamaIndexEmbedder(embed_model),
            ids=[n.node_id for n in nodes],
            metadatas=[n.metadata for n in nodes],
            vectors=[n.embedding for n in nodes],
            embed_texts=[n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
            **options,
        )
        return cls(engine=engine, nodes=nodes, callback_manager=callback_manager, verbose=verbose)

    def retrieve_result(self, query: str, k: int | None = None) -> RetrievalResult:
        """The full rag-optimize result (timings, failures), with an optional per-call ``k``."""
        return self.engine.retrieve(query, k)

    def _to_nodes(self, result: RetrievalResult) -> list[NodeWithScore]:
        out = []
        for item in result:
            node = self._node_for(item)
            out.append(with_provenance(node, item.score, result.provenance(item)))
        return out

    def _node_for(self, item: RetrievedDocument) -> BaseNode:
        if isinstance(item.payload, BaseNode):
            return item.payload
        if item.id in self._nodes:
            return self._nodes[item.id]
        return TextNode(id_=item.id, text=item.text, metadata=dict(item.metadata))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._to_nodes(self.engine.retrieve(query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._to_nodes(await self.engine.aretrieve(query_bundle.query_str))
