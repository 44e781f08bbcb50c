"""LlamaIndex latency tracing: an instrumentation handler and a legacy callback handler.

Both translate LlamaIndex events into stages of a :class:`rag_optimize.tracing.LatencyTracker`;
the pairing of start and end events and the grouping into runs is done by
:class:`rag_optimize.tracing.EventTimeline`.

Instrumentation (llama-index-core >= 0.10.20, what LlamaIndex itself emits today)::

    handler = LatencyEventHandler(tracker).instrument()   # root dispatcher
    index.as_query_engine().query("...")
    handler.tracker.print_report()
    handler.uninstrument()

``instrument()`` registers the event handler *and* its span handler
(``dispatcher.add_event_handler`` / ``add_span_handler``): events carry the id of the span they
were emitted in, and the span handler knows each span's parent, which is how an embedding or
LLM event deep inside a query is attributed to that query even with many queries in flight.
Adding only the event handler (``get_dispatcher().add_event_handler(handler)``) also works for
sequential code, where the current-run context variable links the events of one query.

* ``EmbeddingStart/EndEvent``            -> ``embedding`` (a query's or, outside a query,
  an index build's: those count in the report but open no run); model and provider (from the
  model's class: ``OpenAIEmbedding`` -> ``openai``) as attributes, as for LLM events
* ``RetrievalStart/EndEvent``            -> ``retrieval``
* ``ReRankStart/EndEvent``               -> ``rerank``
* ``LLMChat/LLMCompletion Start/End``    -> ``generation``; the first ``...InProgressEvent``
  of a streamed answer -> ``ttft`` of the run
* ``QueryStartEvent``                    -> opens a run (id: the query's span id); the run's
  ``total`` lasts until the query returned *and* its streamed answer, if any, was consumed.

Legacy callback manager (``CallbackManager([LegacyLatencyHandler(tracker)])``), for code and
components that only emit ``CBEventType`` events: ``QUERY`` opens a run, ``EMBEDDING``,
``RETRIEVE``, ``RERANKING`` and ``LLM`` are stages. The legacy events have no token event, so
``ttft`` comes only from the instrumentation handler. Use one of the two handlers, not both
on the same tracker, or each stage is counted twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import Dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
    SparseEmbeddingEndEvent,
)
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryEndEvent, QueryStartEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.events.retrieval import (
    RetrievalEndEvent,
    RetrievalStartEvent,
)
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from pydantic import PrivateAttr

from rag_optimize.tracing import (
    EventTimeline,
    LatencyReport,
    LatencyTracker,
    provider_from_class_name,
    stages,
)

# start event -> (kind, stage, opens a run when outside any run)
_STARTS: tuple[tuple[type[BaseEvent], str, str, bool], ...] = (
    (EmbeddingStartEvent, "embedding", stages.EMBEDDING, False),
    (RetrievalStartEvent, "retrieval", stages.RETRIEVAL, True),
    (ReRankStartEvent, "rerank", stages.RERANK, True),
    (LLMChatStartEvent, "llm", stages.GENERATION, True),
    (LLMCompletionStartEvent, "llm", stages.GENERATION, True),
)
_ENDS: tuple[tuple[type[BaseEvent], str], ...] = (
    (EmbeddingEndEvent, "embedding"),
    (SparseEmbeddingEndEvent, "embedding"),
    (RetrievalEndEvent, "retrieval"),
    (ReRankEndEvent, "rerank"),
    (LLMChatEndEvent, "llm"),
    (LLMCompletionEndEvent, "llm"),
)

__all__ = ["LatencyEventHandler", "LatencySpanHandler", "LegacyLatencyHandler"]

_MAX_OPEN_SPANS = 100_000
_TOKENS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_STREAMS = frozenset({"StreamingResponse", "AsyncStreamingResponse"})


def _model_name(event: BaseEvent) -> dict[str, str] | None:
    """The model and provider of an LLM or embedding event (``model_dict`` is the model's
    ``to_dict()``: its ``class_name``, ``OpenAI`` or ``BedrockEmbedding``, names the
    provider, spelled as ``gen_ai.provider.name`` wants it)."""
    model_dict = getattr(event, "model_dict", None) or {}
    name = (
        model_dict.get("model")
        or model_dict.get("model_name")
        or getattr(event, "model_name", None)
    )
    attributes = {"model": str(name)} if name else {}
    provider = provider_from_class_name(model_dict.get("class_name"))
    if provider:
        attributes["provider"] = provider
    return attributes or None


def _release_abandoned_stream(timeline: EventTimeline) -> None:
    """A new top-level query while the current run waits for its stream: end that run."""
    stale = LatencyTracker.current_run()
    if stale is not None and timeline.held(stale):
        timeline.release(stale, extend=False)


class LatencySpanHandler(BaseSpanHandler[BaseSpan]):
    """Feeds the span tree (span id -> parent span id) into the timeline; keeps no spans.

    It also remembers the parent of each open span, so the event handler can tell an LLM
    call nested in another LLM call (``CustomLLM.acomplete`` calling ``complete``: LlamaIndex
    emits a start/end pair for each) from a second call, and count the generation once.
    """

    _timeline: EventTimeline = PrivateAttr()
    _parents: dict[str, str | None] = PrivateAttr(default_factory=dict)

    def __init__(self, timeline: EventTimeline) -> None:
        super().__init__()
        self._timeline = timeline

    def ancestors(self, span_id: str | None) -> Iterator[str]:
        """``span_id`` and its open ancestors, innermost first."""
        seen = 0
        while span_id is not None and seen < 256:
            yield span_id
            span_id = self._parents.get(span_id)
            seen += 1

    @classmethod
    def class_name(cls) -> str:
        return "RagOptimizeLatencySpanHandler"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_id is None and isinstance(instance, BaseQueryEngine):
            _release_abandoned_stream(self._timeline)
        self._parents[id_] = parent_id
        if len(self._parents) > _MAX_OPEN_SPANS:  # spans whose exit never came
            self._parents.pop(next(iter(self._parents)))
        self._timeline.start(id_, None, parent_id, opens_run=False)

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        self._parents.pop(id_, None)
        self._timeline.end(id_)

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        self._parents.pop(id_, None)
        self._timeline.end(id_, error=err)

    def new_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None  # spans are not kept: the timeline holds what is needed

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None


class LatencyEventHandler(BaseEventHandler):
    """Records per-stage latency of LlamaIndex queries from instrumentation events."""

    _tracker: LatencyTracker = PrivateAttr()
    _timeline: EventTimeline = PrivateAttr()
    _span_handler: LatencySpanHandler = PrivateAttr()
    _dispatcher: Dispatcher | None = PrivateAttr(default=None)
    _open_llm: dict[str, int] = PrivateAttr(default_factory=dict)  # span -> open LLM stages
    _nested_llm: dict[str, int] = PrivateAttr(default_factory=dict)  # span -> nested starts

    def __init__(self, tracker: LatencyTracker | None = None) -> None:
        super().__init__()
        self._tracker = tracker if tracker is not None else LatencyTracker()
        self._timeline = EventTimeline(self._tracker, track_current=True)
        self._span_handler = LatencySpanHandler(self._timeline)

    @classmethod
    def class_name(cls) -> str:
        return "RagOptimizeLatencyEventHandler"

    @property
    def tracker(self) -> LatencyTracker:
        return self._tracker

    @property
    def timeline(self) -> EventTimeline:
        return self._timeline

    @property
    def span_handler(self) -> LatencySpanHandler:
        return self._span_handler

    def report(self) -> LatencyReport:
        return self._tracker.report()

    def instrument(self, dispatcher: Dispatcher | None = None) -> LatencyEventHandler:
        """Add this handler and its span handler to ``dispatcher`` (default: the root one)."""
        dispatcher = dispatcher if dispatcher is not None else get_dispatcher()
        dispatcher.add_span_handler(self._span_handler)
        dispatcher.add_event_handler(self)
        self._dispatcher = dispatcher
        return self

    def uninstrument(self) -> None:
        """Remove both handlers from the dispatcher :meth:`instrument` added them to."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not self]
        dispatcher.span_handlers = [
            h for h in dispatcher.span_handlers if h is not self._span_handler
        ]
        self._dispatcher = None

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        action = _action_for(type(event))
        if action is None:
            return
        what, kind, stage, opens_run = action
        span_id = event.span_id
        if what == "token":
            self._timeline.token((kind, span_id))
        elif what == "start":
            if kind == "llm" and not self._llm_started(span_id):
                return  # an LLM call inside an LLM call: one generation, counted once
            self._timeline.start(
                (kind, span_id), stage, span_id, _model_name(event), opens_run, span_id
            )
        elif what == "end":
            if kind == "llm" and not self._llm_ended(span_id):
                return
            run_id = self._timeline.run_of((kind, span_id))
            self._timeline.end((kind, span_id))
            if kind == "llm" and run_id is not None and self._timeline.held(run_id):
                self._timeline.release(run_id)
        elif what == "query_start" and span_id is not None:
            _release_abandoned_stream(self._timeline)  # when used without the span handler
            if self._timeline.claim(span_id, run_id=span_id) is None:  # no span handler
                self._timeline.start(("query", span_id), None, None, run_id=span_id)
        elif what == "query_end":
            run_id = self._timeline.run_of(span_id) or self._timeline.run_of(("query", span_id))
            response = getattr(event, "response", None)
            if (
                run_id is not None
                and type(response).__name__ in _STREAMS
                and not self._timeline.held(run_id)
            ):
                # LlamaIndex calls the LLM only when the caller iterates the stream, outside
                # the query's span: keep the run open (and current) until that LLM call ends.
                # One hold per run: an engine wrapping another (CachedQueryEngine, routers)
                # ends two queries with the same stream, whose one LLM call releases once.
                self._timeline.hold(run_id)
            self._timeline.end(("query", span_id))


    def _llm_started(self, span_id: str | None) -> bool:
        """Note an LLM start event; False when it is nested in an open LLM call."""
        if span_id is None:
            return True
        if any(self._open_llm.get(s) for s in self._span_handler.ancestors(span_id)):
            self._nested_llm[span_id] = self._nested_llm.get(span_id, 0) + 1
            return False
        self._open_llm[span_id] = self._open_llm.get(span_id, 0) + 1
        return True

    def _llm_ended(self, span_id: str | None) -> bool:
        """Note an LLM end event; False when it ends a nested call (not a stage)."""
        if span_id is None:
            return True
        for table in (self._nested_llm, self._open_llm):
            count = table.get(span_id, 0)
            if count:
                if count == 1:
                    del table[span_id]
                else:
                    table[span_id] = count - 1
                return table is self._open_llm
        return True


