"""LlamaIndex adapter for hybrid retrieval: a concurrent fusion retriever with real async.

``AsyncHybridRetriever`` is a LlamaIndex ``BaseRetriever``. Either it wraps retrievers you
already have (e.g. ``BM25Retriever`` and ``index.as_retriever()``) and runs them at the same
time, in ``retrieve`` (threads) and in ``aretrieve`` (tasks on the loop, a real
``_aretrieve``), each with a timeout, answering from the others when one fails; or
:meth:`AsyncHybridRetriever.from_nodes` (or ``from_index``, reusing the vectors a
``VectorStoreIndex`` holds) builds rag-optimize's BM25 and dense indexes, which take
``insert_nodes`` / ``delete_nodes`` / ``update_nodes`` and ``save`` / ``load``.
Each node's ``metadata["rag_optimize"]`` holds its fused score, per-branch ranks and whether
the result was degraded; that key is excluded from what the LLM and embedder see.

Rerank and context-budget postprocessors are in :mod:`llama_index_rag_optimize.postprocessors`.
All logic lives in :mod:`rag_optimize.retrieval`; this module only translates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from typing_extensions import Unpack

from llama_index_rag_optimize.embedder import LlamaIndexEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import Hit
from rag_optimize.retrieval import (
    And,
    CalibrationOptions,
    CallableBranch,
    DocumentColumns,
    Eq,
    Filter,
    FusionCalibration,
    FusionOptions,
    FusionRetriever,
    HybridBuildOptions,
    HybridRetriever,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    Range,
    RetrievalResult,
    RetrievedDocument,
    calibrate_fusion,
    parse_filter,
    wrap_retrievers,
)
from rag_optimize.validation import check_options

__all__ = ["AsyncHybridRetriever", "to_filter", "with_provenance"]

METADATA_KEY = "rag_optimize"
_NODES_FILE = "llama_index_nodes.json"
_RANGES = {
    FilterOperator.GT: "gt",
    FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt",
    FilterOperator.LTE: "lte",
}


def _one(item: MetadataFilter) -> Filter:
    op, key, value = item.operator, item.key, item.value
    if op == FilterOperator.EQ:
        return Eq(key, value)  # type: ignore[arg-type]
    if op == FilterOperator.NE:
        return Ne(key, value)  # type: ignore[arg-type]
    if op in _RANGES:
        return Range(key, **{_RANGES[op]: value})  # type: ignore[arg-type]
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return In(key, value)  # type: ignore[arg-type]
    if op == FilterOperator.NIN:
        return NotIn(key, value)  # type: ignore[arg-type]
    if op == FilterOperator.CONTAINS:
        return Eq(key, value)  # type: ignore[arg-type]  # a list field matches by element
    if op == FilterOperator.ALL:
        return And(tuple(Eq(key, v) for v in value))  # type: ignore[union-attr]
    raise ConfigurationError(
        f"unsupported filter operator {op.value!r} on {key!r}: use ==, !=, >, >=, <, <=, "
        "in, nin, any, all or contains"
    )


def to_filter(filters: MetadataFilters | Filter | Mapping[str, Any] | None) -> Filter | None:
    """LlamaIndex ``MetadataFilters`` (nested, and/or/not) as a rag-optimize filter.

    A rag-optimize ``Filter`` or its dict form passes through. ``not`` matches when none
    of its filters match, as LlamaIndex's simple vector store does.
    """
    if filters is None or isinstance(filters, Filter):
        return filters
    if not isinstance(filters, MetadataFilters):
        return parse_filter(filters)
    parts = tuple(
        to_filter(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters
    )
    children = tuple(p for p in parts if p is not None)
    if not children:
        raise ConfigurationError("MetadataFilters holds no filter")
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return children[0] if len(children) == 1 else And(children)
    if condition == FilterCondition.OR:
        return Or(children)
    if condition == FilterCondition.NOT:
        return Not(Or(children))
    raise ConfigurationError(f"unsupported filter condition {condition!r}")


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


def _node_columns(nodes: Sequence[BaseNode]) -> DocumentColumns:
    """``nodes`` as the core takes them: the content (for BM25), ids, metadata, the stored
    embeddings and the texts to embed where there is none (as a LlamaIndex index does)."""
    return DocumentColumns(
        texts=[n.get_content() for n in nodes],
        ids=[n.node_id for n in nodes],
        metadatas=[dict(n.metadata) for n in nodes],
        vectors=[n.embedding for n in nodes],
        embed_texts=[n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
    )


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
    names default to ``"r0", "r1", ...``. ``fusion`` is ``"rrf"`` (default when wrapping),
    ``"auto"``, ``"weighted"`` or ``"relative_score"``, and in index mode also
    ``"consistency"`` (its default; see :class:`rag_optimize.HybridRetriever`); ``k`` results;
    ``branch_timeout_ms`` abandons a slow branch;
    ``reranker`` is any rag-optimize ``Reranker``. Index mode: :meth:`from_nodes`.
    ``filters`` (LlamaIndex ``MetadataFilters``, or a rag-optimize ``Filter``) is applied
    inside both branches before their top-k (index mode only).
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
        filters: MetadataFilters | Filter | Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._nodes = {n.node_id: n for n in nodes or ()}
        self.filters = to_filter(filters)
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
        filters: MetadataFilters | Filter | Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **options: Unpack[HybridBuildOptions],
    ) -> AsyncHybridRetriever:
        """Index ``nodes`` in rag-optimize's BM25 and dense indexes.

        A node that already carries an ``embedding`` keeps it; the others are embedded from
        ``node.get_content(metadata_mode=MetadataMode.EMBED)``, the text a LlamaIndex index
        embeds (content plus the metadata not excluded from embedding). BM25 indexes the
        content alone. ``filters`` is this retriever's filter of every call (see the class);
        ``callback_manager`` and ``verbose`` are LlamaIndex's. ``options``
        (:class:`rag_optimize.retrieval.HybridBuildOptions`) go to
        :meth:`rag_optimize.HybridRetriever.from_texts`: ``fusion``, ``weights`` as
        ``{"bm25": .., "dense": ..}``, ``k``, ``candidates``, ``reranker``,
        ``branch_timeout_ms``, ``quantization``, ``ann``, ``bm25_options`` and the rest of
        ``FusionRetriever``'s options. Any other keyword raises
        :class:`~rag_optimize.errors.UnknownOptionError` naming it.
        """
        check_options(options, HybridBuildOptions, "AsyncHybridRetriever.from_nodes")
        nodes = list(nodes)
        engine = HybridRetriever.from_texts(
            embedder=LlamaIndexEmbedder(embed_model), **_node_columns(nodes), **options
        )
        return cls(
            engine=engine,
            nodes=nodes,
            filters=filters,
            callback_manager=callback_manager,
            verbose=verbose,
        )

    @classmethod
    def from_index(
        cls,
        index: VectorStoreIndex,
        embed_model: BaseEmbedding | None = None,
        *,
        filters: MetadataFilters | Filter | Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **options: Unpack[HybridBuildOptions],
    ) -> AsyncHybridRetriever:
        """Build BM25 + dense indexes over a ``VectorStoreIndex``, reusing its vectors.

        The nodes come from the index's docstore; their embeddings from its vector store
        when that is LlamaIndex's simple (in-memory) store, so nothing is embedded again.
        A node without a stored vector is embedded as the index would embed it (with its
        embed metadata). ``embed_model`` defaults to the index's own. ``filters``,
        ``callback_manager``, ``verbose`` and ``options`` as for :meth:`from_nodes`.
        """
        check_options(options, HybridBuildOptions, "AsyncHybridRetriever.from_index")
        store = index.vector_store
        if store.stores_text:
            raise ConfigurationError(
                f"{type(store).__name__} keeps the nodes itself; build with from_nodes(nodes, ...)"
            )
        node_ids = list(index.index_struct.nodes_dict.values())
        nodes = [n.model_copy() for n in index.docstore.get_nodes(node_ids)]
        if isinstance(store, SimpleVectorStore):
            stored = store.data.embedding_dict
            for node in nodes:
                node.embedding = node.embedding or stored.get(node.node_id)
        return cls.from_nodes(
            nodes,
            embed_model or index._embed_model,
            filters=filters,
            callback_manager=callback_manager,
            verbose=verbose,
            **options,
        )

    def _hybrid(self) -> HybridRetriever:
        if not isinstance(self.engine, HybridRetriever):
            raise ConfigurationError(
                "this retriever wraps framework retrievers; inserting, deleting and saving "
                "nodes needs index mode (from_nodes / from_index / load)"
            )
        return self.engine

    def insert_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Add nodes to both indexes (embedded like :meth:`from_nodes` embeds)."""
        return self._write(nodes, self._hybrid().add_texts)

    def delete_nodes(self, node_ids: Sequence[str]) -> int:
        """Remove nodes by id from both indexes (every id must exist)."""
        removed = self._hybrid().delete(node_ids)
        for node_id in node_ids:
            self._nodes.pop(node_id, None)
        return removed

    def update_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Replace nodes by id (text, metadata, vector) in both indexes."""
        return self._write(nodes, self._hybrid().update)

    def _write(self, nodes: Sequence[BaseNode], write: Callable[..., list[str]]) -> list[str]:
        """``write(**columns)`` (the engine's ``add_texts`` or ``update``) for ``nodes``, then
        keep the nodes to return them whole from retrievals."""
        nodes = list(nodes)
        ids = write(**_node_columns(nodes))
        self._nodes.update((n.node_id, n) for n in nodes)
        return ids

    def save(self, path: str | Path) -> None:
        """Write the indexes, settings and the nodes (as LlamaIndex JSON) to ``path``."""
        engine = self._hybrid()
        engine.save(path)
        rows = {  # vectors live in the dense index: not again in the nodes' JSON
            node_id: doc_to_json(node.model_copy(update={"embedding": None}))
            for node_id, node in self._nodes.items()
        }
        (Path(path) / _NODES_FILE).write_text(json.dumps(rows))

    @classmethod
    def load(
        cls,
        path: str | Path,
        embed_model: BaseEmbedding,
        *,
        mmap: bool = False,
        filters: MetadataFilters | Filter | Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        **options: Unpack[FusionOptions],
    ) -> AsyncHybridRetriever:
        """Open a retriever saved with :meth:`save` without re-embedding anything.

        The saved nodes (relationships and all) come back as the retrieved nodes;
        ``embed_model`` embeds queries; ``options``
        (:class:`rag_optimize.retrieval.FusionOptions`) override the saved settings and give
        the unsaved ones (``reranker``, ``tracker``, ``filter``); any other keyword raises
        :class:`~rag_optimize.errors.UnknownOptionError` naming it.
        """
        check_options(options, FusionOptions, "AsyncHybridRetriever.load")
        engine = HybridRetriever.load(path, LlamaIndexEmbedder(embed_model), mmap=mmap, **options)
        nodes: list[BaseNode] = []
        nodes_file = Path(path) / _NODES_FILE
        if nodes_file.exists():
            try:
                nodes = [json_to_doc(row) for row in json.loads(nodes_file.read_text()).values()]
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInputError(f"cannot load nodes from {nodes_file}: {exc}") from exc
        return cls(engine=engine, nodes=nodes, filters=filters, callback_manager=callback_manager)

    def calibrate_fusion(
        self,
        queries: Sequence[str],
        relevant: Sequence[Sequence[str]],
        **options: Unpack[CalibrationOptions],
    ) -> FusionCalibration:
        """Set the branch weights from judged queries (``relevant[i]``: the node ids relevant
        to ``queries[i]``); see :func:`rag_optimize.retrieval.calibrate_fusion`. ``options``
        (:class:`rag_optimize.retrieval.CalibrationOptions`): ``k``, ``steps``, ``apply``;
        another keyword raises :class:`~rag_optimize.errors.UnknownOptionError`. Worth it
        where one branch is much weaker than the other on your data and the default fusion
        has not yet learned it from the queries it served, or where it reads it wrong."""
        check_options(options, CalibrationOptions, "AsyncHybridRetriever.calibrate_fusion")
        return calibrate_fusion(self.engine, queries, relevant, **options)

    def retrieve_result(
        self,
        query: str,
        k: int | None = None,
        filters: MetadataFilters | Filter | Mapping[str, Any] | None = None,
    ) -> RetrievalResult:
        """The full rag-optimize result (timings, failures); per-call ``k`` and ``filters``."""
        return self.engine.retrieve(query, k, filter=to_filter(filters) or self.filters)

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
        result = self.engine.retrieve(query_bundle.query_str, filter=self.filters)
        return self._to_nodes(result)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = await self.engine.aretrieve(query_bundle.query_str, filter=self.filters)
        return self._to_nodes(result)
