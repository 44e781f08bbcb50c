"""LatencyEventHandler / LegacyLatencyHandler on real LlamaIndex query engines.

VectorStoreIndex + MockEmbedding / MockLLM subclasses that sleep known amounts; assertions are
about attribution (stage, run, count) and ordering, with only lower bounds on time (a sleep of
d seconds takes at least d); overlap is proved by a rendezvous, not a duration.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex, get_response_synthesizer
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_rag_optimize import LatencyEventHandler, LegacyLatencyHandler
from rag_optimize.tracing import LatencyTracker, SpanRecord

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from rendezvous import ameeting  # noqa: E402

EMBED_S = 0.01
TOKEN_S = 0.005
TOKENS = 4
RERANK_S = 0.005
dispatcher = get_dispatcher(__name__)


class SleepyEmbedding(MockEmbedding):
    """MockEmbedding whose query embedding takes EMBED_S and notes the current run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(embed_dim=8, **kwargs)
        self._seen: dict[str, str | None] = {}
        self._meet: Callable[[], Awaitable[object]] | None = None  # async: wait for the others

    def _get_query_embedding(self, query: str) -> list[float]:
        self._seen[query] = LatencyTracker.current_run()
        time.sleep(EMBED_S)
        return super()._get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        self._seen[query] = LatencyTracker.current_run()
        if self._meet is not None:
            await self._meet()
        await asyncio.sleep(EMBED_S)
        return super()._get_query_embedding(query)


class SleepyLLM(MockLLM):
    """MockLLM that takes TOKEN_S per token, sync, async and streamed."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        time.sleep(TOKEN_S * TOKENS)
        return CompletionResponse(text="text " * TOKENS)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        await asyncio.sleep(TOKEN_S * TOKENS)
        return CompletionResponse(text="text " * TOKENS)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            text = ""
            for _ in range(TOKENS):
                time.sleep(TOKEN_S)
                text += "text "
                yield CompletionResponse(text=text, delta="text ")

        return gen()


class SleepyRerank(BaseNodePostprocessor):
    """A reranker that reports like LlamaIndex's own: instrumentation and legacy events."""

    @classmethod
    def class_name(cls) -> str:
        return "SleepyRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=1, model_name="sleepy")
        )
        with self.callback_manager.event(
            CBEventType.RERANKING, payload={EventPayload.NODES: nodes}
        ):
            time.sleep(RERANK_S)
            out = nodes[:1]
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out


def build_index(callback_manager: CallbackManager | None = None) -> VectorStoreIndex:
    docs = [Document(text=f"document number {i}") for i in range(6)]
    kwargs: dict[str, Any] = {}
    if callback_manager is not None:
        kwargs["callback_manager"] = callback_manager
    return VectorStoreIndex.from_documents(docs, embed_model=SleepyEmbedding(**kwargs), **kwargs)


@pytest.fixture
def handler() -> Iterator[LatencyEventHandler]:
    h = LatencyEventHandler(LatencyTracker()).instrument()
    yield h
    h.uninstrument()


def _totals(tracker: LatencyTracker) -> list[SpanRecord]:
    seen: list[SpanRecord] = []
    tracker.add_listener(lambda s: seen.append(s) if s.stage == "total" else None)
    return seen


def test_query_engine_stages_attributed_to_the_query_run(handler: LatencyEventHandler) -> None:
    tracker = handler.tracker
    index = build_index()
    build_report = tracker.report()
    assert "total" not in build_report  # index building opens no run
    totals = _totals(tracker)
    engine = index.as_query_engine(llm=SleepyLLM(), node_postprocessors=[SleepyRerank()])
    response = engine.query("what is document 3?")
    assert "text" in str(response)
    (total,) = totals
    record = tracker.run_report(str(total.run_id))
    assert record is not None and record.total is not None
    assert record.counts == {"embedding": 1, "retrieval": 1, "rerank": 1, "generation": 1}
    assert record.stages["embedding"] >= EMBED_S
    assert record.stages["retrieval"] >= record.stages["embedding"]  # embedding is inside it
    assert record.stages["rerank"] >= RERANK_S
    assert record.stages["generation"] >= TOKEN_S * TOKENS
    assert record.stages["retrieval"] + record.stages["generation"] <= record.total
    assert handler.timeline.open_nodes() == 0
    assert LatencyTracker.current_run() is None


def test_query_inside_an_outer_run_joins_it(handler: LatencyEventHandler) -> None:
    tracker = handler.tracker
    engine = build_index().as_query_engine(llm=SleepyLLM())
    with tracker.run("request-1"):
        engine.query("a")
        engine.query("b")
    record = tracker.run_report("request-1")
    assert record is not None
    assert record.counts == {"embedding": 2, "retrieval": 2, "generation": 2}


def test_streaming_ttft_before_total(handler: LatencyEventHandler) -> None:
    tracker = handler.tracker
    totals = _totals(tracker)
    engine = build_index().as_query_engine(llm=SleepyLLM(), streaming=True)
    response = engine.query("stream please")
    assert totals == []  # the answer is not consumed yet: the run is still open
    text = "".join(response.response_gen)
    assert text.count("text") == TOKENS
    (total,) = totals
    record = tracker.run_report(str(total.run_id))
    assert record is not None and record.total is not None
    assert record.counts["ttft"] == 1 and record.counts["generation"] == 1
    assert record.stages["ttft"] >= EMBED_S + TOKEN_S
    assert record.stages["ttft"] < record.total
    assert record.stages["generation"] >= TOKENS * TOKEN_S
    assert LatencyTracker.current_run() is None


