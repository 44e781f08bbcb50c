"""SSE streaming: a real FastAPI app serving real LangChain chains and a LlamaIndex engine.

In-process through httpx's ASGI transport (events, [DONE], error event, heartbeats, cache
replay, tracker), then once through uvicorn in a subprocess over a real socket (the first
event arrives long before the last; a client that leaves cancels the generation).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from rag_optimize import HashingEmbedder, LatencyTracker, SemanticCache
from rag_optimize.errors import ConfigurationError
from rag_optimize.streaming import DONE, format_event, sse, sse_events

ANSWER = "Paris is the capital of France.\nIt lies on the Seine."


def parse_events(body: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; heartbeat comments come back as ("comment", text)."""
    events: list[tuple[str | None, str]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(("comment", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append((name, "\n".join(data)))
    return events


class CountingModel(GenericFakeChatModel):
    """GenericFakeChatModel that counts how often it was asked to generate."""

    calls: int = 0

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        type(self).calls += 1
        yield from super()._stream(*args, **kwargs)


def make_chain(slow_retrieval_s: float = 0.0, fail: bool = False) -> Any:
    async def retrieve(inputs: dict[str, str]) -> dict[str, str]:
        if slow_retrieval_s:
            await asyncio.sleep(slow_retrieval_s)  # a fake slow retriever
        if fail:
            raise RuntimeError("vector store unreachable")
        return {"question": inputs["question"], "context": "Paris: capital of France."}

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from {context}"), ("human", "{question}")]
    )
    CountingModel.calls = 0
    model = CountingModel(messages=itertools.cycle([AIMessage(content=ANSWER)]))
    return RunnableLambda(retrieve) | prompt | model | StrOutputParser()


def make_app(chain: Any, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/ask")
    async def ask(q: str) -> Any:
        return sse(chain, {"question": q}, **options)

    return app


async def get(app: FastAPI, question: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/ask", params={"q": question})


async def test_tokens_then_done() -> None:
    response = await get(make_app(make_chain()), "capital of France?")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    data = [d for name, d in events if name is None]
    assert data[-1] == DONE
    assert len(data) > 3  # streamed in several chunks, not one blob
    assert "".join(data[:-1]) == ANSWER  # newline inside a token survives the SSE framing
    assert not any(name == "error" for name, _ in events)


async def test_error_event_without_done() -> None:
    response = await get(make_app(make_chain(fail=True)), "capital?")
    events = parse_events(response.text)
    errors = [json.loads(d) for name, d in events if name == "error"]
    assert errors == [{"error": "RuntimeError", "message": "vector store unreachable"}]
    assert DONE not in [d for _, d in events]


async def test_heartbeats_while_retrieval_runs() -> None:
    app = make_app(make_chain(slow_retrieval_s=0.3), heartbeat_s=0.02)
    events = parse_events((await get(app, "capital?")).text)
    first_data = next(i for i, (name, _) in enumerate(events) if name is None)
    assert first_data >= 1
    assert all(name == "comment" for name, _ in events[:first_data])


async def test_cache_hit_streams_stored_answer_without_running_chain() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.9)
    tracker = LatencyTracker()
    app = make_app(make_chain(), cache=cache, tracker=tracker)
    first = await get(app, "What is the capital of France?")
    assert CountingModel.calls == 1
    second = await get(app, "what is the capital of france?")
    assert CountingModel.calls == 1  # answered from the cache
    data = [d for name, d in parse_events(second.text) if name is None]
    assert data[-1] == DONE and len(data) > 3
    assert "".join(data[:-1]) == ANSWER
    assert [d for n, d in parse_events(first.text) if n is None][:-1] != []
    assert cache.stats.hits == 1 and cache.stats.misses == 1
    report = tracker.report()
    assert report["total"].count == 2 and report["ttft"].count == 2
    assert report["cache"].count == 2
    run_id = second.headers["x-rag-run-id"]
    record = tracker.run_report(run_id)
    assert record is not None and record.total is not None
    assert 0 <= record.stages["ttft"] <= record.total


async def test_cache_with_its_own_tracker_is_timed_once() -> None:
    tracker = LatencyTracker()
    cache = SemanticCache(HashingEmbedder(), threshold=0.9, tracker=tracker)
    app = make_app(make_chain(), cache=cache, tracker=tracker)
    for question in ("What is the capital of France?", "what is the capital of france?"):
        await get(app, question)
    assert tracker.report()["cache"].count == 2  # one span per lookup, not two
    assert cache.stats.hits == 1


async def test_failed_stream_is_not_cached() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.9)
    await get(make_app(make_chain(fail=True), cache=cache), "capital?")
    assert len(cache) == 0


async def test_llamaindex_engine_streams() -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    index = VectorStoreIndex.from_documents(
        [Document(text="Paris is the capital of France.")], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(llm=MockLLM(max_tokens=12), streaming=True)
    app = FastAPI()

    @app.get("/ask")
    async def ask(q: str) -> Any:
        return sse(engine, q)

    events = parse_events((await get(app, "capital?")).text)
    data = [d for name, d in events if name is None]
    assert data[-1] == DONE and len(data) >= 3
    assert "".join(data[:-1]).strip()


async def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_s"):
        sse(make_chain(), "q", heartbeat_s=0)
    events = [e async for e in sse_events(object(), "q")]
    assert len(events) == 1 and events[0].startswith("event: error")
    assert "LangChain Runnable" in events[0]
    assert format_event("a\nb", event="x") == "event: x\ndata: a\ndata: b\n\n"


# ---------------------------------------------------------------- through uvicorn
SERVER_APP = textwrap.dedent(
    """
    import asyncio
    from typing import Any

    from fastapi import FastAPI
    from langchain_core.runnables import RunnableGenerator

    from rag_optimize import LatencyTracker
    from rag_optimize.streaming import sse

    state = {"produced": 0, "cancelled": 0, "finished": 0}
    tracker = LatencyTracker()

    async def slow_tokens(inputs: Any) -> Any:
        async for _ in inputs:
            pass
        try:
            for i in range(int(state.get("n", 40))):
                await asyncio.sleep(0.025)  # a slow fake model
                state["produced"] += 1
                yield f"tok{i} "
            state["finished"] += 1
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise

    chain = RunnableGenerator(slow_tokens)
    app = FastAPI()

    @app.get("/ask")
    async def ask(n: int = 40) -> Any:
        state["n"] = n
        return sse(chain, "question", tracker=tracker, heartbeat_s=1.0)

    @app.get("/state")
    async def get_state() -> Any:
        return {**state, "open_runs": len(tracker.open_runs())}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "sse_server_app.py").write_text(SERVER_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sse_server_app:app", "--app-dir", str(tmp_path),
         "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/state", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_uvicorn_first_byte_early_and_disconnect_cancels(server: str) -> None:
    # The first token reaches the client long before the whole answer is done.
    start = time.perf_counter()
    first = done = None
    with httpx.stream("GET", f"{server}/ask", params={"n": 40}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and first is None:
                first = time.perf_counter() - start
            if line == f"data: {DONE}":
                done = time.perf_counter() - start
    assert first is not None and done is not None
    assert first < 0.5 * done  # 40 tokens at 25 ms: ~1 s in total

    # A client that leaves after two tokens cancels the generation on the server.
    before = httpx.get(f"{server}/state").json()
    with httpx.stream("GET", f"{server}/ask", params={"n": 400}, timeout=30) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 2:
                    break
    deadline = time.monotonic() + 10
    state = httpx.get(f"{server}/state").json()
    while state["cancelled"] == before["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.05)
        state = httpx.get(f"{server}/state").json()
    assert state["cancelled"] == before["cancelled"] + 1
    assert state["finished"] == before["finished"]
    assert state["produced"] - before["produced"] < 400
    assert state["open_runs"] == 0  # the tracker run was closed after the disconnect
