"""LlamaIndex node postprocessors: fail-open Cohere rerank and a context token budget.

* ``CohereRerank``: like ``llama_index.postprocessor.cohere_rerank.CohereRerank`` (``model``,
  ``top_n``; the node score becomes Cohere's relevance) through ``cohere.ClientV2.rerank``,
  but a Cohere error or timeout returns the nodes in their incoming order, cut to ``top_n``,
  with the reason in ``metadata["rag_optimize"]["rerank_failed"]``.
* ``ContextBudgetPostprocessor``: keeps nodes in order while they fit ``max_tokens`` and
  are not near-duplicates of kept ones (by embedding similarity), so the prompt is smaller.

All logic lives in :mod:`rag_optimize.retrieval`; this module only translates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from llama_index_rag_optimize.embedder import LlamaIndexEmbedder
from llama_index_rag_optimize.retrievers import METADATA_KEY, with_provenance
from rag_optimize.errors import InvalidInputError
from rag_optimize.retrieval import (
    CohereReranker,
    ContextBudget,
    Reranker,
    RetrievedDocument,
    aapply_reranker,
    apply_reranker,
)

__all__ = ["CohereRerank", "ContextBudgetPostprocessor"]

dispatcher = get_dispatcher(__name__)


def _as_retrieved(nodes: list[NodeWithScore]) -> list[RetrievedDocument]:
    return [
        RetrievedDocument(str(i), n.node.get_content(), n.score or 0.0, payload=n)
        for i, n in enumerate(nodes)
    ]


def _reranked(items: list[RetrievedDocument], failure: str | None) -> list[NodeWithScore]:
    out = []
    for item in items:
        original: NodeWithScore = item.payload
        info = {
            **original.node.metadata.get(METADATA_KEY, {}),
            "rerank_score": item.rerank_score,
            "rerank_failed": failure,
        }
        score = item.rerank_score if failure is None else original.score
        out.append(with_provenance(original.node, score or 0.0, info))
    return out


class CohereRerank(BaseNodePostprocessor):
    """Rerank nodes with Cohere (or any rag-optimize ``Reranker``); fail open."""

    model: str = Field(default="rerank-v3.5")
    top_n: int = Field(default=3)
    api_key: str | None = Field(default=None, exclude=True)
    base_url: str | None = None
    timeout: float = 5.0
    max_retries: int = 2
    reranker: Any = Field(default=None, exclude=True)

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._reranker = self.reranker or CohereReranker(
            self.model,
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @classmethod
    def class_name(cls) -> str:
        return "RagOptimizeCohereRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle)
        with self._rerank_events(query, nodes) as done:
            items, failure = apply_reranker(
                self._reranker, query.query_str, _as_retrieved(nodes), self.top_n
            )
            return done(_reranked(items, failure))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle)
        with self._rerank_events(query, nodes) as done:
            items, failure = await aapply_reranker(
                self._reranker, query.query_str, _as_retrieved(nodes), self.top_n
            )
            return done(_reranked(items, failure))

    @contextmanager
    def _rerank_events(
        self, query: QueryBundle, nodes: list[NodeWithScore]
    ) -> Iterator[Callable[[list[NodeWithScore]], list[NodeWithScore]]]:
        """The events LlamaIndex's own rerankers emit, once per call: ``ReRankStartEvent`` /
        ``ReRankEndEvent`` (instrumentation) around a ``CBEventType.RERANKING`` event (the
        legacy callback manager), both in the caller's span. ``done(nodes)`` ends them."""
        model_name = self._model_name()
        dispatcher.event(
            ReRankStartEvent(query=query, nodes=nodes, top_n=self.top_n, model_name=model_name)
        )
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query.query_str,
            EventPayload.TOP_K: self.top_n,
        }
        result: list[NodeWithScore] = []
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:

            def done(reranked: list[NodeWithScore]) -> list[NodeWithScore]:
                result.extend(reranked)
                event.on_end(payload={EventPayload.NODES: reranked})
                return reranked

            yield done
        dispatcher.event(ReRankEndEvent(nodes=result))

    def _model_name(self) -> str:
        return str(getattr(self._reranker, "model", None) or self.model)


def _require_query(query_bundle: QueryBundle | None) -> QueryBundle:
    if query_bundle is None:
        raise InvalidInputError("CohereRerank needs the query (query_bundle), got None")
    return query_bundle


class ContextBudgetPostprocessor(BaseNodePostprocessor):
    """Keep nodes, in order, within ``max_tokens``, dropping near-duplicates.

    ``embed_model`` embeds node texts for duplicate detection when nodes carry no
    ``embedding``; without either, only the token budget applies. ``token_counter``:
    ``"auto"``, ``"words"`` or a function ``str -> int`` (see ``rag_optimize.ContextBudget``).
    """

    max_tokens: int
    duplicate_threshold: float = 0.95
    embed_model: Any = Field(default=None, exclude=True)
    token_counter: Any = Field(default="auto", exclude=True)

    _budget: ContextBudget = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        embedder = None
        if isinstance(self.embed_model, BaseEmbedding):
            embedder = LlamaIndexEmbedder(self.embed_model)
        self._budget = ContextBudget(
            self.max_tokens,
            embedder=embedder,
            duplicate_threshold=self.duplicate_threshold,
            token_counter=self.token_counter,
        )

    @classmethod
    def class_name(cls) -> str:
        return "RagOptimizeContextBudget"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        have_vectors = bool(nodes) and all(n.node.embedding is not None for n in nodes)
        vectors = [list(n.node.embedding or []) for n in nodes] if have_vectors else None
        packed = self._budget.pack(nodes, text=lambda n: n.node.get_content(), vectors=vectors)
        return packed.items
