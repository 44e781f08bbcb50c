"""Overhead of latency tracing, per event and per chain / query invocation.

Everything runs in one process, side by side, in alternating rounds (A, B, A, B, ...) and the
median round is reported, so machine noise hits both sides alike. Target: < 20 microseconds
per traced event.

Measured:
* core: one ``tracker.span(...)`` (enter + exit) and one ``tracker.record(...)``, against an
  empty ``with nullcontext()`` loop;
* LangChain: the handler's own cost per callback event (handler methods called directly), and
  a real chain (retriever | prompt | fake chat model | parser, no sleeps) invoked with no
  callbacks, with a do-nothing ``BaseCallbackHandler`` (LangChain's own callback machinery) and
  with ``LatencyCallbackHandler``; the handler's cost per event is (with handler - with
  do-nothing handler) / events per invocation;
* LlamaIndex: a real VectorStoreIndex query engine (MockEmbedding, MockLLM) queried without
  and with ``LatencyEventHandler`` instrumented; cost per event = difference / events per query.

Run: .venv/bin/python benchmarks/tracing_overhead.py
(writes benchmarks/results/tracing_overhead.json; --quick for a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "tracing_overhead.json"


def rounds(fns: dict[str, Callable[[], float]], n_rounds: int) -> dict[str, float]:
    """Run each timed function once per round, alternating; return the median per name."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n_rounds):
        for name, fn in fns.items():
            samples[name].append(fn())
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_core(n: int, n_rounds: int) -> dict[str, float]:
    from rag_optimize.tracing import EventTimeline, LatencyTracker

    tracker = LatencyTracker()
    run = tracker.start_run("bench")

    def empty() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with nullcontext():
                pass
        return (time.perf_counter() - t0) / n

    def span() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with tracker.span("embedding", run_id=run):
                pass
        return (time.perf_counter() - t0) / n

    def record() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            tracker.record("embedding", 0.001, run_id=run)
        return (time.perf_counter() - t0) / n

    timeline = EventTimeline(tracker)
    timeline.start("root", None)

    def child_pair() -> float:
        # a nested operation in an open run: start + end, as an adapter delivers them
        t0 = time.perf_counter()
        for i in range(n):
            timeline.start(i, "retrieval", "root")
            timeline.end(i)
        return (time.perf_counter() - t0) / n

    m = rounds({"empty": empty, "span": span, "record": record, "pair": child_pair}, n_rounds)
    return {
        "span_us": (m["span"] - m["empty"]) * 1e6,
        "record_us": m["record"] * 1e6,
        "timeline_start_end_pair_us": m["pair"] * 1e6,
    }


def bench_langchain(n_invokes: int, n_direct: int, n_rounds: int) -> dict[str, Any]:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda

    from langchain_rag_optimize import LatencyCallbackHandler
    from rag_optimize.tracing import LatencyTracker

    class Retriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content="context")]

    class Counting(BaseCallbackHandler):
        """Does nothing but count the events it receives."""

        def __init__(self) -> None:
            self.events = 0

        def _count(self, *args: Any, **kwargs: Any) -> None:
            self.events += 1

        on_chain_start = on_chain_end = on_retriever_start = on_retriever_end = _count
        on_chat_model_start = on_llm_end = on_llm_new_token = _count

    prompt = ChatPromptTemplate.from_messages([("system", "{context}"), ("human", "{question}")])
    retriever = Retriever()
    model = FakeListChatModel(responses=["answer"])
    # A straight sequence (no RunnableParallel): its thread pool adds noise larger than the
    # handler's cost.
    chain = (
        RunnableLambda(lambda x: x["question"])
        | retriever
        | RunnableLambda(lambda docs: {"context": docs[0].page_content, "question": "q"})
        | prompt
        | model
        | StrOutputParser()
    )
    counting = Counting()
    chain.invoke({"question": "q"}, config={"callbacks": [counting]})
    events_per_invoke = counting.events

    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)

    def invoke_with(callbacks: list[Any] | None) -> Callable[[], float]:
        def timed() -> float:
            config: dict[str, Any] = {} if callbacks is None else {"callbacks": callbacks}
            t0 = time.perf_counter()
            for _ in range(n_invokes):
                chain.invoke({"question": "q"}, config=config)  # type: ignore[arg-type]
            return (time.perf_counter() - t0) / n_invokes

        return timed

    def direct() -> float:
        # the handler alone: one root chain with a retriever and a chat model child
        t0 = time.perf_counter()
        for _ in range(n_direct):
            root, ret, llm = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            handler.on_chain_start({}, {}, run_id=root)
            handler.on_retriever_start({}, "q", run_id=ret, parent_run_id=root)
            handler.on_retriever_end([], run_id=ret)
            handler.on_chat_model_start({}, [[]], run_id=llm, parent_run_id=root)
            handler.on_llm_new_token("a", run_id=llm)
            handler.on_llm_end(None, run_id=llm)
            handler.on_chain_end({}, run_id=root)
        return (time.perf_counter() - t0) / (n_direct * 7)

    def uuids_only() -> float:
        t0 = time.perf_counter()
        for _ in range(n_direct):
            uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        return (time.perf_counter() - t0) / (n_direct * 7)

    m = rounds(
        {
            "none": invoke_with(None),
            "noop": invoke_with([Counting()]),
            "handler": invoke_with([handler]),
            "direct": direct,
            "uuids": uuids_only,
        },
        n_rounds,
    )
    return {
        "events_per_invoke": events_per_invoke,
        "invoke_no_callbacks_ms": m["none"] * 1e3,
        "invoke_noop_handler_ms": m["noop"] * 1e3,
        "invoke_latency_handler_ms": m["handler"] * 1e3,
        "handler_overhead_per_invoke_us": (m["handler"] - m["noop"]) * 1e6,
        "handler_overhead_per_event_us": (m["handler"] - m["noop"]) * 1e6 / events_per_invoke,
        "callbacks_total_overhead_per_invoke_us": (m["handler"] - m["none"]) * 1e6,
        "handler_direct_per_event_us": (m["direct"] - m["uuids"]) * 1e6,
    }