@functools.lru_cache(maxsize=512)
def _action_for(event_type: type[BaseEvent]) -> tuple[str, str, str | None, bool] | None:
    """What an event class means for the timeline: (what, kind, stage, opens_run) or None.

    Cached per class, so a handled event costs one dict lookup instead of isinstance chains.
    """
    if issubclass(event_type, _TOKENS):
        return ("token", "llm", None, False)
    for start_type, kind, stage, opens_run in _STARTS:
        if issubclass(event_type, start_type):
            return ("start", kind, stage, opens_run)
    for end_type, kind in _ENDS:
        if issubclass(event_type, end_type):
            return ("end", kind, None, False)
    if issubclass(event_type, QueryStartEvent):
        return ("query_start", "query", None, True)
    if issubclass(event_type, QueryEndEvent):
        return ("query_end", "query", None, False)
    return None


_LEGACY_STAGES: dict[CBEventType, tuple[str | None, bool]] = {
    CBEventType.QUERY: (None, True),
    CBEventType.EMBEDDING: (stages.EMBEDDING, False),
    CBEventType.RETRIEVE: (stages.RETRIEVAL, True),
    CBEventType.RERANKING: (stages.RERANK, True),
    CBEventType.LLM: (stages.GENERATION, True),
}


_LEGACY_OPEN_LLM: ContextVar[str | None] = ContextVar("rag_optimize_open_llm", default=None)


