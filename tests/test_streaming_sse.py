"""SSE streaming: a real FastAPI app serving real LangChain chains and a LlamaIndex engine.

In-process through httpx's ASGI transport (events and ids, [DONE], error event, heartbeats,
meta event and headers with the run id and cache status, cache replay, tracker), then through
uvicorn in a subprocess over a real socket (the first token reaches the client while the
server is still generating; a client that leaves cancels the generation; SIGTERM drains the
open streams and cancels their pipelines instead of waiting for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
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
from rag_optimize.streaming import DONE, META_EVENT, format_event, sse, sse_events

ANSWER = "Paris is the capital of France.\nIt lies on the Seine."


def parse_blocks(body: str) -> list[dict[str, Any]]:
    """Each SSE block as a dict: "comment", "id", "event", "retry", "data" (lines joined)."""
    blocks: list[dict[str, Any]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        if data:
            fields["data"] = "\n".join(data)
        blocks.append(fields)
    return blocks


def parse_events(body: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; heartbeat comments come back as ("comment", text)."""
    events: list[tuple[str | None, str]] = []
    for block in parse_blocks(body):
        if "comment" in block:
            events.append(("comment", block["comment"]))
        if "data" in block:
            events.append((block.get("event"), block["data"]))
    return events


def meta(response: httpx.Response) -> dict[str, Any]:
    (data,) = [d for name, d in parse_events(response.text) if name == META_EVENT]
    return dict(json.loads(data))


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
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert "x-rag-cache" not in response.headers  # no cache configured
    events = parse_events(response.text)
    assert events[0][0] == META_EVENT
    assert meta(response) == {"run_id": response.headers["x-rag-run-id"]}
    data = [d for name, d in events if name is None]
    assert data[-1] == DONE
    assert len(data) > 3  # streamed in several chunks, not one blob
    assert "".join(data[:-1]) == ANSWER  # newline inside a token survives the SSE framing
    assert not any(name == "error" for name, _ in events)
    ids = [b["id"] for b in parse_blocks(response.text) if "data" in b]
    assert ids == [str(i) for i in range(len(ids))]  # every event numbered, in order


async def test_retry_is_sent_with_the_first_event() -> None:
    response = await get(make_app(make_chain(), retry=15_000), "capital?")
    blocks = [b for b in parse_blocks(response.text) if "data" in b]
    assert blocks[0]["retry"] == "15000"
    assert all("retry" not in b for b in blocks[1:])


async def test_error_event_without_done() -> None:
    response = await get(make_app(make_chain(fail=True)), "capital?")
    events = parse_events(response.text)
    errors = [json.loads(d) for name, d in events if name == "error"]
    assert errors == [{"error": "RuntimeError", "message": "vector store unreachable"}]
    assert DONE not in [d for _, d in events]


async def test_heartbeats_while_retrieval_runs() -> None:
    app = make_app(make_chain(slow_retrieval_s=0.3), heartbeat_s=0.02)
    events = parse_events((await get(app, "capital?")).text)
    assert events[0][0] == META_EVENT
    first_data = next(i for i, (name, _) in enumerate(events) if name is None)
    assert first_data >= 2
    assert all(name == "comment" for name, _ in events[1:first_data])
    assert {text for name, text in events if name == "comment"} == {"heartbeat"}


