"""Server-sent events for a streaming RAG answer: tokens as they come, heartbeats meanwhile.

``sse(chain, question)`` returns a Starlette ``StreamingResponse`` (FastAPI's too) with the
``text/event-stream`` body a browser ``EventSource`` or any SSE client reads:

* ``data: <token>`` per text chunk (a chunk with newlines becomes several ``data:`` lines of
  one event, as the SSE format requires; the client joins them with ``\\n``);
* ``: heartbeat`` comment lines whenever no token came for ``heartbeat_s`` seconds (retrieval
  and the model's first token can take seconds; proxies close idle connections);
* a final ``data: [DONE]`` after the last token;
* ``event: error`` with ``data: {"error": "<type>", "message": "..."}`` when the pipeline
  raises (no ``[DONE]`` follows); the exception is logged, the connection closed cleanly.

What is streamed is found by duck typing, so the core needs no framework import: an object
with ``astream(input)`` (a LangChain ``Runnable``: chain, chat model, ``with_semantic_cache``)
yields chunks (strings, message chunks with ``.content``, or dicts with an ``answer`` /
``output`` / ``text`` / ``result`` string); an object with ``aquery(input)`` (a LlamaIndex
query engine) returns a streaming response (``async_response_gen()`` or ``response_gen``) or
a plain response whose text is sent as one chunk.

The pipeline runs in its own task that feeds a queue; the response only reads the queue.
When the client disconnects, Starlette cancels the response and the pipeline task is
cancelled with it, so generation (and its cost) stops.

With a ``tracker`` (:class:`~rag_optimize.tracing.LatencyTracker`) each request is a run of
it (its id is the ``X-RAG-Run-Id`` response header): ``ttft`` on the first token, ``cache``
for a cache lookup (unless the cache has a tracker of its own, which then records it),
``total`` at the end (also after an error or a disconnect).

With a ``cache`` (:class:`~rag_optimize.cache.SemanticCache`) the question is looked up
first; a hit streams the stored answer (in word chunks) without running the pipeline, a miss
runs it and stores the full answer only when the stream finished without error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import stages
from rag_optimize.tracing.tracker import LatencyTracker

logger = logging.getLogger("rag_optimize.streaming")

DONE = "[DONE]"
HEARTBEAT = ": heartbeat\n\n"
MEDIA_TYPE = "text/event-stream"
_TEXT_KEYS = ("answer", "output", "text", "result", "response")
_QUESTION_KEYS = ("question", "query", "input")
_WORDS = re.compile(r"\S+\s*|\s+")
_END = object()


def format_event(data: str, event: str | None = None) -> str:
    """One SSE event: ``event:`` line if named, a ``data:`` line per line of ``data``."""
    lines = [f"event: {event}"] if event else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def _first_str(get: Callable[[str], Any], names: tuple[str, ...]) -> str | None:
    """The first of ``get(name)`` that is a str (a mapping's ``get`` or an attribute getter)."""
    for name in names:
        value = get(name)
        if isinstance(value, str):
            return value
    return None


def chunk_text(chunk: Any) -> str:
    """The text of one streamed chunk (str, message chunk, LlamaIndex delta, or answer dict)."""
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, Mapping):
        return _first_str(chunk.get, _TEXT_KEYS) or ""
    content = getattr(chunk, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: keep the text ones
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, (str, Mapping))
        )
    text = _first_str(lambda attr: getattr(chunk, attr, None), ("delta", "text"))
    return str(chunk) if text is None else text


def question_text(input: Any) -> str:
    """The question in ``input`` (a str, or a dict with ``question``/``query``/``input``)."""
    if isinstance(input, str):
        return input
    question = _first_str(input.get, _QUESTION_KEYS) if isinstance(input, Mapping) else None
    if question is None:  # a LlamaIndex QueryBundle
        question = _first_str(lambda attr: getattr(input, attr, None), ("query_str",))
    if question is not None:
        return question
    raise InvalidInputError(
        "cannot find the question for the cache in the input; pass a str, a dict with a "
        f"'question', 'query' or 'input' string, or cache_key=...; got {type(input).__name__}"
    )


async def stream_text(target: Any, input: Any, config: Any = None) -> AsyncIterator[str]:
    """Stream the answer text of a LangChain runnable or a LlamaIndex query engine."""
    if callable(getattr(target, "astream", None)):
        kwargs = {} if config is None else {"config": config}
        async for chunk in target.astream(input, **kwargs):
            text = chunk_text(chunk)
            if text:
                yield text
        return
    if callable(getattr(target, "aquery", None)):
        response = await target.aquery(input)
        agen = getattr(response, "async_response_gen", None)
        if callable(agen):
            async for token in agen():
                if token:
                    yield str(token)
            return
        gen = getattr(response, "response_gen", None)
        if gen is not None:  # a sync generator: pull each token in a worker thread
            iterator = iter(gen)
            while (token := await asyncio.to_thread(next, iterator, _END)) is not _END:
                if token:
                    yield str(token)
            return
        text = getattr(response, "response", response)
        if text is not None and str(text):
            yield str(text)
        return
    raise ConfigurationError(
        "sse() streams a LangChain Runnable (with .astream) or a LlamaIndex query engine "
        f"(with .aquery); got {type(target).__name__}"
    )


