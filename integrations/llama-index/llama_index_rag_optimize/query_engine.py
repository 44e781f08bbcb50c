"""``CachedQueryEngine``: a LlamaIndex query engine answered from a semantic cache.

``CachedQueryEngine(index.as_query_engine(), cache)`` is itself a ``BaseQueryEngine``: use
it wherever the wrapped engine was used (``query``, ``aquery``, tools, routers).

- A hit returns the stored answer without retrieval or LLM call. The response carries the
  stored source nodes (text, ids, score, metadata) and ``metadata["rag_optimize_cache"]``
  (similarity, matched query, age, decision) for logging, and the ``CacheHit`` itself under
  ``"hit"`` for ``cache.feedback(hit, correct)``.
- A miss delegates and stores the response text with the source nodes; the entry metadata
  ``source_ids`` lists each source node's ``ref_doc_id`` and ``node_id``, so
  ``cache.invalidate(source_ids=[doc_id])`` drops every answer built on that document.
- Streaming engines: a hit is replayed as a ``StreamingResponse`` (``aquery``:
  ``AsyncStreamingResponse``) in word-sized chunks; a miss streams through and is stored
  only once the caller consumed the whole stream without error.
- ``PydanticResponse`` (structured output) is passed through uncached.
- Retrieval evidence (opt in with ``confirm_with=retriever``, e.g. ``index.as_retriever()``):
  a semantic hit is served only when the retriever, run for the new question, returns the
  cached answer's sources (at least ``min_overlap`` of the retrieved nodes are among the
  entry's ``source_ids``; see :mod:`rag_optimize.cache.decision.evidence`). The vote is in
  the decision (``metadata["rag_optimize_cache"]["decision"]["evidence"]``); a veto, or a
  retriever that raises, runs the wrapped engine as a miss (counted in
  ``evidence_rejections``). Exact repeats are not confirmed. Costs one retrieval per
  semantic hit.

Keys: the query string is compared by meaning; the exact part is ``namespace`` (default:
the engine's class and prompt templates: give engines over different indexes sharing one
cache their own namespace) and ``index_version``, given to the core as ``exact=`` beside the
scope (so ``SemanticCache.invalidate(scope)`` drops every engine's entries of a scope). Scope:
``scope=``, else the active
``cache_scope(...)`` block; with ``SemanticCache(..., require_scope=True)`` a query without
either bypasses the cache.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from typing_extensions import Unpack

from llama_index_rag_optimize.embedder import as_embedder
from rag_optimize import CacheHit, SemanticCache
from rag_optimize.cache import (
    DEFAULT_MIN_OVERLAP,
    SemanticCacheOptions,
    check_min_overlap,
    current_scope,
    sources_agree,
)
from rag_optimize.errors import InvalidTypeError, UnknownOptionError
from rag_optimize.plans import Call, Plan, arun, run
from rag_optimize.validation import check_options

__all__ = ["CachedQueryEngine"]

logger = logging.getLogger("rag_optimize.llama_index")

_WORD_CHUNK = re.compile(r"\s*\S+\s*|\s+")
_HIT_KEY = "rag_optimize_cache"


@dataclass(frozen=True)
class _Key:
    """A query's cache key as the core takes it: question, user scope and exact part."""

    question: str
    scope: str
    exact: dict[str, str | None]


