"""Serve a LangChain RAG chain over server-sent events with ``rag_optimize.streaming.sse``.

    python examples/fastapi_app.py               # uvicorn on http://127.0.0.1:8000
    curl -N 'http://127.0.0.1:8000/ask?q=What+is+a+semantic+cache'
    curl 'http://127.0.0.1:8000/latency'         # per-stage p50/p95/p99 so far (JSON)
    curl 'http://127.0.0.1:8000/metrics'         # the same in Prometheus exposition format
    curl 'http://127.0.0.1:8000/cache'           # semantic cache counters
    python examples/fastapi_app.py --short       # no server: two requests in-process, printed

Every ``/ask`` streams an ``event: meta`` (run id, cache status), ``data:`` events per token
and a final ``data: [DONE]`` (an ``event: error`` if the chain fails), with heartbeat comments
while retrieval runs; a client that disconnects cancels the generation. The chain is the
demo's RAG chain with the drop-ins (async hybrid retriever, batching embeddings) and the
semantic cache in front of it (``sse(..., cache=)``): a paraphrase of an earlier question is
streamed from the cache without running the chain, and the ``X-RAG-Cache`` header says
``MISS``, ``HIT`` or ``SEMANTIC_HIT``. TTFT and total per request go to a ``LatencyTracker``,
retrieval and generation through the ``LatencyCallbackHandler``; ``/metrics`` exports them
with the ``PrometheusExporter``.
Offline: the packaged MiniLM model and the local extractive chat model.
``RAG_OPTIMIZE_EXAMPLE_SHORT=1`` is the same as ``--short``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse
from langchain_core.documents import Document
from langchain_core.runnables import Runnable

from langchain_rag_optimize import (
    AsyncHybridRetriever,
    BatchingEmbeddings,
    LatencyCallbackHandler,
)
from rag_optimize import LatencyTracker, SemanticCache, default_embedder
from rag_optimize.streaming import CACHE_HEADER, META_EVENT, sse
from rag_optimize.tracing.exporters.prometheus import PrometheusExporter
from rag_optimize_demo.chat_model import ExtractiveChatModel
from rag_optimize_demo.corpus import passages
from rag_optimize_demo.embeddings import PackagedEmbeddings
from rag_optimize_demo.runner import rag_chain


def build_chain(short: bool) -> tuple[Runnable[Any, str], SemanticCache]:
    """The demo corpus behind a hybrid-retrieval RAG chain, and the cache to put in front."""
    embeddings = BatchingEmbeddings(PackagedEmbeddings(default_embedder()), max_wait_ms=2)
    corpus = passages()[: 60 if short else None]  # short: fewer passages to embed
    documents = [Document(page_content=p.text, id=p.id) for p in corpus]
    retriever = AsyncHybridRetriever.from_documents(documents, embeddings, k=4)
    model = ExtractiveChatModel(
        first_token_delay_s=0.02 if short else 0.15, token_delay_s=0.003 if short else 0.015
    )
    cache = SemanticCache(embeddings)
    return rag_chain(retriever, model), cache


def create_app(short: bool = False) -> FastAPI:
    app = FastAPI(title="rag-optimize SSE example")
    chain, cache = build_chain(short)
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    prometheus = PrometheusExporter(tracker)

    @app.get("/ask")
    async def ask(q: str = Query(..., min_length=1)) -> Any:
        return sse(
            chain, q, tracker=tracker, cache=cache, heartbeat_s=2.0,
            config={"callbacks": [handler]},
        )  # fmt: skip

    @app.get("/latency")
    async def latency() -> Any:
        return tracker.report().as_dict()

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(prometheus.render())

    @app.get("/cache")
    async def cache_stats() -> Any:
        return cache.stats.as_dict()

    return app


async def _short_run(app: FastAPI) -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        for question in ("What is a semantic cache?", "Can you explain what a semantic cache is?"):
            start = time.perf_counter()
            response = await client.get("/ask", params={"q": question})
            seconds = time.perf_counter() - start
            blocks = [b.split("\n") for b in response.text.split("\n\n") if b]
            events = [  # the data lines of the token and [DONE] events (not meta, heartbeats)
                line for block in blocks if f"event: {META_EVENT}" not in block
                for line in block if line.startswith("data: ")
            ]
            print(f"GET /ask?q={question!r}: {len(events)} data events in {seconds:.2f} s, "
                  f"last {events[-1]!r}, {CACHE_HEADER}: {response.headers[CACHE_HEADER]}")
            print("  answer:", "".join(e[len("data: "):] for e in events[:-1]))
        stages = (await client.get("/latency")).json()["stages"]
        for name in ("ttft", "total"):
            print(f"  {name}: p50 {stages[name]['p50'] * 1000:.1f} ms over "
                  f"{stages[name]['count']} requests")
        stats = (await client.get("/cache")).json()
        print(f"  cache: {stats['hits']} hits, {stats['misses']} misses")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="two in-process requests, no server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    short = args.short or os.environ.get("RAG_OPTIMIZE_EXAMPLE_SHORT") == "1"
    app = create_app(short)
    if short:
        asyncio.run(_short_run(app))
        return 0
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
