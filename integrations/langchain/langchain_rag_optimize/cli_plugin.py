"""The LangChain bench target of the ``rag-optimize`` CLI (entry point group
``rag_optimize.bench_targets``; ``rag-optimize demo`` comes from the ``rag-optimize-demo``
distribution).

For a LangChain ``Runnable``, ``rag-optimize bench`` streams each question through it with a
:class:`~langchain_rag_optimize.LatencyCallbackHandler` on the bench's tracker attached
(retrieval, generation and ttft per question).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rag_optimize.cli import BenchTarget, make_input
from rag_optimize.tracing import LatencyTracker

__all__ = ["bench_target", "runnable_target"]


def runnable_target(runnable: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget:
    """Stream one question through ``runnable`` with the latency handler attached.

    The first streamed chunk also marks ``ttft`` of the current run, so answers that never
    reach a model (a cache hit) still get a time to first token. A LangGraph graph (or a
    cached one) is streamed in ``messages`` mode and its first token is the first message
    chunk with text: a graph's first state update comes long before any answer text.
    A global ``SemanticLLMCache`` reports its lookups (the ``cache`` stage, hits) into the
    bench's tracker while the bench runs.
    """
    from langchain_rag_optimize._graph import is_graph
    from langchain_rag_optimize.callbacks import LatencyCallbackHandler

    handler = LatencyCallbackHandler(tracker)
    graph = is_graph(runnable) or is_graph(getattr(runnable, "runnable", None))
    restore = _report_llm_cache_lookups(tracker)

    async def call(question: str) -> None:
        config: Any = {"callbacks": [handler]}
        if graph:
            async for message, _meta in runnable.astream(
                make_input(question, input_key), config=config, stream_mode="messages"
            ):
                if getattr(message, "content", None):
                    tracker.first_token()
            return
        async for _ in runnable.astream(make_input(question, input_key), config=config):
            tracker.first_token()

    return BenchTarget(call, "LangGraph graph" if graph else "LangChain runnable", restore)


def _report_llm_cache_lookups(tracker: LatencyTracker) -> Callable[[], None]:
    """Point the global ``SemanticLLMCache``'s core cache at ``tracker`` if it has none;
    returns the function that undoes it."""
    from langchain_core.globals import get_llm_cache

    from langchain_rag_optimize.llm_cache import SemanticLLMCache

    llm_cache = get_llm_cache()
    if not isinstance(llm_cache, SemanticLLMCache) or llm_cache.cache.tracker is not None:
        return lambda: None
    core = llm_cache.cache
    core.tracker = tracker

    def restore() -> None:
        core.tracker = None

    return restore


def bench_target(app: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget | None:
    if not any(c.__module__.startswith("langchain") for c in type(app).__mro__):
        return None
    from langchain_core.runnables import Runnable

    if not isinstance(app, Runnable):
        return None
    return runnable_target(app, tracker, input_key)
