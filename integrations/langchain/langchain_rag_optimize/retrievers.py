"""LangChain adapters for hybrid retrieval: a concurrent fusion retriever and a reranker.

``AsyncHybridRetriever`` is a LangChain ``BaseRetriever``. Either it wraps retrievers you
already have (say a ``BM25Retriever`` and ``vectorstore.as_retriever()``) and runs them at the
same time in both ``invoke`` (threads) and ``ainvoke`` (tasks), each with a timeout, and
keeps answering when one fails (LangChain's ``EnsembleRetriever`` runs them one after another
in ``invoke`` and fails as a whole when one raises); or
``from_documents`` (or ``from_vectorstore``, reusing the vectors an ``InMemoryVectorStore`` or
``FAISS`` store holds) builds rag-optimize's own BM25 and dense indexes, which take
``add_documents`` / ``delete`` / ``update_documents`` and ``save`` / ``load``. Each returned
document's ``metadata["rag_optimize"]`` holds its fused score, per-branch ranks and whether
the result was degraded (a branch or the reranker failed and was skipped).

``CohereRerank`` is a ``BaseDocumentCompressor`` over Cohere's rerank API (or any rag-optimize
``Reranker``) that keeps the incoming order, flagged, when the API fails.

All logic lives in :mod:`rag_optimize.retrieval`; this module only translates.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from pydantic import ConfigDict, Field, PrivateAttr
from typing_extensions import Unpack

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import Hit
from rag_optimize.retrieval import (
    CalibrationOptions,
    CallableBranch,
    CohereReranker,
    DocumentColumns,
    FusionCalibration,
    FusionOptions,
    FusionRetriever,
    HybridBuildOptions,
    HybridRetriever,
    Reranker,
    RetrievalResult,
    RetrievedDocument,
    aapply_reranker,
    apply_reranker,
    calibrate_fusion,
    wrap_retrievers,
)
from rag_optimize.validation import check_options

METADATA_KEY = "rag_optimize"
_CALL_OPTIONS = frozenset({"k", "filter"})
# The callbacks of the current retriever run, read by the wrapped retrievers' branches (the
# core copies the context into its worker threads and tasks).
_child_callbacks: contextvars.ContextVar[Callbacks] = contextvars.ContextVar(
    "rag_optimize_langchain_callbacks", default=None
)

__all__ = ["AsyncHybridRetriever", "CohereRerank"]


def _to_hits(documents: Sequence[Document]) -> list[Hit]:
    """LangChain documents -> hits; the key is ``doc.id`` or else the text (like Ensemble)."""
    hits = []
    for rank, doc in enumerate(documents, start=1):
        score = doc.metadata.get("score")
        if not isinstance(score, (int, float)):
            score = 1.0 / rank  # rank-derived when the retriever gives no score
        hits.append(
            Hit(doc.id or doc.page_content, float(score), doc.page_content, doc.metadata, doc)
        )
    return hits


def _columns(
    documents: Sequence[Document], ids: Sequence[str], vectors: list[Any] | None = None
) -> DocumentColumns:
    """``documents`` as the core takes them (under ``ids``; ``vectors`` where known)."""
    return DocumentColumns(
        texts=[d.page_content for d in documents],
        ids=ids,
        metadatas=[d.metadata for d in documents],
        vectors=vectors,
    )


def _stored(vectorstore: VectorStore) -> tuple[list[Document], list[Any]]:
    """The documents a LangChain vector store holds and, where it has them, their vectors."""
    table = getattr(vectorstore, "store", None)
    if isinstance(vectorstore, InMemoryVectorStore) and isinstance(table, dict):
        rows = list(table.values())
        docs = [Document(r["text"], metadata=dict(r["metadata"]), id=r["id"]) for r in rows]
        return docs, [r.get("vector") for r in rows]
    index = getattr(vectorstore, "index", None)
    mapping = getattr(vectorstore, "index_to_docstore_id", None)
    docstore = getattr(vectorstore, "docstore", None)
    if index is not None and isinstance(mapping, dict) and docstore is not None:  # FAISS
        positions = sorted(mapping)
        docs = []
        for pos in positions:
            doc = docstore.search(mapping[pos])
            if not isinstance(doc, Document):
                raise ConfigurationError(f"FAISS docstore has no document {mapping[pos]!r}")
            docs.append(Document(doc.page_content, metadata=dict(doc.metadata), id=mapping[pos]))
        try:
            matrix = index.reconstruct_n(0, index.ntotal)
            vectors: list[Any] = [matrix[pos] for pos in positions]
        except RuntimeError:  # an index that cannot give its vectors back: embed again
            vectors = [None] * len(docs)
        return docs, vectors
    raise ConfigurationError(
        f"cannot read the documents of a {type(vectorstore).__name__}: use "
        "InMemoryVectorStore or FAISS, or from_documents with your documents"
    )


def _to_document(result: RetrievalResult, item: RetrievedDocument) -> Document:
    original = item.payload if isinstance(item.payload, Document) else None
    metadata = dict(original.metadata if original is not None else item.metadata)
    metadata[METADATA_KEY] = result.provenance(item)
    return Document(
        page_content=original.page_content if original is not None else item.text,
        metadata=metadata,
        id=original.id if original is not None else item.id,
    )


def _branch(name: str, retriever: BaseRetriever) -> CallableBranch:
    def search(query: str, k: int) -> list[Hit]:
        return _to_hits(
            retriever.invoke(query, config=RunnableConfig(callbacks=_child_callbacks.get()))
        )

    async def asearch(query: str, k: int) -> list[Hit]:
        config = RunnableConfig(callbacks=_child_callbacks.get())
        return _to_hits(await retriever.ainvoke(query, config=config))

    return CallableBranch(name, search, asearch)


class AsyncHybridRetriever(BaseRetriever):
    """Run several retrievers (or our BM25 + dense indexes) concurrently and fuse them.

    Wrap mode: ``AsyncHybridRetriever(retrievers=[bm25, vector_retriever], weights=[0.5,
    0.5])``; branch names default to ``"r0", "r1", ...`` (set ``names``). ``fusion`` is
    ``"rrf"`` (the default when wrapping: wrapped retrievers rarely give scores),
    ``"weighted"``, ``"relative_score"`` or ``"auto"`` (weighs each branch per query by its
    score evidence), and in index mode ``"consistency"`` (its default: learns each branch's
    weight from the queries it serves; see :class:`rag_optimize.HybridRetriever`); ``k``
    results are returned; ``branch_timeout_ms`` abandons a slow branch; ``reranker`` is any
    rag-optimize ``Reranker`` (e.g. ``CohereReranker``). Index mode: :meth:`from_documents`.

    Per call: ``invoke(query, k=3, filter={...})`` or ``search_kwargs={"k": .., "filter":
    ..}``. Filters need index mode (a wrapped retriever filters with its own options).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retrievers: list[BaseRetriever] = Field(default_factory=list)
    names: list[str] | None = None
    weights: list[float] | None = None
    fusion: str = "rrf"
    k: int = 10
    candidates: int = 50
    branch_timeout_ms: float | None = None
    reranker: Any = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Defaults for every call (``k``, ``filter``), overridden by ``invoke(query, k=..)``."""
    filter: Any = None
    """Default metadata filter: a rag-optimize ``Filter`` or the dict form LangChain vector
    stores take (``{"source": "a", "year": {"$gte": 2020}}``, ``$in``, ``$and``, ``$or``...)."""
    engine: Any = None
    """A ready rag-optimize ``FusionRetriever`` / ``HybridRetriever`` (index mode)."""

    _engine: FusionRetriever = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        if self.engine is not None:
            if not isinstance(self.engine, FusionRetriever):
                raise ConfigurationError(
                    "engine must be a rag_optimize FusionRetriever or HybridRetriever, "
                    f"got {type(self.engine).__name__}"
                )
            self._engine = self.engine
            # An engine brings its own k and fusion unless this retriever was given them.
            if "k" not in self.model_fields_set:
                self.k = self.engine.k
            if "fusion" not in self.model_fields_set:
                self.fusion = self.engine.fusion
            return
        self._engine = wrap_retrievers(
            self.retrievers,
            _branch,
            names=self.names,
            weights=self.weights,
            fusion=self.fusion,
            k=self.k,
            candidates=self.candidates,
            reranker=self.reranker,
            branch_timeout_ms=self.branch_timeout_ms,
        )

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        embeddings: Embeddings,
        **options: Unpack[HybridBuildOptions],
    ) -> AsyncHybridRetriever:
        """Index ``documents`` in rag-optimize's BM25 and dense indexes (embedded once).

        ``options`` (:class:`rag_optimize.retrieval.HybridBuildOptions`) go to
        :meth:`rag_optimize.HybridRetriever.from_texts`: ``fusion``, ``weights`` as
        ``{"bm25": .., "dense": ..}``, ``k``, ``candidates``, ``reranker``,
        ``branch_timeout_ms``, ``filter`` (the default of every call), ``quantization``,
        ``ann``, ``bm25_options`` and the rest of ``FusionRetriever``'s options. Any other
        keyword raises :class:`~rag_optimize.errors.UnknownOptionError` naming it.
        """
        check_options(options, HybridBuildOptions, "AsyncHybridRetriever.from_documents")
        ids = [d.id or str(i) for i, d in enumerate(documents)]
        engine = HybridRetriever.from_texts(
            embedder=embeddings, **_columns(documents, ids), **options
        )
        return cls(engine=engine, k=engine.k, fusion=engine.fusion)

    @classmethod
    def from_vectorstore(
        cls,
        vectorstore: VectorStore,
        embeddings: Embeddings | None = None,
        **options: Unpack[HybridBuildOptions],
    ) -> AsyncHybridRetriever:
        """Build BM25 + dense indexes over what ``vectorstore`` holds, reusing its vectors.

        ``InMemoryVectorStore`` and ``FAISS`` (flat indexes, or any that can reconstruct
        their vectors) give their stored embeddings, so nothing is embedded again; only
        vectors a store cannot give back are embedded. ``embeddings`` embeds queries
        (default: the store's own, which must be the model its vectors came from).
        ``options`` as for :meth:`from_documents`.
        """
        check_options(options, HybridBuildOptions, "AsyncHybridRetriever.from_vectorstore")
        embeddings = embeddings or vectorstore.embeddings
        if embeddings is None:
            raise ConfigurationError(
                f"{type(vectorstore).__name__} has no embeddings: pass embeddings=..."
            )
        documents, vectors = _stored(vectorstore)
        columns = _columns(documents, [str(d.id) for d in documents], vectors)
        engine = HybridRetriever.from_texts(embedder=embeddings, **columns, **options)
        return cls(engine=engine, k=engine.k, fusion=engine.fusion)

    def _hybrid(self) -> HybridRetriever:
        if not isinstance(self._engine, HybridRetriever):
            raise ConfigurationError(
                "this retriever wraps framework retrievers; adding, deleting and saving "
                "documents needs index mode (from_documents / from_vectorstore / load)"
            )
        return self._engine

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Add documents to both indexes (ids from ``doc.id``, else numbered)."""
        engine = self._hybrid()
        base = len(engine.sparse or engine.dense or ())
        ids = [d.id or str(base + i) for i, d in enumerate(documents)]
        return engine.add_texts(**_columns(documents, ids))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id from both indexes (every id must exist)."""
        return self._hybrid().delete(ids)

    def update_documents(self, documents: Sequence[Document]) -> list[str]:
        """Replace documents by their ``doc.id`` (text, metadata and vector) in both indexes."""
        missing = [d for d in documents if not d.id]
        if missing:
            raise InvalidInputError("update_documents needs documents with an id")
        return self._hybrid().update(**_columns(documents, [str(d.id) for d in documents]))

    def save(self, path: str | Path) -> None:
        """Write the indexes and settings to directory ``path`` (no pickle)."""
        self._hybrid().save(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        embeddings: Embeddings,
        *,
        mmap: bool = False,
        **options: Unpack[FusionOptions],
    ) -> AsyncHybridRetriever:
        """Open a retriever saved with :meth:`save` without re-embedding anything.

        ``embeddings`` embeds queries (the model the documents were embedded with);
        ``mmap=True`` maps the arrays from disk; ``options``
        (:class:`rag_optimize.retrieval.FusionOptions`) override the saved settings and give
        the unsaved ones (``reranker``, ``tracker``, ``filter``); any other keyword raises
        :class:`~rag_optimize.errors.UnknownOptionError` naming it.
        """
        check_options(options, FusionOptions, "AsyncHybridRetriever.load")
        engine = HybridRetriever.load(path, embeddings, mmap=mmap, **options)
        return cls(engine=engine, k=engine.k, fusion=engine.fusion)

    def _call_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Per-call options from ``invoke(query, **kwargs)``: ``k``, ``filter``, ``search_kwargs``.

        LangChain passes ``invoke``'s extra keywords here; ``search_kwargs`` (as in
        ``VectorStoreRetriever``) may hold ``k`` and ``filter`` too. Anything else is refused
        by name rather than silently ignored. The filter is applied inside both branches.
        """
        merged = {**self.search_kwargs, **dict(kwargs.pop("search_kwargs", None) or {}), **kwargs}
        unknown = sorted(set(merged) - _CALL_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown retriever option(s) {unknown}: use {sorted(_CALL_OPTIONS)}"
            )
        spec = merged.get("filter", self.filter)
        return {"k": merged.get("k", self.k), **({"filter": spec} if spec is not None else {})}

    def calibrate_fusion(
        self,
        queries: Sequence[str],
        relevant: Sequence[Sequence[str]],
        **options: Unpack[CalibrationOptions],
    ) -> FusionCalibration:
        """Set the branch weights from judged queries (``relevant[i]``: the ids of the
        documents relevant to ``queries[i]``); see
        :func:`rag_optimize.retrieval.calibrate_fusion`. ``options``
        (:class:`rag_optimize.retrieval.CalibrationOptions`): ``k``, ``steps``, ``apply``;
        another keyword raises :class:`~rag_optimize.errors.UnknownOptionError`. Worth it
        where one branch is much weaker than the other on your data and the default fusion
        has not yet learned it from the queries it served, or where it reads it wrong."""
        check_options(options, CalibrationOptions, "AsyncHybridRetriever.calibrate_fusion")
        return calibrate_fusion(self._engine, queries, relevant, **options)

    def retrieve_result(self, query: str, **kwargs: Any) -> RetrievalResult:
        """The full rag-optimize result (timings, failures) instead of documents."""
        return self._engine.retrieve(query, **self._call_options(kwargs))

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        with _children_of(run_manager):
            result = self._engine.retrieve(query, **self._call_options(kwargs))
        return [_to_document(result, item) for item in result]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        with _children_of(run_manager):
            result = await self._engine.aretrieve(query, **self._call_options(kwargs))
        return [_to_document(result, item) for item in result]


@contextmanager
def _children_of(run_manager: Any) -> Iterator[None]:
    """Inside the block, wrapped framework retrievers run as children of ``run_manager``'s
    run (the engine calls them through ``_child_callbacks``)."""
    token = _child_callbacks.set(run_manager.get_child())
    try:
        yield
    finally:
        _child_callbacks.reset(token)


def _as_retrieved(documents: Sequence[Document]) -> list[RetrievedDocument]:
    return [
        RetrievedDocument(str(i), d.page_content, 0.0, d.metadata, payload=d)
        for i, d in enumerate(documents)
    ]


def _reranked(items: list[RetrievedDocument], failure: str | None) -> list[Document]:
    out = []
    for item in items:
        doc: Document = item.payload
        metadata = dict(doc.metadata)
        if failure is None:
            metadata["relevance_score"] = item.rerank_score
        metadata[METADATA_KEY] = {
            **metadata.get(METADATA_KEY, {}),
            "rerank_score": item.rerank_score,
            "rerank_failed": failure,
        }
        out.append(Document(page_content=doc.page_content, metadata=metadata, id=doc.id))
    return out


class CohereRerank(BaseDocumentCompressor):
    """Rerank documents with Cohere (``cohere.ClientV2.rerank``); fail open.

    Like ``langchain_cohere.CohereRerank`` (``model``, ``top_n``; the score is in
    ``metadata["relevance_score"]``), but on a Cohere error or timeout the documents come back
    in their incoming order, cut to ``top_n``, with ``metadata["rag_optimize"]["rerank_failed"]``
    giving the reason. ``reranker`` substitutes any rag-optimize ``Reranker``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = "rerank-v3.5"
    top_n: int = 3
    cohere_api_key: str | None = None
    base_url: str | None = None
    timeout: float = 5.0
    max_retries: int = 2
    reranker: Any = None

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._reranker = self.reranker or CohereReranker(
            self.model,
            api_key=self.cohere_api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        items, failure = apply_reranker(self._reranker, query, _as_retrieved(documents), self.top_n)
        return _reranked(items, failure)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        items, failure = await aapply_reranker(
            self._reranker, query, _as_retrieved(documents), self.top_n
        )
        return _reranked(items, failure)
