"""Server-sent events for a streaming RAG answer: tokens as they come, heartbeats meanwhile.

``sse(chain, question)`` returns an ``EventSourceResponse`` of `sse-starlette
<https://github.com/sysid/sse-starlette>`_ (a Starlette response, so FastAPI's too) with the
``text/event-stream`` body a browser ``EventSource`` or any SSE client reads:

* first ``event: meta`` with ``data: {"run_id": "...", "cache": "MISS"}`` (``cache`` only when
  a cache is given: ``HIT`` for an exact repeat, ``SEMANTIC_HIT`` for a paraphrase, ``MISS``);
* ``data: <token>`` per text chunk (a chunk with newlines becomes several ``data:`` lines of
  one event, as the SSE format requires; the client joins them with ``\\n``);
* ``: heartbeat`` comment lines whenever nothing was sent for ``heartbeat_s`` seconds
  (retrieval and the model's first token can take seconds; proxies close idle connections);
* a final ``data: [DONE]`` after the last token;
* ``event: error`` with ``data: {"error": "<type>", "message": "..."}`` when the pipeline
  raises (no ``[DONE]`` follows); the exception is logged, the connection closed cleanly.

Every event has an ``id`` (its position, from 0), so a client can tell whether it missed one;
``retry=`` (milliseconds) is sent with the first event when given. The response headers carry
the run id (``X-RAG-Run-Id``) and, with a cache, the cache status (``X-RAG-Cache``): the
lookup runs before the headers are sent. sse-starlette adds ``Cache-Control: no-store``,
``X-Accel-Buffering: no`` (nginx must not buffer the stream) and ``Connection: keep-alive``.

What is streamed is found by duck typing, so the core needs no framework import: an object
with ``astream(input)`` (a LangChain ``Runnable``: chain, chat model, ``with_semantic_cache``)
yields chunks (strings, message chunks with ``.content``, or dicts with an ``answer`` /
``output`` / ``text`` / ``result`` string); an object with ``aquery(input)`` (a LlamaIndex
query engine) returns a streaming response (``async_response_gen()`` or ``response_gen``) or
a plain response whose text is sent as one chunk.

The pipeline runs in its own task that feeds a queue; the response only reads the queue. When
the client disconnects (sse-starlette listens for ``http.disconnect``), when a send does not
complete within ``send_timeout`` seconds (a client that stopped reading), or when the server
shuts down (sse-starlette drains its streams on uvicorn's exit signal), the response is
cancelled and the pipeline task with it, so generation (and its cost) stops.

With a ``tracker`` (:class:`~rag_optimize.tracing.LatencyTracker`) each request is a run of
it: ``ttft`` on the first token, ``cache`` for a cache lookup (unless the cache has a tracker
of its own, which then records it), ``total`` at the end (also after an error or a
disconnect). With a ``cache`` (:class:`~rag_optimize.cache.SemanticCache`) the question is
looked up first; a hit streams the stored answer (in word chunks) without running the
pipeline, a miss runs it and stores the full answer only when the stream finished without
error.

:func:`sse_events` is the same stream as plain strings, for servers other than Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import stages
from rag_optimize.tracing.tracker import LatencyTracker

__all__ = [
    "CACHE_HEADER",
    "CACHE_HIT",
    "CACHE_MISS",
    "CACHE_SEMANTIC_HIT",
    "DONE",
    "HEARTBEAT",
    "MEDIA_TYPE",
    "META_EVENT",
    "RUN_ID_HEADER",
    "cache_status",
    "chunk_text",
    "format_event",
    "question_text",
    "sse",
    "sse_events",
    "stream_text",
]

logger = logging.getLogger("rag_optimize.streaming")

DONE = "[DONE]"
HEARTBEAT = ": heartbeat\n\n"
MEDIA_TYPE = "text/event-stream"
META_EVENT = "meta"
RUN_ID_HEADER = "X-RAG-Run-Id"
CACHE_HEADER = "X-RAG-Cache"
CACHE_HIT = "HIT"
CACHE_SEMANTIC_HIT = "SEMANTIC_HIT"
CACHE_MISS = "MISS"
_TEXT_KEYS = ("answer", "output", "text", "result", "response")
_QUESTION_KEYS = ("question", "query", "input")
_WORDS = re.compile(r"\S+\s*|\s+")
_END = object()

#: One event of the stream: (kind, data, event name or None, id or None).
Event = tuple[str, str, "str | None", "str | None"]


def format_event(
    data: str, event: str | None = None, id: str | None = None, retry: int | None = None
) -> str:
    """One SSE event: ``id:``/``event:`` lines if given, a ``data:`` line per line of ``data``."""
    lines = [f"id: {id}"] if id is not None else []
    if event:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    if retry is not None:
        lines.append(f"retry: {retry}")
    return "\n".join(lines) + "\n\n"


def cache_status(hit: Any) -> str:
    """``HIT`` (exact repeat), ``SEMANTIC_HIT`` (a paraphrase) or ``MISS`` for a lookup result."""
    if hit is None:
        return CACHE_MISS
    return CACHE_HIT if getattr(hit, "exact", False) else CACHE_SEMANTIC_HIT


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


def _check_seconds(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")


class _Answer:
    """One streamed answer: its run, its cache lookup, its pipeline task and its events.

    ``start`` opens the run and looks the question up (before any byte is sent, so the cache
    status can go in a header); ``events`` streams; ``close`` (always called, idempotent)
    cancels the pipeline if it still runs and finishes the run.
    """

    def __init__(
        self,
        target: Any,
        input: Any,
        *,
        tracker: LatencyTracker | None,
        cache: Any,
        cache_key: Callable[[Any], str] | None,
        scope: str | None,
        config: Any,
        run_id: str | None,
    ) -> None:
        self.target = target
        self.input = input
        self.tracker = tracker
        self.cache = cache
        self.cache_key = cache_key
        self.scope = scope
        self.config = config
        self.run_id = run_id or uuid.uuid4().hex
        self.status: str | None = None
        self._question: str | None = None
        self._hit: Any = None
        self._lookup_error: Exception | None = None
        self._producer: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.tracker is not None:
            self.tracker.start_run(self.run_id)
        if self.cache is None:
            return
        try:
            self._question = (
                self.cache_key(self.input)
                if self.cache_key is not None
                else question_text(self.input)
            )
        except Exception as exc:  # reported as the stream's error event
            self._lookup_error = exc
            return
        if self.tracker is not None and getattr(self.cache, "tracker", None) is None:
            outcome: dict[str, Any] = {}
            async with self.tracker.span(stages.CACHE, run_id=self.run_id, attributes=outcome):
                self._hit = await self.cache.aget(self._question, scope=self.scope)
                outcome["hit"] = self._hit is not None
                outcome["status"] = cache_status(self._hit)
        else:  # a cache with its own tracker times the lookup itself
            self._hit = await self.cache.aget(self._question, scope=self.scope)
        self.status = cache_status(self._hit)

    async def events(self, heartbeat_s: float | None) -> AsyncIterator[Event]:
        """("meta"|"token"|"done"|"error"|"comment", data, event name, id) in stream order."""
        await self.start()
        seq = 0

        def event(kind: str, data: str, name: str | None = None) -> Event:
            nonlocal seq
            seq += 1
            return (kind, data, name, str(seq - 1))

        meta: dict[str, Any] = {"run_id": self.run_id}
        if self.cache is not None and self.status is not None:
            meta["cache"] = self.status
        yield event("meta", json.dumps(meta), META_EVENT)
        if self._lookup_error is not None:
            yield event("error", _error_payload(self._lookup_error), "error")
            return
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=256)
        self._producer = asyncio.create_task(self._produce(queue))
        while True:
            if heartbeat_s is None:
                kind, value = await queue.get()
            else:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), timeout=heartbeat_s)
                except asyncio.TimeoutError:
                    yield ("comment", "heartbeat", None, None)
                    continue
            if kind == "token":
                if self.tracker is not None:
                    self.tracker.first_token(self.run_id)
                yield event("token", value)
            elif kind == "error":
                yield event("error", _error_payload(value), "error")
                return
            else:
                yield event("done", DONE)
                return

    async def _produce(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        """Stream the cached answer or run the pipeline: ("token", text) ... ("end"|"error")."""
        token = self.tracker.set_current_run(self.run_id) if self.tracker is not None else None
        try:
            if self._hit is not None:
                for word in _split_words(str(self._hit.response)):
                    await queue.put(("token", word))
                await queue.put(("end", None))
                return
            parts: list[str] = []
            async for text in stream_text(self.target, self.input, self.config):
                parts.append(text)
                await queue.put(("token", text))
            if self.cache is not None and self._question is not None:
                await self.cache.aset(self._question, "".join(parts), scope=self.scope)
            await queue.put(("end", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the client as an error event
            logger.exception("streamed RAG request failed")
            await queue.put(("error", exc))
        finally:
            if self.tracker is not None and token is not None:
                self.tracker.reset_current_run(token)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None and not producer.done():
            producer.cancel()
        if producer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
        if self.tracker is not None and self._started:
            self.tracker.finish_run(self.run_id)


def _error_payload(exc: BaseException) -> str:
    return json.dumps({"error": type(exc).__name__, "message": str(exc)})


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
    retry: int | None = None,
) -> AsyncIterator[str]:
    """The SSE event strings of one answer (framework-free; :func:`sse` is the same stream).

    Heartbeat comments come from this generator itself here. Closing it early (a client that
    went away) cancels the pipeline task and finishes the tracker's run.
    """
    _check_seconds(heartbeat_s, "heartbeat_s")
    answer = _Answer(
        runnable_or_engine,
        input,
        tracker=tracker,
        cache=cache,
        cache_key=cache_key,
        scope=scope,
        config=config,
        run_id=run_id,
    )
    first = True
    try:
        async for kind, data, name, event_id in answer.events(heartbeat_s):
            if kind == "comment":
                yield HEARTBEAT
                continue
            yield format_event(data, name, event_id, retry if first else None)
            first = False
    finally:
        await answer.close()


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
    send_timeout: float | None = 30.0,
    retry: int | None = None,
) -> Any:
    """An sse-starlette ``EventSourceResponse`` of server-sent events for one answer.

    ``runnable_or_engine``: a LangChain Runnable (``astream``) or a LlamaIndex query engine
    (``aquery``). ``input``: what it takes (a question string or a dict). ``tracker``: records
    ``ttft``/``cache``/``total`` per request. ``heartbeat_s``: idle seconds before a heartbeat
    comment (sse-starlette's ping). ``cache``: a :class:`~rag_optimize.cache.SemanticCache`
    consulted first (the question comes from ``cache_key(input)`` or :func:`question_text`),
    ``scope`` its scope. ``config``: passed to ``astream`` (LangChain callbacks, tags).
    ``send_timeout``: seconds one send may block before the client counts as gone (None: no
    limit). ``retry``: the reconnection delay (ms) sent to the client. See the module docstring.
    """
    response_class, server_sent_event = _sse_starlette()
    _check_seconds(heartbeat_s, "heartbeat_s")
    _check_seconds(send_timeout, "send_timeout", allow_none=True)
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        raise ConfigurationError(f"retry must be an int >= 0 (milliseconds), got {retry!r}")
    answer = _Answer(
        runnable_or_engine,
        input,
        tracker=tracker,
        cache=cache,
        cache_key=cache_key,
        scope=scope,
        config=config,
        run_id=None,
    )

    async def body() -> AsyncIterator[Any]:
        first = True
        async for _kind, data, name, event_id in answer.events(None):
            yield server_sent_event(
                data, event=name, id=event_id, retry=retry if first else None, sep="\n"
            )
            first = False

    return response_class(
        answer,
        body(),
        headers={RUN_ID_HEADER: answer.run_id, **(headers or {})},
        ping=heartbeat_s,
        sep="\n",
        ping_message_factory=lambda: server_sent_event(comment="heartbeat", sep="\n"),
        send_timeout=send_timeout,
    )


@functools.cache
def _sse_starlette() -> tuple[Any, Any]:
    """Our ``EventSourceResponse`` subclass and sse-starlette's ``ServerSentEvent`` (imported
    on first use, so the core works without the ``streaming`` extra)."""
    try:
        from sse_starlette import EventSourceResponse, ServerSentEvent
        from sse_starlette.sse import SendTimeoutError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sse() needs sse-starlette: pip install 'rag-optimize[streaming]'"
        ) from exc

    class AnswerResponse(EventSourceResponse):
        """Looks the question up before the headers go out; always closes the answer."""

        def __init__(self, answer: _Answer, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.answer = answer

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await self.answer.start()
                if self.answer.status is not None:
                    self.headers[CACHE_HEADER] = self.answer.status
                await super().__call__(scope, receive, send)
            except SendTimeoutError:  # a client that stopped reading: close, do not raise
                logger.warning(
                    "SSE client stopped reading for %s s; stream %s closed",
                    self.send_timeout,
                    self.answer.run_id,
                )
            finally:
                await self.answer.close()

    return AnswerResponse, ServerSentEvent
