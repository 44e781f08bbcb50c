"""OpenTelemetry GenAI spans and metrics, read back from the SDK's in-memory exporter and reader.

A real HybridRetriever, a real LangChain chain with the latency callback handler and a real
SemanticCache report into a tracker; the exporter turns that into nested spans and histograms,
under the conventions chosen by ``OTEL_SEMCONV_STABILITY_OPT_IN``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rag_optimize import HashingEmbedder, SemanticCache
from rag_optimize.errors import ConfigurationError
from rag_optimize.retrieval import HybridRetriever
from rag_optimize.tracing import LatencyTracker, stages
from rag_optimize.tracing.exporters.otel import (
    DURATION_BUCKETS,
    LATEST,
    LEGACY,
    TTFC_BUCKETS,
    OpenTelemetryExporter,
    semconv_from_env,
)

TEXTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The Seine flows through Paris.",
    "Rome is the capital of Italy.",
]


class Otel:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def histograms(self) -> dict[str, Any]:
        """metric name -> (metric, data points) from one collection."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = (metric, list(metric.data.data_points))
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    bundle = Otel()
    yield bundle
    bundle.tracer_provider.shutdown()
    bundle.meter_provider.shutdown()


def exporter(tracker: LatencyTracker, otel: Otel, semconv: str | None) -> OpenTelemetryExporter:
    return OpenTelemetryExporter(
        tracker,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        semconv=semconv,
    )


def children_of(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def one(spans: list[ReadableSpan], stage: str) -> ReadableSpan:
    (found,) = [s for s in spans if (s.attributes or {}).get("rag_optimize.stage") == stage]
    return found


def test_opt_in_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert semconv_from_env({}) is LEGACY
    assert semconv_from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}) is LEGACY
    opt_in = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http, GEN_AI_LATEST_EXPERIMENTAL"}
    assert semconv_from_env(opt_in) is LATEST
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database,gen_ai_latest_experimental")
    assert OpenTelemetryExporter(spans=False, metrics=False).semconv is LATEST
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
    assert OpenTelemetryExporter(spans=False, metrics=False).semconv is LEGACY
    with pytest.raises(ConfigurationError, match="semconv"):
        OpenTelemetryExporter(semconv="newest")


def test_hybrid_retrieval_is_one_nested_retrieval_span_latest(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    tracker = LatencyTracker()
    exporter(tracker, otel, None)
    retriever = HybridRetriever.from_texts(TEXTS, HashingEmbedder(dim=64), k=2, tracker=tracker)
    with tracker.run("r1"):
        result = retriever.retrieve("capital of France")
    assert len(result.documents) == 2
    spans = otel.finished()
    (root,) = [s for s in spans if s.name == "rag.run"]
    retrieval = one(spans, stages.RETRIEVAL)
    assert retrieval.name == "retrieval" and retrieval.kind == SpanKind.INTERNAL
    assert retrieval.parent is not None and retrieval.parent.span_id == root.context.span_id
    assert retrieval.attributes is not None
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 2
    assert "gen_ai.request.top_k" not in retrieval.attributes
    under = {s.attributes["rag_optimize.stage"] for s in children_of(spans, retrieval)}  # type: ignore[index]
    assert under == {stages.SPARSE, stages.DENSE, stages.FUSION}
    dense = one(spans, stages.DENSE)
    embedding = one(spans, stages.EMBEDDING)
    assert embedding.parent is not None and embedding.parent.span_id == dense.context.span_id
    assert embedding.name == "embeddings" and embedding.kind == SpanKind.CLIENT
    for child in children_of(spans, retrieval):
        assert child.kind == SpanKind.INTERNAL
        assert "gen_ai.operation.name" not in (child.attributes or {})
        assert retrieval.start_time <= child.start_time <= child.end_time <= retrieval.end_time
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}

    metrics = otel.histograms()
    assert "gen_ai.client.operation.duration" not in metrics  # the old name is not emitted
    metric, points = metrics["gen_ai.retrieval.duration"]
    assert metric.unit == "s"
    (point,) = points
    assert point.count == 1 and dict(point.attributes) == {"gen_ai.operation.name": "retrieval"}
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert point.sum == pytest.approx(result.timings["total"], rel=0.05, abs=1e-4)
    (embed_point,) = metrics["gen_ai.client.embeddings.duration"][1]
    assert embed_point.count == 1
    assert dict(embed_point.attributes) == {"gen_ai.operation.name": "embeddings"}


