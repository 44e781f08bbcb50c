"""The LangChain bench target of the ``rag-optimize`` CLI (entry point group
``rag_optimize.bench_targets``; ``rag-optimize demo`` is the ``rag_optimize.commands`` entry
point :func:`langchain_rag_optimize.demo.options.add_demo_parser`).

For a LangChain ``Runnable``, ``rag-optimize bench`` streams each question through it with a
:class:`~langchain_rag_optimize.LatencyCallbackHandler` on the bench's tracker attached
(retrieval, generation and ttft per question).
"""

from __future__ import annotations

from typing import Any

from rag_optimize.cli import BenchTarget, make_input
from rag_optimize.tracing import LatencyTracker


def runnable_target(runnable: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget:
    """Stream one question through ``runnable`` with the latency handler attached.

    The first streamed chunk also marks ``ttft`` of the current run, so answers that never
    reach a model (a cache hit) still get a time to first token.
    """
    from langchain_rag_optimize.callbacks import LatencyCallbackHandler

    handler = LatencyCallbackHandler(tracker)

    async def call(question: str) -> None:
        config: Any = {"callbacks": [handler]}
        async for _ in runnable.astream(make_input(question, input_key), config=config):
            tracker.first_token()

    return BenchTarget(call, "LangChain runnable")


def bench_target(app: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget | None:
    if not any(c.__module__.startswith("langchain") for c in type(app).__mro__):
        return None
    from langchain_core.runnables import Runnable

    if not isinstance(app, Runnable):
        return None
    return runnable_target(app, tracker, input_key)