class CachedQueryEngine(BaseQueryEngine):
    """Answer from ``cache`` before asking ``query_engine`` (see the module docs).

    Args:
        query_engine: the engine to wrap.
        cache: a :class:`~rag_optimize.SemanticCache`, or an embedding model (a LlamaIndex
            ``BaseEmbedding`` or a rag_optimize embedder) to build one from
            ``cache_options``.
        scope: fixed scope (tenant); ``None`` uses the active ``cache_scope`` block.
        namespace: exact-match identity of the engine (see the module docs).
        index_version: version of the index behind the engine; exact part of the key and
            stored as entry metadata ``index_version``.
        streaming: replay hits as streams; ``None`` asks the wrapped engine's synthesizer.
        store_source_nodes: keep source node text and metadata with the answer so hits
            return them (ids are always kept).
        ttl_seconds: lifetime of the entries written here (default: the cache's).
        confirm_with: a LlamaIndex retriever: a semantic hit is served only when its
            retrieval for the new question returns the cached answer's sources (at least
            ``min_overlap`` of the retrieved nodes, default 0.5; see the module docs).
        callback_manager: LlamaIndex callbacks (default: the wrapped engine's).
        cache_options: :class:`~rag_optimize.SemanticCache`'s keyword options, typed as
            :class:`rag_optimize.cache.SemanticCacheOptions` (``threshold``, ``max_entries``,
            ``store``, ``verifier`` ...), used only when ``cache`` is an embedding model
            (``ttl_seconds`` here is the entries' lifetime, so the cache's default lifetime
            is not among them). Any other keyword raises
            :class:`~rag_optimize.errors.UnknownOptionError` naming it.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        cache: Any,
        *,
        scope: str | None = None,
        namespace: str | None = None,
        index_version: str | None = None,
        streaming: bool | None = None,
        store_source_nodes: bool = True,
        ttl_seconds: float | None = None,
        callback_manager: CallbackManager | None = None,
        confirm_with: BaseRetriever | None = None,
        min_overlap: float = DEFAULT_MIN_OVERLAP,
        **cache_options: Unpack[SemanticCacheOptions],
    ) -> None:
        if confirm_with is not None and not isinstance(confirm_with, BaseRetriever):
            raise InvalidTypeError(
                "confirm_with must be a llama_index BaseRetriever (e.g. index.as_retriever()), "
                f"got {type(confirm_with).__name__}"
            )
        self.confirm_with = confirm_with
        self.min_overlap = check_min_overlap(min_overlap)
        self.evidence_rejections = 0
        if not isinstance(query_engine, BaseQueryEngine):
            raise InvalidTypeError(
                f"query_engine must be a llama_index BaseQueryEngine, "
                f"got {type(query_engine).__name__}"
            )
        check_options(cache_options, SemanticCacheOptions, "CachedQueryEngine")
        if isinstance(cache, SemanticCache):
            if cache_options:
                raise UnknownOptionError(
                    f"cache options {sorted(cache_options)} apply only when building a cache "
                    "from an embedding model"
                )
            self.cache = cache
        else:
            self.cache = SemanticCache(as_embedder(cache), **cache_options)
        self.query_engine = query_engine
        self.scope = scope
        self.namespace = namespace if namespace is not None else _default_namespace(query_engine)
        self.index_version = index_version
        self.streaming = _is_streaming(query_engine) if streaming is None else streaming
        self.store_source_nodes = store_source_nodes
        self.ttl_seconds = ttl_seconds
        super().__init__(callback_manager or query_engine.callback_manager)

    # ------------------------------------------------------------ PromptMixin
    def _get_prompts(self) -> PromptDictType:
        return {}

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self.query_engine}

    def _update_prompts(self, prompts_dict: PromptDictType) -> None:
        """Prompts are updated in the wrapped engine (through the prompt modules)."""

    # ---------------------------------------------------------------- query
    # A miss runs the wrapped engine's own ``_query``: this engine's ``query`` already opened
    # the span and emitted ``QueryStartEvent``, so the pipeline's events appear once, exactly
    # as for the wrapped engine alone. A hit emits the ``CBEventType.QUERY`` event the wrapped
    # engine would have, so callback-based tracers count fast answers too.
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        return run(self._answer(query_bundle, asynchronous=False))

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        return await arun(self._answer(query_bundle, asynchronous=True))

    def _answer(self, query_bundle: QueryBundle, *, asynchronous: bool) -> Plan[RESPONSE_TYPE]:
        """One query, written once for both drivers: look up, confirm a semantic hit with
        ``confirm_with`` (a retriever that raises vetoes it), replay a hit or run the wrapped
        engine and store its answer. ``asynchronous`` picks the streaming response type."""
        key = self._key(query_bundle)
        hit: CacheHit | None = None
        if key is not None:
            hit = yield Call(
                self.cache.get, self.cache.aget, key.question, key.scope, exact=key.exact
            )
        if hit is not None and self.confirm_with is not None and not hit.exact:
            retriever = self.confirm_with
            try:
                nodes = yield Call(retriever.retrieve, retriever.aretrieve, query_bundle)
            except Exception as exc:  # noqa: BLE001 - evidence that cannot be had vetoes
                hit = None
                self._unconfirmed(exc)
            else:
                hit = self._confirmed(hit, nodes)
        if hit is not None and key is not None:
            return self._hit_event(query_bundle, self._replay(hit, asynchronous=asynchronous))
        engine = self.query_engine
        response = yield Call(engine._query, engine._aquery, query_bundle)
        return self._after_miss(key, response)

    def _hit_event(self, query_bundle: QueryBundle, response: RESPONSE_TYPE) -> RESPONSE_TYPE:
        payload: dict[str, Any] = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as event:
            event.on_end(payload={EventPayload.RESPONSE: response})
        return response

    # ---------------------------------------------------------------- extras
    def invalidate(self, scope: str | None = None) -> int:
        """Drop every entry written under ``scope`` (``None``: the active ``cache_scope`` or
        the default scope), whatever the namespace; returns how many
        (``SemanticCache.invalidate(scope)``: a scope holds all its exact parts)."""
        return self.cache.invalidate(scope)

    async def ainvalidate(self, scope: str | None = None) -> int:
        """Async :meth:`invalidate`."""
        return await self.cache.ainvalidate(scope)

    # ------------------------------------------------------------- internals
    def _confirmed(self, hit: CacheHit, nodes: list[NodeWithScore]) -> CacheHit | None:
        """``hit`` if the new question's retrieval agrees with its sources (the vote is
        recorded in the hit's decision), else None: the wrapped engine answers."""
        retrieved = [n.node.node_id for n in nodes if n.node.node_id]
        vote = sources_agree(hit.metadata.get("source_ids"), retrieved, self.min_overlap)
        decision = hit.metadata.get("cache_decision")
        if isinstance(decision, dict):
            decision["evidence"] = vote.as_dict()
        if vote.agree:
            return hit
        self.evidence_rejections += 1
        logger.debug("cached query engine: retrieval does not confirm the hit: %s", vote.reason)
        return None

    def _unconfirmed(self, exc: Exception) -> None:
        self.evidence_rejections += 1
        logger.warning("cached query engine: confirming retriever failed, not served: %s", exc)

    def _key(self, query_bundle: QueryBundle) -> _Key | None:
        question = query_bundle.query_str
        if not isinstance(question, str) or not question.strip():
            return None
        user_scope = self.scope if self.scope is not None else current_scope()
        if user_scope is None and getattr(self.cache, "require_scope", False):
            return None  # fail closed: no lookup, no write without a tenant
        exact = {"llama-index": self.namespace, "index_version": self.index_version}
        return _Key(question, user_scope or "", exact)

    def _after_miss(self, key: _Key | None, response: Any) -> Any:
        if key is None:
            return response
        if isinstance(response, Response):
            if response.response is not None:
                self._write(key, response.response, response.source_nodes).call()
            return response
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = self._stored_stream(key, response.response_gen, response)
            return response
        if isinstance(response, AsyncStreamingResponse):
            response.response_gen = self._astored_stream(key, response.response_gen, response)
            return response
        return response

    def _stored_stream(
        self, key: _Key, tokens: Iterator[str], response: StreamingResponse
    ) -> Generator[str, None, None]:
        parts: list[str] = []
        for token in tokens:
            parts.append(token)
            yield token
        self._write(key, "".join(parts), response.source_nodes).call()

    async def _astored_stream(
        self,
        key: _Key,
        tokens: AsyncIterator[str],
        response: AsyncStreamingResponse,
    ) -> AsyncGenerator[str, None]:
        parts: list[str] = []
        async for token in tokens:
            parts.append(token)
            yield token
        await self._write(key, "".join(parts), response.source_nodes).acall()

    def _write(self, key: _Key, text: str, nodes: list[NodeWithScore]) -> Call:
        """The cache write of an answer (``set`` blocking, ``aset`` awaited)."""
        response, metadata = self._entry(text, nodes)
        return Call(
            self.cache.set,
            self.cache.aset,
            key.question,
            response,
            key.scope,
            exact=key.exact,
            metadata=metadata,
            ttl_seconds=self.ttl_seconds,
        )

    def _entry(
        self, text: str, nodes: list[NodeWithScore]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        source_ids: list[str] = []
        for node in nodes:
            for found in (node.node.ref_doc_id, node.node.node_id):
                if found and found not in source_ids:
                    source_ids.append(found)
        stored_nodes = [_encode_node(n, self.store_source_nodes) for n in nodes]
        metadata: dict[str, Any] = {"source_ids": source_ids}
        if self.index_version is not None:
            metadata["index_version"] = self.index_version
        return {"text": text, "source_nodes": stored_nodes}, metadata

    def _replay(self, hit: CacheHit, *, asynchronous: bool) -> RESPONSE_TYPE:
        stored = hit.response if isinstance(hit.response, dict) else {}
        text = str(stored.get("text", ""))
        nodes = [_decode_node(n) for n in stored.get("source_nodes", []) if isinstance(n, dict)]
        info = {
            _HIT_KEY: {
                "similarity": hit.similarity,
                "matched_query": hit.matched_query,
                "age_seconds": hit.age_seconds,
                "exact": hit.exact,
                "decision": hit.metadata.get("cache_decision"),
                "hit": hit,  # for cache.feedback(hit, correct)
            }
        }
        if not self.streaming:
            return Response(text, nodes, info)
        chunks = _WORD_CHUNK.findall(text) or [text]
        if asynchronous:
            return AsyncStreamingResponse(_agen(chunks), nodes, info)
        return StreamingResponse(_gen(chunks), nodes, info)


def _gen(chunks: list[str]) -> Generator[str, None, None]:
    yield from chunks


async def _agen(chunks: list[str]) -> AsyncGenerator[str, None]:
    for chunk in chunks:
        yield chunk


def _encode_node(node: NodeWithScore, with_content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.node.node_id,
        "ref_doc_id": node.node.ref_doc_id,
        "score": node.score,
    }
    if with_content:
        out["text"] = node.node.get_content()
        metadata = dict(node.node.metadata)
        try:
            json.dumps(metadata)
        except (TypeError, ValueError):
            metadata = {}
        out["metadata"] = metadata
    return out


def _decode_node(data: dict[str, Any]) -> NodeWithScore:
    relationships = {}
    if data.get("ref_doc_id"):
        relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(data["ref_doc_id"]))
    node = TextNode(
        id_=str(data.get("id") or ""),
        text=str(data.get("text", "")),
        metadata=dict(data.get("metadata") or {}),
        relationships=relationships,
    )
    score = data.get("score")
    return NodeWithScore(node=node, score=float(score) if score is not None else None)


def _is_streaming(query_engine: BaseQueryEngine) -> bool:
    synthesizer = getattr(query_engine, "_response_synthesizer", None)
    return bool(getattr(synthesizer, "_streaming", False))


def _default_namespace(query_engine: BaseQueryEngine) -> str:
    """The engine's class and prompt templates: what LlamaIndex exposes about its answers."""
    try:
        prompts = {name: p.get_template() for name, p in query_engine.get_prompts().items()}
    except Exception:  # noqa: BLE001 - an engine without readable prompts keeps its class name
        prompts = {}
    return json.dumps([type(query_engine).__qualname__, prompts], sort_keys=True, default=str)