def test_legacy_default_keeps_the_old_names(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    tracker = LatencyTracker()
    exporter(tracker, otel, None)
    with tracker.run("r"):
        tracker.record(stages.RETRIEVAL, 0.02, attributes={"top_k": 4, "data_source": "kb"})
        tracker.record(stages.EMBEDDING, 0.01, attributes={"model": "minilm"})
    spans = otel.finished()
    retrieval = one(spans, stages.RETRIEVAL)
    assert retrieval.name == "retrieval kb" and retrieval.kind == SpanKind.CLIENT
    assert retrieval.attributes is not None
    assert retrieval.attributes["gen_ai.request.top_k"] == 4
    assert retrieval.attributes["gen_ai.data_source.id"] == "kb"
    assert one(spans, stages.EMBEDDING).name == "embeddings minilm"
    metrics = otel.histograms()
    assert set(metrics) == {"gen_ai.client.operation.duration"}
    points = metrics["gen_ai.client.operation.duration"][1]
    by_op = {p.attributes["gen_ai.operation.name"]: p for p in points}
    assert set(by_op) == {"retrieval", "embeddings"}
    assert dict(by_op["embeddings"].attributes)["gen_ai.request.model"] == "minilm"


def test_langchain_chain_chat_span_time_to_first_chunk_and_cache(otel: Otel) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    from langchain_rag_optimize import LatencyCallbackHandler

    tracker = LatencyTracker()
    exporter(tracker, otel, "latest")
    cache = SemanticCache(HashingEmbedder(dim=64), tracker=tracker)
    handler = LatencyCallbackHandler(tracker)

    def lookup(inputs: dict[str, str]) -> dict[str, str]:
        cache.get(inputs["question"])  # our component inside the chain: a cache miss
        return {"question": inputs["question"]}

    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage(content="Paris is it.")]))
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = RunnableLambda(lookup) | prompt | model | StrOutputParser()
    chunks = list(chain.stream({"question": "capital?"}, config={"callbacks": [handler]}))
    assert "".join(chunks) == "Paris is it."

    spans = otel.finished()
    (root,) = [s for s in spans if s.name == "rag.run"]
    chat = one(spans, stages.GENERATION)
    assert chat.kind == SpanKind.CLIENT and chat.name.startswith("chat")
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.stream"] is True
    ttfc = chat.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 <= ttfc <= (chat.end_time - chat.start_time) / 1e9  # type: ignore[operator]
    cache_span = one(spans, stages.CACHE)
    assert cache_span.attributes is not None
    assert cache_span.attributes["rag_optimize.cache.hit"] is False
    assert cache_span.kind == SpanKind.INTERNAL
    assert "gen_ai.operation.name" not in cache_span.attributes
    for span in (chat, cache_span):  # nested in the run's trace, not flat standalone spans
        assert span.context.trace_id == root.context.trace_id and span.parent is not None
    metrics = otel.histograms()
    (duration,) = metrics["gen_ai.client.inference.duration"][1]
    assert duration.count == 1
    metric, (first_chunk,) = metrics["gen_ai.client.inference.time_to_first_chunk"]
    assert metric.unit == "s" and first_chunk.count == 1
    assert tuple(first_chunk.explicit_bounds) == TTFC_BUCKETS
    assert first_chunk.sum == pytest.approx(ttfc)