def test_unconsumed_stream_does_not_capture_the_next_query(
    handler: LatencyEventHandler,
) -> None:
    tracker = handler.tracker
    totals = _totals(tracker)
    index = build_index()
    index.as_query_engine(llm=SleepyLLM(), streaming=True).query("abandoned")
    index.as_query_engine(llm=SleepyLLM()).query("next")
    assert len(totals) == 2
    assert len({t.run_id for t in totals}) == 2
    first, second = (tracker.run_report(str(t.run_id)) for t in totals)
    assert first is not None and second is not None
    assert first.counts == {"embedding": 1, "retrieval": 1}  # no generation: never consumed
    assert second.counts == {"embedding": 1, "retrieval": 1, "generation": 1}
    assert first.ended is not None and first.ended <= second.started


async def test_100_concurrent_async_queries(handler: LatencyEventHandler) -> None:
    tracker = handler.tracker
    totals = _totals(tracker)
    index = build_index()
    embed: SleepyEmbedding = index._embed_model  # type: ignore[assignment]
    # every query's embedding waits inside until all 100 are inside theirs: the queries really
    # overlap (run one after another, they never meet and the test fails)
    embed._meet = ameeting(100)
    engine = index.as_query_engine(llm=SleepyLLM())
    await asyncio.gather(*(engine.aquery(f"question {i}") for i in range(100)))
    assert len(totals) == 100
    run_ids = {t.run_id for t in totals}
    assert len(run_ids) == 100
    # the embedder saw each query inside that query's own run
    assert {embed._seen[f"question {i}"] for i in range(100)} == run_ids
    for total in totals:
        record = tracker.run_report(str(total.run_id))
        assert record is not None
        assert record.counts == {"embedding": 1, "retrieval": 1, "generation": 1}
        assert record.stages["embedding"] >= EMBED_S
        assert record.stages["generation"] >= TOKEN_S * TOKENS
    assert handler.timeline.open_nodes() == 0


def test_legacy_callback_manager_handler() -> None:
    tracker = LatencyTracker()
    legacy = LegacyLatencyHandler(tracker)
    cm = CallbackManager([legacy])
    index = build_index(cm)
    assert "total" not in tracker.report() and tracker.report()["embedding"].count >= 1
    totals = _totals(tracker)
    llm = SleepyLLM(callback_manager=cm)
    engine = RetrieverQueryEngine(
        retriever=index.as_retriever(),
        response_synthesizer=get_response_synthesizer(llm=llm, callback_manager=cm),
        node_postprocessors=[SleepyRerank(callback_manager=cm)],
        callback_manager=cm,
    )
    engine.query("legacy question")
    (total,) = totals
    record = tracker.run_report(str(total.run_id))
    assert record is not None and record.total is not None
    assert record.counts == {"embedding": 1, "retrieval": 1, "rerank": 1, "generation": 1}
    assert record.stages["generation"] >= TOKEN_S * TOKENS
    assert record.stages["rerank"] >= RERANK_S
    assert legacy.timeline.open_nodes() == 0


def test_event_handler_alone_works_for_sequential_queries() -> None:
    """Only ``get_dispatcher().add_event_handler(handler)``, no span handler."""
    handler = LatencyEventHandler(LatencyTracker())
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        tracker = handler.tracker
        totals = _totals(tracker)
        engine = build_index().as_query_engine(llm=SleepyLLM())
        engine.query("one")
        engine.query("two")
    finally:
        root.event_handlers = [h for h in root.event_handlers if h is not handler]
    assert len(totals) == 2
    for total in totals:
        record = tracker.run_report(str(total.run_id))
        assert record is not None
        assert record.counts == {"embedding": 1, "retrieval": 1, "generation": 1}
    assert LatencyTracker.current_run() is None


def test_cached_streaming_engine_closes_the_run_with_total(
    handler: LatencyEventHandler, hashing_embedder: Any
) -> None:
    # A wrapper engine ends two queries (its own and the wrapped one) with the same stream,
    # whose single LLM call must still close the run (it used to stay open, no ``total``).
    from llama_index_rag_optimize import CachedQueryEngine

    tracker = handler.tracker
    totals = _totals(tracker)
    inner = build_index().as_query_engine(llm=SleepyLLM(), streaming=True)
    engine = CachedQueryEngine(inner, hashing_embedder)
    response = engine.query("stream through the cache")
    assert totals == []  # not consumed yet
    text = "".join(response.response_gen)
    assert text.count("text") == TOKENS
    (total,) = totals
    record = tracker.run_report(str(total.run_id))
    assert record is not None and record.total is not None and record.ended is not None
    assert record.counts["generation"] == 1 and record.counts["ttft"] == 1
    assert record.stages["generation"] >= TOKENS * TOKEN_S
    assert tracker.open_runs() == []
    assert handler.timeline.open_nodes() == 0
    assert LatencyTracker.current_run() is None


def test_model_and_provider_of_llm_and_embedding_events(handler: LatencyEventHandler) -> None:
    """The model's class names the provider (``gen_ai.provider.name``) on both stages."""
    tracker = handler.tracker
    seen: list[SpanRecord] = []
    tracker.add_listener(seen.append)
    engine = build_index().as_query_engine(llm=SleepyLLM())
    engine.query("what is document 3?")
    by_stage = {s.stage: s.attributes for s in seen if s.run_id is not None}
    # SleepyEmbedding / SleepyLLM report MockEmbedding's and MockLLM's class names.
    assert by_stage["embedding"]["provider"] == "mock"
    assert by_stage["generation"]["provider"] == "mock"
