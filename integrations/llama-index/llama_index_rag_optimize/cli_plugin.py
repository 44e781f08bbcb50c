"""The LlamaIndex bench target of the ``rag-optimize`` CLI (group ``rag_optimize.bench_targets``).

``bench_target``: for a LlamaIndex query engine, instruments the root dispatcher with a
:class:`~llama_index_rag_optimize.tracing.LatencyEventHandler` on the bench's tracker
(embedding, retrieval, rerank, generation, ttft per question) and streams each answer when
the engine streams; the handler is removed when the bench ends.
"""

from __future__ import annotations

from typing import Any

from rag_optimize.cli import BenchTarget, make_input
from rag_optimize.streaming import stream_text
from rag_optimize.tracing import LatencyTracker

__all__ = ["bench_target", "engine_target"]


def engine_target(engine: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget:
    """Query ``engine`` once per question with the latency handler instrumented."""
    from llama_index_rag_optimize.query_engine import CachedQueryEngine
    from llama_index_rag_optimize.tracing import LatencyEventHandler

    handler = LatencyEventHandler(tracker).instrument()
    # A CachedQueryEngine's lookups (the cache stage, hits) go to the bench's tracker.
    cache = engine.cache if isinstance(engine, CachedQueryEngine) else None
    borrowed = cache if cache is not None and cache.tracker is None else None
    if borrowed is not None:
        borrowed.tracker = tracker

    async def call(question: str) -> None:
        async for _ in stream_text(engine, make_input(question, input_key)):
            tracker.first_token()

    def close() -> None:
        handler.uninstrument()
        if borrowed is not None:
            borrowed.tracker = None

    return BenchTarget(call, "LlamaIndex query engine", close=close)


def bench_target(app: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget | None:
    if not any(c.__module__.startswith("llama_index") for c in type(app).__mro__):
        return None
    from llama_index.core.base.base_query_engine import BaseQueryEngine

    if not isinstance(app, BaseQueryEngine):
        return None
    return engine_target(app, tracker, input_key)