def test_errors_and_spans_outside_runs(otel: Otel, clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    exporter(tracker, otel, "latest")
    with pytest.raises(TimeoutError), tracker.span(stages.GENERATION, attributes={"model": "m"}):
        with tracker.span(stages.CACHE, attributes={"hit": True, "status": "HIT"}):
            clock.advance(0.01)
        clock.advance(0.05)
        raise TimeoutError
    spans = otel.finished()
    chat = one(spans, stages.GENERATION)
    cache_span = one(spans, stages.CACHE)
    assert chat.parent is None and chat.name == "chat m"
    assert cache_span.parent is not None and cache_span.parent.span_id == chat.context.span_id
    assert cache_span.attributes is not None
    assert cache_span.attributes["rag_optimize.cache.status"] == "HIT"
    assert chat.attributes is not None and chat.attributes["error.type"] == "TimeoutError"
    assert chat.status.status_code == StatusCode.ERROR
    (point,) = otel.histograms()["gen_ai.client.inference.duration"][1]
    assert dict(point.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "error.type": "TimeoutError",
    }
    assert point.sum == pytest.approx(0.06)


def test_signals_can_be_turned_off(otel: Otel) -> None:
    tracker = LatencyTracker()
    OpenTelemetryExporter(
        tracker,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        semconv="latest",
        metrics=False,
    )
    tracker.record(stages.RETRIEVAL, 0.01)
    assert len(otel.finished()) == 1 and otel.histograms() == {}


# -- one retrieval is one span and one sample, however it is traced --------------------------

# The boundaries the conventions write out (client-inference.md, client-embeddings.md,
# gen-ai-metrics.md v1.41): written here literally so a wrong constant cannot pass.
CONVENTION_BOUNDARIES = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip


def test_bucket_boundaries_are_the_conventions() -> None:
    assert DURATION_BUCKETS == CONVENTION_BOUNDARIES
    assert TTFC_BUCKETS == CONVENTION_BOUNDARIES


def _provider_model(provider: str) -> Any:
    """A real LangChain chat model (GenericFakeChatModel) that reports ``ls_provider``."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class ProviderChatModel(GenericFakeChatModel):
        def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
            params = super()._get_ls_params(stop=stop, **kwargs)
            params["ls_provider"] = provider
            params["ls_model_name"] = "gpt-4o-mini"
            return params

    return ProviderChatModel(messages=itertools.cycle([AIMessage(content="Paris.")]))


def _rag_chain(retriever: Any, model: Any) -> Any:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\n{question}")])

    def join(docs: list[Any]) -> str:
        return "\n".join(d.page_content for d in docs)

    return (
        {"context": retriever | join, "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )


def _assert_one_retrieval(otel: Otel, tracker: LatencyTracker, parts: set[str]) -> None:
    spans = otel.finished()
    retrievals = [s for s in spans if (s.attributes or {}).get("rag_optimize.stage") == "retrieval"]
    assert len(retrievals) == 1, [s.name for s in spans]
    (retrieval,) = retrievals
    assert retrieval.attributes is not None
    under = {s.attributes["rag_optimize.stage"] for s in children_of(spans, retrieval)}  # type: ignore[index]
    assert under == parts
    for child in children_of(spans, retrieval):
        assert "gen_ai.operation.name" not in (child.attributes or {})
    assert len(tracker.samples(stages.RETRIEVAL)) == 1
    (point,) = otel.histograms()["gen_ai.retrieval.duration"][1]
    assert point.count == 1


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_langchain_chain_with_a_tracked_hybrid_retriever_counts_one_retrieval(
    otel: Otel, mode: str
) -> None:
    import asyncio

    from langchain_rag_optimize import AsyncHybridRetriever, LatencyCallbackHandler

    tracker = LatencyTracker()
    exporter(tracker, otel, "latest")
    engine = HybridRetriever.from_texts(TEXTS, HashingEmbedder(dim=64), k=2, tracker=tracker)
    chain = _rag_chain(AsyncHybridRetriever(engine=engine), _provider_model("azure"))
    config: Any = {"callbacks": [LatencyCallbackHandler(tracker)]}
    if mode == "invoke":
        answer = chain.invoke("capital of France", config=config)
    else:
        answer = asyncio.run(chain.ainvoke("capital of France", config=config))
    assert answer == "Paris."

    _assert_one_retrieval(otel, tracker, {stages.SPARSE, stages.DENSE, stages.FUSION})
    retrieval = one(otel.finished(), stages.RETRIEVAL)
    assert retrieval.attributes is not None
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 2  # the engine's, on the one span
    # The provider LangChain reports ("azure") is spelled as the conventions want it.
    chat = one(otel.finished(), stages.GENERATION)
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    (point,) = otel.histograms()["gen_ai.client.inference.duration"][1]
    assert dict(point.attributes)["gen_ai.provider.name"] == "azure.ai.openai"


def test_langchain_wrapped_retrievers_are_parts_of_one_retrieval(otel: Otel) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_rag_optimize import AsyncHybridRetriever, LatencyCallbackHandler

    tracker = LatencyTracker()
    exporter(tracker, otel, "latest")
    stores = []
    for size in (16, 32):
        store = InMemoryVectorStore(DeterministicFakeEmbedding(size=size))
        store.add_texts(TEXTS)
        stores.append(store.as_retriever(search_kwargs={"k": 2}))
    hybrid = AsyncHybridRetriever(retrievers=stores, k=2)
    chain = _rag_chain(hybrid, _provider_model("openai"))
    chain.invoke("capital of France", config={"callbacks": [LatencyCallbackHandler(tracker)]})
    # The two wrapped retrievers are timed as parts of the hybrid's retrieval, not as two
    # more retrievals of their own.
    _assert_one_retrieval(otel, tracker, {"retrieval.VectorStoreRetriever"})
    parts = [
        s
        for s in otel.finished()
        if (s.attributes or {}).get("rag_optimize.stage") == "retrieval.VectorStoreRetriever"
    ]
    assert len(parts) == 2


def test_a_retrieval_span_around_a_tracked_retriever_is_the_one_retrieval(otel: Otel) -> None:
    tracker = LatencyTracker()
    exporter(tracker, otel, "latest")
    engine = HybridRetriever.from_texts(TEXTS, HashingEmbedder(dim=64), k=3, tracker=tracker)
    with tracker.run("r"), tracker.span(stages.RETRIEVAL, attributes={"data_source": "kb"}):
        engine.retrieve("capital of France")
    _assert_one_retrieval(otel, tracker, {stages.SPARSE, stages.DENSE, stages.FUSION})
    retrieval = one(otel.finished(), stages.RETRIEVAL)
    assert retrieval.attributes is not None
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 3
    assert retrieval.attributes["gen_ai.data_source.id"] == "kb"
    # Another tracker's retrieval span around it is not this tracker's retrieval.
    other = LatencyTracker()
    with other.span(stages.RETRIEVAL):
        engine.retrieve("capital of France")
    assert len(tracker.samples(stages.RETRIEVAL)) == 2


class _OwnRetriever:
    """A user's LlamaIndex retriever that wraps a tracked HybridRetriever itself."""

    @staticmethod
    def make(engine: HybridRetriever) -> Any:
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        class OwnRetriever(BaseRetriever):
            def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                result = engine.retrieve(query_bundle.query_str)
                return [NodeWithScore(node=TextNode(text=d.text), score=d.score) for d in result]

            async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                result = await engine.aretrieve(query_bundle.query_str)
                return [NodeWithScore(node=TextNode(text=d.text), score=d.score) for d in result]

        return OwnRetriever()


@pytest.mark.parametrize("wrapper", ["ours", "own"])
@pytest.mark.parametrize("mode", ["query", "aquery"])
def test_llamaindex_query_engine_with_a_tracked_hybrid_retriever_counts_one_retrieval(
    otel: Otel, mode: str, wrapper: str
) -> None:
    """LlamaIndex's instrumentation times the retriever (RetrievalStart/End events); the
    tracked engine inside it nests its branches under that span instead of recording a
    second retrieval."""
    import asyncio

    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    from llama_index_rag_optimize import AsyncHybridRetriever, LatencyEventHandler

    tracker = LatencyTracker()
    exporter(tracker, otel, "latest")
    engine = HybridRetriever.from_texts(TEXTS, HashingEmbedder(dim=64), k=2, tracker=tracker)
    retriever = (
        AsyncHybridRetriever(engine=engine) if wrapper == "ours" else _OwnRetriever.make(engine)
    )
    query_engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=4))
    handler = LatencyEventHandler(tracker).instrument()
    try:
        if mode == "query":
            query_engine.query("capital of France")
        else:
            asyncio.run(query_engine.aquery("capital of France"))
    finally:
        handler.uninstrument()
    _assert_one_retrieval(otel, tracker, {stages.SPARSE, stages.DENSE, stages.FUSION})
    retrieval = one(otel.finished(), stages.RETRIEVAL)
    assert retrieval.attributes is not None
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 2  # the engine's, on the one span
    chat = one(otel.finished(), stages.GENERATION)  # the query's one run: one trace
    assert chat.context.trace_id == retrieval.context.trace_id
