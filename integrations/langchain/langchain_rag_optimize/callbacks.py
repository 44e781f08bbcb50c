"""LangChain latency tracing: a callback handler and an embeddings wrapper.

``LatencyCallbackHandler`` translates LangChain callback events into stages of a
:class:`rag_optimize.tracing.LatencyTracker`; the pairing of start and end events by
``run_id`` / ``parent_run_id`` is done by :class:`rag_optimize.tracing.EventTimeline`.

* retriever start/end          -> ``retrieval``; a retriever run inside another retriever run
  (the retrievers an ``AsyncHybridRetriever``, ``EnsembleRetriever`` or
  ``MultiQueryRetriever`` calls) is a part of that one retrieval, timed as
  ``retrieval.<its run name>``, so one retrieval is one ``retrieval`` sample. A rag-optimize
  ``HybridRetriever`` with the same tracker nests its sparse/dense/fusion parts under it too.
* chat model / LLM start/end   -> ``generation`` (model name from ``ls_model_name``, provider
  from ``ls_provider`` spelled as ``gen_ai.provider.name`` wants it: ``openai``,
  ``azure.ai.openai``, ``aws.bedrock``, ...)
* first ``on_llm_new_token``   -> ``ttft`` of the run (streaming only)
* tool start/end               -> ``tool``
* ``with_semantic_cache`` lookup -> ``cache``, with ``hit`` True/False in its attributes
  (a run whose metadata has ``rag_optimize_stage: "cache"``)
* a chain or runnable          -> no stage, unless its run name is in ``stage_names``
  (``{"rerank": "rerank"}`` times a ``RunnableLambda(..., name="rerank")`` as ``rerank``)
* the outermost run            -> ``total``; its LangChain run id is the tracker's run id

Use it per call (``chain.invoke(x, config={"callbacks": [handler]})``), or for every LangChain
call in a block without touching the calls: ``with latency_tracing(tracker) as handler:``
(a LangChain configure hook, the mechanism behind ``tracing_v2_enabled``). One handler serves
sync, async, streaming and concurrent calls; pass ``config={"run_id": uuid}`` to know the run
id to look up in ``handler.tracker.run_report(str(uuid))``.

LangChain has no embedding callback, so embedding time is not visible to a callback handler.
Wrap the embeddings used by your vector store in :class:`TimedEmbeddings` (or use
rag-optimize's batching embedder with the same tracker): it records ``embedding`` into the run
that is current when it is called, which the handler sets while a chain runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.embeddings import Embeddings
from langchain_core.tracers.context import register_configure_hook

from rag_optimize.tracing import (
    EventTimeline,
    LatencyReport,
    LatencyTracker,
    provider_name,
    stages,
)

__all__ = ["STAGE_METADATA_KEY", "LatencyCallbackHandler", "TimedEmbeddings", "latency_tracing"]

STAGE_METADATA_KEY = "rag_optimize_stage"
"""Run metadata naming the stage a run is timed as; ``with_semantic_cache`` marks its lookup
run ``"cache"`` (its output ``{"hit": bool}`` becomes the sample's ``hit`` attribute)."""


class LatencyCallbackHandler(BaseCallbackHandler):
    """Records per-stage latency of LangChain runs into a :class:`LatencyTracker`."""

    # Called in the caller's task/thread even from async chains: the handler only does
    # in-memory bookkeeping, and running inline keeps the current-run context in the chain.
    run_inline = True

    def __init__(
        self,
        tracker: LatencyTracker | None = None,
        stage_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.tracker = tracker if tracker is not None else LatencyTracker()
        # LangChain links nested runs by parent id, so a parentless run is a new root (a
        # sibling in chain.batch), and every event marks its run current in the context the
        # step runs in (batch steps run in worker threads with copied contexts).
        self.timeline = EventTimeline(self.tracker, join_own_runs=False, track_current=True)
        self.stage_names = dict(stage_names or {})
        self._cache_runs: set[UUID] = set()  # open runs timed as the cache stage
        for stage in self.stage_names.values():
            stages.check_stage(stage)

    def report(self) -> LatencyReport:
        """Per-stage summary of everything recorded so far."""
        return self.tracker.report()

    # -------------------------------------------------------------- chains
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        stage = (metadata or {}).get(STAGE_METADATA_KEY)
        if stage == stages.CACHE:
            self._cache_runs.add(run_id)
        else:
            stage = self.stage_names.get(kwargs.get("name") or "")
        self.timeline.start(run_id, stage, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes = None
        if run_id in self._cache_runs:
            self._cache_runs.discard(run_id)
            if isinstance(outputs, dict) and isinstance(outputs.get("hit"), bool):
                attributes = {"hit": outputs["hit"]}
                if isinstance(outputs.get("matched_query"), str):
                    attributes["matched_query"] = outputs["matched_query"]
        self.timeline.end(run_id, attributes=attributes)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._cache_runs.discard(run_id)
        self.timeline.end(run_id, error=error)

    # -------------------------------------------------------------- retrievers
    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or ""
        stage = self.stage_names.get(name)
        if stage is None:
            outer = self.timeline.stage_of(parent_run_id)
            inside_retrieval = outer is not None and (
                outer == stages.RETRIEVAL or outer.startswith(stages.RETRIEVAL + ".")
            )
            # A retriever called by a retriever is a part of the caller's retrieval.
            stage = f"{stages.RETRIEVAL}.{name or 'part'}" if inside_retrieval else stages.RETRIEVAL
        self.timeline.start(run_id, stage, parent_run_id)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id, error=error)

    # -------------------------------------------------------------- models
    def _start_model(
        self, run_id: UUID, parent_run_id: UUID | None, metadata: Mapping[str, Any] | None
    ) -> None:
        model = (metadata or {}).get("ls_model_name")
        provider = provider_name((metadata or {}).get("ls_provider"))
        attributes: dict[str, str] = {}
        if model:
            attributes["model"] = str(model)
        if provider:
            attributes["provider"] = provider
        self.timeline.start(run_id, stages.GENERATION, parent_run_id, attributes or None)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_model(run_id, parent_run_id, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_model(run_id, parent_run_id, metadata)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.token(run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id, error=error)

    # -------------------------------------------------------------- tools
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        stage = self.stage_names.get(kwargs.get("name") or "", stages.TOOL)
        self.timeline.start(run_id, stage, parent_run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.timeline.end(run_id, error=error)


class TimedEmbeddings(Embeddings):
    """LangChain ``Embeddings`` wrapper that records ``embedding`` time into a tracker.

    ``TimedEmbeddings(OpenAIEmbeddings(), handler.tracker)`` in place of the embeddings given
    to a vector store: each call is a span of the run current in the calling context (the run
    the :class:`LatencyCallbackHandler` opened for the chain), or of no run outside a chain.
    """

    def __init__(self, embeddings: Embeddings, tracker: LatencyTracker) -> None:
        self.embeddings = embeddings
        self.tracker = tracker

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self.tracker.span(stages.EMBEDDING):
            return self.embeddings.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        with self.tracker.span(stages.EMBEDDING):
            return self.embeddings.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        with self.tracker.span(stages.EMBEDDING):
            return await self.embeddings.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        with self.tracker.span(stages.EMBEDDING):
            return await self.embeddings.aembed_query(text)


_ACTIVE_HANDLER: ContextVar[LatencyCallbackHandler | None] = ContextVar(
    "rag_optimize_latency_callback_handler", default=None
)
register_configure_hook(_ACTIVE_HANDLER, inheritable=True)


@contextmanager
def latency_tracing(
    tracker: LatencyTracker | None = None, stage_names: Mapping[str, str] | None = None
) -> Iterator[LatencyCallbackHandler]:
    """Trace every LangChain run started inside the ``with`` block (this context only).

    ``with latency_tracing(tracker) as handler: chain.invoke(x)`` behaves as if
    ``config={"callbacks": [handler]}`` had been passed to each call, including calls made
    deep inside library code that does not forward ``config``.
    """
    handler = LatencyCallbackHandler(tracker, stage_names)
    token = _ACTIVE_HANDLER.set(handler)
    try:
        yield handler
    finally:
        _ACTIVE_HANDLER.reset(token)