async def test_cache_hit_streams_stored_answer_without_running_chain() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.8)
    tracker = LatencyTracker()
    app = make_app(make_chain(), cache=cache, tracker=tracker)
    first = await get(app, "What is the capital of France?")
    assert CountingModel.calls == 1
    assert first.headers["x-rag-cache"] == "MISS" and meta(first)["cache"] == "MISS"
    second = await get(app, "what is the capital of france?")  # an exact repeat
    assert CountingModel.calls == 1  # answered from the cache
    assert second.headers["x-rag-cache"] == "HIT" and meta(second)["cache"] == "HIT"
    data = [d for name, d in parse_events(second.text) if name is None]
    assert data[-1] == DONE and len(data) > 3
    assert "".join(data[:-1]) == ANSWER
    third = await get(app, "What's the capital of France?")  # a paraphrase
    assert CountingModel.calls == 1
    assert third.headers["x-rag-cache"] == "SEMANTIC_HIT"
    assert meta(third) == {"run_id": third.headers["x-rag-run-id"], "cache": "SEMANTIC_HIT"}
    assert cache.stats.hits == 2 and cache.stats.misses == 1
    report = tracker.report()
    assert report["total"].count == 3 and report["ttft"].count == 3
    assert report["cache"].count == 3
    run_id = second.headers["x-rag-run-id"]
    record = tracker.run_report(run_id)
    assert record is not None and record.total is not None
    assert 0 <= record.stages["ttft"] <= record.total
    assert tracker.open_runs() == []


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
    with pytest.raises(ConfigurationError, match="send_timeout"):
        sse(make_chain(), "q", send_timeout=-1)
    with pytest.raises(ConfigurationError, match="retry"):
        sse(make_chain(), "q", retry=-5)
    events = [e async for e in sse_events(object(), "q")]
    assert len(events) == 2 and events[0].startswith("id: 0\nevent: meta\n")
    assert events[1].startswith("id: 1\nevent: error\n")
    assert "LangChain Runnable" in events[1]
    assert format_event("a\nb", event="x") == "event: x\ndata: a\ndata: b\n\n"
    assert format_event("a", id="7", retry=100) == "id: 7\ndata: a\nretry: 100\n\n"


async def test_sse_events_closed_early_cancels_the_pipeline_and_closes_the_run() -> None:
    tracker = LatencyTracker()
    cancelled = asyncio.Event()

    async def endless(inputs: Any) -> Any:
        async for _ in inputs:
            pass
        try:
            while True:
                await asyncio.sleep(0.005)
                yield "tok "
        except asyncio.CancelledError:
            cancelled.set()
            raise

    from langchain_core.runnables import RunnableGenerator

    stream = sse_events(RunnableGenerator(endless), "q", tracker=tracker)
    seen = [await stream.__anext__() for _ in range(3)]  # meta and two tokens
    assert seen[1].startswith("id: 1\ndata: tok")
    await stream.aclose()  # what a server does when the client goes away
    assert cancelled.is_set()
    assert tracker.open_runs() == [] and tracker.report()["total"].count == 1