class LegacyLatencyHandler(BaseCallbackHandler):
    """Records per-stage latency from LlamaIndex's legacy ``CallbackManager`` events."""

    def __init__(self, tracker: LatencyTracker | None = None) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.tracker = tracker if tracker is not None else LatencyTracker()
        self.timeline = EventTimeline(self.tracker)
        self._open_llm: set[str] = set()  # LLM events that are a generation stage

    def report(self) -> LatencyReport:
        return self.tracker.report()

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        stage, opens_run = _LEGACY_STAGES.get(event_type, (None, False))
        if event_type == CBEventType.LLM:
            # LlamaIndex starts LLM events without a parent ("root"); an LLM call made inside
            # another (CustomLLM.acomplete -> complete) is one generation, counted once.
            outer = _LEGACY_OPEN_LLM.get()
            if outer is not None and outer in self._open_llm:
                stage = None
            else:
                self._open_llm.add(event_id)
                _LEGACY_OPEN_LLM.set(event_id)
        self.timeline.start(event_id, stage, parent_id or None, opens_run=opens_run)
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        self._open_llm.discard(event_id)
        self.timeline.end(event_id)

    def start_trace(self, trace_id: str | None = None) -> None:
        """Traces need no bookkeeping: runs come from QUERY (or top-level stage) events."""

    def end_trace(
        self,
        trace_id: str | None = None,
        trace_map: dict[str, list[str]] | None = None,
    ) -> None:
        """See :meth:`start_trace`."""