def bench_llama_index(n_queries: int, n_rounds: int) -> dict[str, Any]:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import MockLLM

    from llama_index_rag_optimize import LatencyEventHandler

    index = VectorStoreIndex.from_documents(
        [Document(text=f"document {i}") for i in range(20)], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(llm=MockLLM(max_tokens=4))
    handler = LatencyEventHandler()
    dispatcher = get_dispatcher()

    class Counter:
        events = 0

    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    class CountingEvents(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            Counter.events += 1

    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler, SimpleSpanHandler

    class NoopSpans(BaseSpanHandler[Any]):
        def span_enter(self, *args: Any, **kwargs: Any) -> None:
            pass

        def span_exit(self, *args: Any, **kwargs: Any) -> None:
            pass

        def new_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
            return None

    def queries_with(events: Any, spans: Any, n: int) -> float:
        """Mean seconds per query with these handlers on the root dispatcher."""
        added = [h for h in (events, spans) if h is not None]
        if events is not None:
            dispatcher.add_event_handler(events)
        if spans is not None:
            dispatcher.add_span_handler(spans)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                engine.query("q")
            return (time.perf_counter() - t0) / n
        finally:
            # identity, not ==: pydantic handlers with equal fields compare equal
            dispatcher.event_handlers = [
                h for h in dispatcher.event_handlers if all(h is not a for a in added)
            ]
            dispatcher.span_handlers = [
                h for h in dispatcher.span_handlers if all(h is not a for a in added)
            ]

    simple_spans = SimpleSpanHandler()
    queries_with(CountingEvents(), simple_spans, 1)
    events_per_query = Counter.events
    # every span reaches the span handler twice (enter, exit)
    callbacks_per_query = events_per_query + 2 * len(simple_spans.completed_spans)
    engine.query("q")
    noop_events, noop_spans = CountingEvents(), NoopSpans()

    def plain() -> float:
        return queries_with(None, None, n_queries)

    def noop() -> float:
        return queries_with(noop_events, noop_spans, n_queries)

    def traced() -> float:
        return queries_with(handler, handler.span_handler, n_queries)

    m = rounds({"plain": plain, "noop": noop, "traced": traced}, n_rounds)
    return {
        "events_per_query": events_per_query,
        "query_plain_ms": m["plain"] * 1e3,
        "query_traced_ms": m["traced"] * 1e3,
        "query_noop_handlers_ms": m["noop"] * 1e3,
        "overhead_per_query_us": (m["traced"] - m["plain"]) * 1e6,
        "handler_overhead_per_query_us": (m["traced"] - m["noop"]) * 1e6,
        "handler_overhead_per_callback_us": (m["traced"] - m["noop"]) * 1e6 / callbacks_per_query,
        "overhead_per_event_us": (m["traced"] - m["plain"]) * 1e6 / events_per_query,
        "callbacks_per_query": callbacks_per_query,
        "overhead_per_callback_us": (m["traced"] - m["plain"]) * 1e6 / callbacks_per_query,
        "queries_recorded": handler.tracker.report()["total"].count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    n_rounds = 5 if args.quick else 9
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, python {platform.python_version()}, "
        "shared 2-core machine",
        "rounds": n_rounds,
        "core": bench_core(int(200_000 * scale), n_rounds),
        "langchain": bench_langchain(int(500 * scale), int(20_000 * scale), n_rounds),
        "llama_index": bench_llama_index(int(200 * scale), n_rounds),
    }
    # other work on the shared machine slows every variant alike; the load says how much
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