def _split_words(text: str) -> list[str]:
    return _WORDS.findall(text) or [text]


async def _produce(
    queue: asyncio.Queue[tuple[str, Any]],
    target: Any,
    input: Any,
    config: Any,
    cache: Any,
    cache_key: Callable[[Any], str] | None,
    scope: str | None,
    tracker: LatencyTracker | None,
    run_id: str | None,
) -> None:
    """Run the pipeline (or the cache) and put ("token", text) / ("error", exc) / ("end", _)."""
    token = tracker.set_current_run(run_id) if tracker is not None else None
    try:
        question = None
        if cache is not None:
            question = cache_key(input) if cache_key is not None else question_text(input)
            if tracker is not None and getattr(cache, "tracker", None) is None:
                async with tracker.span(stages.CACHE, run_id=run_id):
                    hit = await cache.aget(question, scope=scope)
            else:  # a cache with its own tracker times the lookup itself
                hit = await cache.aget(question, scope=scope)
            if hit is not None:
                for word in _split_words(str(hit.response)):
                    await queue.put(("token", word))
                await queue.put(("end", "hit"))
                return
        parts: list[str] = []
        async for text in stream_text(target, input, config):
            parts.append(text)
            await queue.put(("token", text))
        if cache is not None and question is not None:
            await cache.aset(question, "".join(parts), scope=scope)
        await queue.put(("end", "miss" if cache is not None else None))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported to the client as an error event
        logger.exception("streamed RAG request failed")
        await queue.put(("error", exc))
    finally:
        if tracker is not None and token is not None:
            tracker.reset_current_run(token)


async def sse_events(
    runnable_or_engine: Any,
    input: Any,
    *,
    tracker: LatencyTracker | None = None,
    heartbeat_s: float = 5.0,
    cache: Any = None,
    cache_key: Callable[[Any], str] | None = None,
    scope: str | None = None,
    config: Any = None,
    run_id: str | None = None,
) -> AsyncIterator[str]:
    """The SSE event strings of one answer (framework-free; :func:`sse` wraps it).

    Closing this generator early (a client that went away) cancels the pipeline task.
    """
    if not (isinstance(heartbeat_s, (int, float)) and heartbeat_s > 0):
        raise ConfigurationError(f"heartbeat_s must be a number > 0, got {heartbeat_s!r}")
    if tracker is not None:
        run_id = tracker.start_run(run_id)
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=256)
    producer = asyncio.create_task(
        _produce(queue, runnable_or_engine, input, config, cache, cache_key, scope, tracker, run_id)
    )
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=heartbeat_s)
            except asyncio.TimeoutError:
                yield HEARTBEAT
                continue
            if kind == "token":
                if tracker is not None and run_id is not None:
                    tracker.first_token(run_id)
                yield format_event(value)
            elif kind == "error":
                payload = {"error": type(value).__name__, "message": str(value)}
                yield format_event(json.dumps(payload), event="error")
                return
            else:
                yield format_event(DONE)
                return
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer
        if tracker is not None and run_id is not None:
            tracker.finish_run(run_id)


def sse(
    runnable_or_engine: Any,
    input: Any,
    *,
    tracker: LatencyTracker | None = None,
    heartbeat_s: float = 5.0,
    cache: Any = None,
    cache_key: Callable[[Any], str] | None = None,
    scope: str | None = None,
    config: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """A Starlette ``StreamingResponse`` of server-sent events for one answer.

    ``runnable_or_engine``: a LangChain Runnable (``astream``) or a LlamaIndex query engine
    (``aquery``). ``input``: what it takes (a question string or a dict). ``tracker``: records
    ``ttft``/``cache``/``total`` per request. ``heartbeat_s``: idle seconds before a heartbeat
    comment. ``cache``: a :class:`~rag_optimize.cache.SemanticCache` consulted first (the
    question comes from ``cache_key(input)`` or :func:`question_text`), ``scope`` its scope.
    ``config``: passed to ``astream`` (LangChain callbacks, tags). See the module docstring.
    """
    try:
        from starlette.responses import StreamingResponse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sse() needs starlette (or FastAPI): pip install 'rag-optimize[streaming]'"
        ) from exc
    if not (isinstance(heartbeat_s, (int, float)) and heartbeat_s > 0):
        raise ConfigurationError(f"heartbeat_s must be a number > 0, got {heartbeat_s!r}")
    # The run opens when the body starts streaming (a response never sent leaves no open run).
    run_id = uuid.uuid4().hex if tracker is not None else None
    body = sse_events(
        runnable_or_engine,
        input,
        tracker=tracker,
        heartbeat_s=heartbeat_s,
        cache=cache,
        cache_key=cache_key,
        scope=scope,
        config=config,
        run_id=run_id,
    )
    all_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if run_id is not None:
        all_headers["X-RAG-Run-Id"] = run_id
    all_headers.update(headers or {})
    return StreamingResponse(body, media_type=MEDIA_TYPE, headers=all_headers)
