"""Our LlamaIndex components emit the events LlamaIndex's own components emit, exactly once.

Each test runs the same pipeline twice on a real ``VectorStoreIndex`` query engine: once with
LlamaIndex's own component, once with ours in its place, and compares what a counting
instrumentation handler and a counting legacy callback handler saw. Parentage is checked with
a span handler that records each span's parent: every event of a query must sit under that
query's span (a span-less event from a worker thread is what third-party tracers lose).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.llms import CompletionResponse, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.postprocessor import StructuredLLMRerank
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import TextNode
from pydantic import PrivateAttr

from llama_index_rag_optimize import (
    BatchingEmbedding,
    CachedQueryEngine,
    CohereRerank,
    LatencyEventHandler,
    LegacyLatencyHandler,
)
from rag_optimize import HashingEmbedder, LatencyTracker, SemanticCache
from tests.cohere_server import CohereRerankServer

DOCS = ["Refunds take 30 days.", "Shipping is free over 50 euros.", "Support answers in a day."]
QUESTIONS = ["how long do refunds take?", "how long do refunds take?", "is shipping free?"]


class EventCounter(BaseEventHandler):
    """Counts instrumentation events by class and remembers each event's span."""

    _counts: Counter[str] = PrivateAttr(default_factory=Counter)
    _spans: list[tuple[str, str | None]] = PrivateAttr(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventCounter"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self._counts[type(event).__name__] += 1
        self._spans.append((type(event).__name__, event.span_id))


class ParentRecorder(BaseSpanHandler[SimpleSpan]):
    """Span id -> parent span id, and which spans belong to query engines."""

    _parents: dict[str, str | None] = PrivateAttr(default_factory=dict)
    _queries: set[str] = PrivateAttr(default_factory=set)

    @classmethod
    def class_name(cls) -> str:
        return "ParentRecorder"

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        self._parents[id_] = parent_span_id
        if isinstance(instance, BaseQueryEngine) and parent_span_id is None:
            self._queries.add(id_)
        return SimpleSpan(id_=id_, parent_id=parent_span_id)

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
        return None

    def root_of(self, span_id: str | None) -> str | None:
        while span_id is not None and self._parents.get(span_id) is not None:
            span_id = self._parents[span_id]
        return span_id


class CallbackCounter(BaseCallbackHandler):
    """Counts legacy ``CBEventType`` start events."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.counts: Counter[str] = Counter()

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        self.counts[event_type.value] += 1
        return event_id

    def on_event_end(self, *args: Any, **kwargs: Any) -> None:
        return None

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        return None


class RankingLLM(MockLLM):
    """Answers LlamaIndex's structured rerank prompt: document 1 is the most relevant."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=RANKING)


RANKING = '{"documents": [{"document_number": 1, "relevance": 9}]}'


class Observed:
    """Everything one pipeline run emitted."""

    def __init__(self) -> None:
        self.events = EventCounter()
        self.spans = ParentRecorder()
        self.callbacks = CallbackCounter()
        self.latency = LatencyTracker()
        self.legacy = LegacyLatencyHandler(LatencyTracker())

    def orphans(self) -> list[str]:
        """Events of the queries whose span is not under a query engine's span."""
        return [
            name for name, span in self.events._spans
            if self.spans.root_of(span) not in self.spans._queries
        ]

    def stage_counts(self, tracker: LatencyTracker) -> dict[str, int]:
        return {name: summary.count for name, summary in tracker.report().stages.items()}


@pytest.fixture
def restore_settings() -> Iterator[None]:
    saved = Settings.callback_manager
    yield
    Settings.callback_manager = saved


def run_pipeline(
    *,
    embed_model: Any = None,
    postprocessor: BaseNodePostprocessor | None = None,
    cached: bool = False,
    asynchronous: bool = False,
) -> Observed:
    """Build an index, then ask QUESTIONS; only the queries are observed."""
    seen = Observed()
    manager = CallbackManager([seen.callbacks, seen.legacy])
    Settings.callback_manager = manager
    embed = embed_model if embed_model is not None else MockEmbedding(embed_dim=8)
    index = VectorStoreIndex([TextNode(text=t) for t in DOCS], embed_model=embed)
    engine: BaseQueryEngine = index.as_query_engine(
        llm=MockLLM(max_tokens=8),
        similarity_top_k=3,
        node_postprocessors=[postprocessor] if postprocessor is not None else [],
    )
    if cached:
        engine = CachedQueryEngine(engine, SemanticCache(HashingEmbedder(dim=64), 0.9))
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(seen.events)
    dispatcher.add_span_handler(seen.spans)
    handler = LatencyEventHandler(seen.latency).instrument()
    seen.callbacks.counts.clear()
    try:
        for question in QUESTIONS:
            if asynchronous:
                asyncio.run(engine.aquery(question))
            else:
                engine.query(question)
    finally:
        handler.uninstrument()
        dispatcher.event_handlers.remove(seen.events)
        dispatcher.span_handlers.remove(seen.spans)
        close = getattr(embed, "close", None)
        if close is not None:
            close()
    return seen


@pytest.mark.parametrize("asynchronous", [False, True])
def test_batching_embedding_reports_each_embedding_once_under_the_query(
    restore_settings: None, asynchronous: bool
) -> None:
    plain = run_pipeline(asynchronous=asynchronous)
    ours = run_pipeline(
        embed_model=BatchingEmbedding(MockEmbedding(embed_dim=8), max_wait_ms=1),
        asynchronous=asynchronous,
    )
    assert ours.events._counts == plain.events._counts
    assert ours.callbacks.counts == plain.callbacks.counts
    assert ours.events._counts["EmbeddingStartEvent"] == len(QUESTIONS)
    assert ours.orphans() == [] and plain.orphans() == []
    assert ours.stage_counts(ours.latency) == plain.stage_counts(plain.latency)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_generation_is_counted_once_per_query(restore_settings: None, asynchronous: bool) -> None:
    # MockLLM.acomplete calls complete: LlamaIndex emits two nested LLM event pairs per
    # async query; one generation happened, and both handlers count one.
    seen = run_pipeline(asynchronous=asynchronous)
    assert seen.stage_counts(seen.latency)["generation"] == len(QUESTIONS)
    assert seen.stage_counts(seen.legacy.tracker)["generation"] == len(QUESTIONS)
    assert seen.stage_counts(seen.latency)["total"] == len(QUESTIONS)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_cached_engine_miss_emits_what_the_engine_alone_emits_and_a_hit_is_a_query(
    restore_settings: None, asynchronous: bool
) -> None:
    plain = run_pipeline(asynchronous=asynchronous)
    cached = run_pipeline(cached=True, asynchronous=asynchronous)
    # one query event per question, hit or miss, for both kinds of tracer
    for name in ("QueryStartEvent", "QueryEndEvent"):
        assert cached.events._counts[name] == plain.events._counts[name] == len(QUESTIONS)
    assert cached.callbacks.counts["query"] == plain.callbacks.counts["query"] == len(QUESTIONS)
    # the second question is a hit: one retrieval and one generation fewer, nothing doubled
    for name in ("RetrievalStartEvent", "SynthesizeStartEvent", "LLMPredictStartEvent"):
        assert cached.events._counts[name] == plain.events._counts[name] - 1
    assert cached.callbacks.counts["retrieve"] == plain.callbacks.counts["retrieve"] - 1
    assert cached.orphans() == []
    assert cached.stage_counts(cached.legacy.tracker)["total"] == len(QUESTIONS)
    assert cached.stage_counts(cached.latency)["total"] == len(QUESTIONS)


@pytest.fixture
def cohere_server() -> Iterator[CohereRerankServer]:
    with CohereRerankServer() as server:
        yield server


@pytest.mark.parametrize("asynchronous", [False, True])
def test_cohere_rerank_emits_llamaindex_rerank_events_once_under_the_query(
    restore_settings: None, cohere_server: CohereRerankServer, asynchronous: bool
) -> None:
    own = run_pipeline(
        postprocessor=StructuredLLMRerank(llm=RankingLLM(), top_n=1),
        asynchronous=asynchronous,
    )
    ours = run_pipeline(
        postprocessor=CohereRerank(
            model="rerank-test", top_n=1, api_key="k", base_url=cohere_server.url
        ),
        asynchronous=asynchronous,
    )
    for name in ("ReRankStartEvent", "ReRankEndEvent"):
        assert ours.events._counts[name] == own.events._counts[name] == len(QUESTIONS)
    assert ours.callbacks.counts["reranking"] == own.callbacks.counts["reranking"]
    assert ours.callbacks.counts["reranking"] == len(QUESTIONS)
    assert len(cohere_server.requests) == len(QUESTIONS)  # the real SDK did the reranking
    assert ours.orphans() == []
    assert ours.stage_counts(ours.latency)["rerank"] == len(QUESTIONS)
    assert ours.stage_counts(ours.legacy.tracker)["rerank"] == len(QUESTIONS)