# ---------------------------------------------------------------- through uvicorn
SERVER_APP = textwrap.dedent(
    """
    import asyncio
    import contextlib
    import json
    import os
    from typing import Any

    from fastapi import FastAPI
    from langchain_core.runnables import RunnableGenerator

    from rag_optimize import LatencyTracker
    from rag_optimize.streaming import sse

    state = {"produced": 0, "cancelled": 0, "finished": 0}
    tracker = LatencyTracker()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        # runs after uvicorn drained the open connections on SIGTERM
        with open(os.environ["SSE_STATE_FILE"], "w") as f:
            json.dump({**state, "open_runs": len(tracker.open_runs())}, f)

    async def slow_tokens(inputs: Any) -> Any:
        async for _ in inputs:
            pass
        try:
            pad = "x" * int(state.get("size", 0))
            for i in range(int(state.get("n", 40))):
                await asyncio.sleep(float(state.get("delay", 0.025)))  # a slow fake model
                state["produced"] += 1
                yield f"tok{i} {pad}"
            state["finished"] += 1
        except (asyncio.CancelledError, GeneratorExit):
            # stopped before the end: cancelled inside the model's await, or closed while
            # parked at a yield (the queue to the client full; with delay=0 that is where
            # the generator waits)
            state["cancelled"] += 1
            raise

    chain = RunnableGenerator(slow_tokens)
    app = FastAPI(lifespan=lifespan)

    @app.get("/ask")
    async def ask(
        n: int = 40, size: int = 0, delay: float = 0.025, send_timeout: float = 30.0
    ) -> Any:
        state.update(n=n, size=size, delay=delay)
        return sse(chain, "question", tracker=tracker, heartbeat_s=1.0, send_timeout=send_timeout)

    @app.get("/state")
    async def get_state() -> Any:
        return {**state, "open_runs": len(tracker.open_runs())}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: str, proc: subprocess.Popen[bytes], state_file: Path) -> None:
        self.base = base
        self.proc = proc
        self.state_file = state_file

    def state(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.base}/state").json())

    def wait_until(
        self, done: Callable[[dict[str, int]], bool], timeout: float
    ) -> dict[str, int]:
        """The server's state once ``done`` holds, or its last state at ``timeout``: the
        cancellation counter moves before the tracker run is closed, so a test that reads
        both waits for both (the assertions after it say what must hold)."""
        deadline = time.monotonic() + timeout
        state = self.state()
        while not done(state) and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.state()
        return state


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "sse_server_app.py").write_text(SERVER_APP)
    port = free_port()
    state_file = tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "sse_server_app:app",
            "--app-dir",
            str(tmp_path),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "30",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SSE_STATE_FILE": str(state_file)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded machine imports slowly
        while True:
            try:
                httpx.get(f"{base}/state", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield Server(base, proc, state_file)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_uvicorn_streams_and_a_disconnect_cancels_the_pipeline(server: Server) -> None:
    # The first token reaches the client while the server is still generating: streamed, not
    # buffered (checked by the server's own count, not by a timing).
    produced_at_first_token = None
    done = False
    with httpx.stream("GET", f"{server.base}/ask", params={"n": 200}, timeout=60) as response:
        assert response.headers["x-accel-buffering"] == "no"
        for line in response.iter_lines():
            if line.startswith("data: tok") and produced_at_first_token is None:
                produced_at_first_token = server.state()["produced"]
            if line == f"data: {DONE}":
                done = True
    assert done and produced_at_first_token is not None
    assert produced_at_first_token < 200
    assert server.state()["finished"] == 1

    # A client that leaves after two tokens cancels the generation on the server.
    before = server.state()
    with httpx.stream("GET", f"{server.base}/ask", params={"n": 400}, timeout=30) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: tok"):
                seen += 1
                if seen == 2:
                    break
    state = server.wait_until(
        lambda s: s["cancelled"] > before["cancelled"] and s["open_runs"] == 0, timeout=20
    )
    assert state["cancelled"] == before["cancelled"] + 1
    assert state["finished"] == before["finished"]
    assert state["produced"] - before["produced"] < 400
    assert state["open_runs"] == 0  # the tracker run was closed after the disconnect


@pytest.mark.slow
def test_uvicorn_a_client_that_stops_reading_is_dropped_after_send_timeout(server: Server) -> None:
    # The client sends its request and never reads: once the socket buffers are full a send
    # blocks; after send_timeout the stream is closed and the pipeline cancelled (without it
    # the generation would stay parked on the full queue for as long as the socket is open).
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(
            b"GET /ask?n=100000&size=65536&delay=0&send_timeout=1 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n\r\n"
        )
        state = server.wait_until(
            lambda s: s["cancelled"] > 0 and s["open_runs"] == 0, timeout=60
        )
        assert state["cancelled"] == 1 and state["finished"] == 0, state
        assert state["produced"] < 100000
        assert state["open_runs"] == 0


@pytest.mark.slow
def test_uvicorn_shutdown_drains_open_streams(server: Server) -> None:
    # SIGTERM while a 400-token answer streams to a client that keeps reading: sse-starlette
    # ends the stream, the pipeline is cancelled and its run closed, instead of uvicorn
    # waiting for the whole answer (a plain StreamingResponse would deliver all 400 tokens).
    seen = 0
    done = False
    with (
        contextlib.suppress(httpx.RemoteProtocolError, httpx.ReadError),
        httpx.stream("GET", f"{server.base}/ask", params={"n": 400}, timeout=30) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: tok"):
                seen += 1
                if seen == 2:
                    server.proc.send_signal(signal.SIGTERM)
            done = done or line == f"data: {DONE}"
    server.proc.wait(timeout=30)
    assert 2 <= seen < 400 and not done
    state = json.loads(server.state_file.read_text())
    assert state["cancelled"] == 1 and state["finished"] == 0
    assert state["produced"] < 400
    assert state["open_runs"] == 0
