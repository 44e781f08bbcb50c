"""``with_semantic_cache``: cache a whole chain, question in, answer out.

Where :class:`~langchain_rag_optimize.SemanticLLMCache` caches single model calls (after
retrieval has already run and the prompt holds the retrieved context), this wrapper answers
a repeated or paraphrased question before any retrieval or model call happens.

- A hit returns the stored answer; when streamed, it is replayed in word-sized chunks (dict
  outputs: non-text fields first, then the text fields chunked), so streaming UIs behave
  the same on hits and misses.
- A miss runs the chain (streaming through when streamed) and stores the answer only if it
  finished without error and, when streamed, the caller consumed the whole stream. Partial
  or failed outputs are never stored.
- A compiled LangGraph graph works the same way for ``invoke``, ``stream``/``astream`` in
  the ``values``, ``updates``, ``messages`` and ``custom`` modes (and lists of them) and
  ``astream_events``: a miss records the run in every mode, a hit replays it in the mode the
  caller asked for (see ``langchain_rag_optimize._graph`` for what bypasses the cache).
- Every call is a LangChain run of its own, with the lookup as a child run
  (``semantic_cache_lookup``, output ``{"hit": ...}``), so tracers and
  ``LatencyCallbackHandler`` (stage ``cache``, attribute ``hit``) see hits too.
- The ids of the documents the answer used are stored as entry metadata ``source_ids`` (for
  ``cache.invalidate(source_ids=[...])``): every document any retriever inside the chain
  returned (seen through a callback handler) and every ``Document`` in the output (e.g. a
  ``"context"`` field). A document contributes ``Document.id`` (often assigned by the
  vector store) and ``metadata["id"]`` and ``metadata["source"]`` when present, so either
  the store's id or the app's own document id invalidates the answer.

Keys: ``key(input)`` is the question, compared by meaning. The exact part of the key is the
wrapped chain's identity (``namespace``), ``index_version`` and, with the default ``key``
on a dict input, every other input field (chat history, language, filters ...), so inputs
that differ in anything but the question never share an answer. A custom ``key`` should be
paired with ``exact_key`` when other input fields change the answer. Scopes are resolved as
in ``SemanticLLMCache``: ``scope=``, else ``cache_scope(...)``, else
``config["metadata"]["cache_scope"]`` of the call.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.runnables.utils import AddableDict

from langchain_rag_optimize import _flow as flow
from langchain_rag_optimize._graph import (
    RECORDED_MODES,
    Recording,
    StreamShape,
    invoke_cacheable,
    is_graph,
    stream_shape,
    with_question,
)
from langchain_rag_optimize._keys import (
    SCOPE_METADATA_KEY,
    ScopedKey,
    check_cache,
    fails_closed,
    resolve_user_scope,
    scoped_key,
)
from langchain_rag_optimize._serialization import NotCacheable, decode_value, encode_value
from langchain_rag_optimize.callbacks import STAGE_METADATA_KEY
from rag_optimize import CacheHit, SemanticCache
from rag_optimize.cache import DEFAULT_MIN_OVERLAP, check_min_overlap, digest, sources_agree
from rag_optimize.errors import InvalidInputError
from rag_optimize.tracing import stages

logger = logging.getLogger("rag_optimize.langchain")

QUESTION_FIELDS = ("question", "input", "query")
"""Input fields the default ``key`` reads the question from, in this order."""

_WORD_CHUNK = re.compile(r"\s*\S+\s*|\s+")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_UNSTORABLE = object()
_RECORD = list(RECORDED_MODES)

LOOKUP_RUN_NAME = "semantic_cache_lookup"
"""Name of the child run each cached call's lookup appears as (output: ``{"hit": ...}``)."""


@dataclass(frozen=True)
class _Hit:
    """A decoded cached answer and the core's hit record (similarity, decision)."""

    value: Any
    hit: CacheHit
    recording: Recording | None = None  # a LangGraph run, replayable to any stream mode


@dataclass
class _Miss:
    """What a miss needs to store its answer afterwards."""

    key: ScopedKey | None
    config: RunnableConfig
    sources: _SourceCollector = field(default_factory=lambda: _SourceCollector())


class _SourceCollector(BaseCallbackHandler):
    """Collects the ids of every document a retriever inside the chain returned."""

    run_inline = True

    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.ids.extend(_document_ids(documents))


def default_key(value: Any) -> str | None:
    """The question of a chain input: the input itself if a ``str``, else the first ``str``
    among ``input["question"]``, ``input["input"]``, ``input["query"]``; ``None`` if none."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in QUESTION_FIELDS:
            if isinstance(value.get(name), str):
                return cast(str, value[name])
    return None


def default_exact_key(value: Any) -> str:
    """Every field of a dict input except the question field, as canonical JSON."""
    if not isinstance(value, dict):
        return ""
    question_field = next((n for n in QUESTION_FIELDS if isinstance(value.get(n), str)), None)
    rest = {k: v for k, v in value.items() if k != question_field}
    try:
        return json.dumps(encode_value(rest), sort_keys=True)
    except NotCacheable:
        return _stable_repr(rest)


class SemanticCacheRunnable(Runnable[Any, Any]):
    """A runnable answering from a :class:`~rag_optimize.SemanticCache` before running
    ``runnable``; built by :func:`with_semantic_cache` (see the module docs)."""

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        cache: SemanticCache,
        *,
        key: Callable[[Any], str | None] | None = None,
        exact_key: Callable[[Any], str] | None = None,
        scope: str | None = None,
        scope_metadata_key: str = SCOPE_METADATA_KEY,
        namespace: str | None = None,
        index_version: str | None = None,
        ttl_seconds: float | None = None,
        confirm_with: Any = None,
        min_overlap: float = DEFAULT_MIN_OVERLAP,
    ) -> None:
        self.runnable = runnable
        self.confirm_with = None if confirm_with is None else coerce_to_runnable(confirm_with)
        self.min_overlap = check_min_overlap(min_overlap)
        self.evidence_rejections = 0
        self.cache = check_cache(cache)
        self.key = key or default_key
        if exact_key is None:
            exact_key = default_exact_key if key is None else (lambda _value: "")
        self.exact_key = exact_key
        self.scope = scope
        self.scope_metadata_key = scope_metadata_key
        self.namespace = namespace if namespace is not None else _stable_repr(runnable)
        self.index_version = index_version
        self.ttl_seconds = ttl_seconds
        self.name = f"SemanticCache[{runnable.get_name()}]"
        self._is_graph = is_graph(runnable)

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        """The wrapped runnable's input type."""
        return self.runnable.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802 - LangChain's name
        """The wrapped runnable's output type."""
        return self.runnable.OutputType

    # ---------------------------------------------------------------- invoke
    # Every call is a LangChain run of its own (so tracers see hits, which never reach the
    # wrapped chain), with the lookup as a child run whose output says ``hit``. Each flow is
    # a plan (``_flow``) written once, run blocking or awaited.
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """The cached answer to ``input``'s question, else the chain's (then stored)."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke`."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(
        self,
        input: Any,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        return flow.result(self._invoke_plan(input, run_manager, config, kwargs))

    async def _ainvoke(
        self,
        input: Any,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        return await flow.aresult(self._invoke_plan(input, run_manager, config, kwargs))

    def _invoke_plan(
        self, input: Any, run_manager: Any, config: RunnableConfig, kwargs: dict[str, Any]
    ) -> flow.Plan[Any]:
        """Look up; on a miss run the chain (a graph is streamed in every recorded mode,
        so a later hit can replay any of them) and store its answer."""
        graph = self._is_graph and invoke_cacheable(config, kwargs)
        key = self._key(input, config) if graph or not self._is_graph else None
        hit = yield from self._lookup(key, run_manager)
        if hit is not None:
            return self._answer(hit, input)
        miss = self._miss(key, config)
        if graph:
            recording = Recording()
            stream = yield self._open(input, miss.config, stream_mode=_RECORD)
            while (item := (yield flow.Next(stream))) is not flow.END:
                mode, chunk = item
                recording.add(mode, chunk)
            yield from self._store(miss, recording.final(), recording)
            return recording.final()
        runnable = self.runnable
        output = yield flow.Call(runnable.invoke, runnable.ainvoke, input, miss.config, **kwargs)
        yield from self._store(miss, output)
        return output

    # ---------------------------------------------------------------- stream
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Replay a hit in chunks, or stream the chain and store the complete answer.

        A LangGraph graph is replayed in the requested ``stream_mode`` (or list of modes),
        whichever mode the stored run was consumed in (see ``_graph``)."""
        yield from self._transform_stream_with_config(iter([input]), self._stream, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        async for chunk in self._atransform_stream_with_config(
            _aiter_of(input), self._astream, config, **kwargs
        ):
            yield chunk

    def _stream(
        self,
        inputs: Iterator[Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        yield from flow.steps(self._stream_plan(next(inputs), run_manager, config, kwargs))

    async def _astream(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        plan = self._stream_plan(await anext(inputs), run_manager, config, kwargs)
        async for chunk in flow.asteps(plan):
            yield chunk

    def _stream_plan(
        self, input: Any, run_manager: Any, config: RunnableConfig, kwargs: dict[str, Any]
    ) -> flow.Plan[None]:
        """Replay a hit, or stream the chain through (a graph: recorded in every mode,
        passed on in the caller's) and store the answer once the stream is complete."""
        shape = stream_shape(self.runnable, config, kwargs) if self._is_graph else None
        key = self._key(input, config) if shape is not None or not self._is_graph else None
        hit = yield from self._lookup(key, run_manager, need_recording=shape is not None)
        if hit is not None:
            for chunk in self._replay_hit(hit, input, shape):
                yield flow.Emit(chunk)
            return
        miss = self._miss(key, config)
        if shape is not None:
            recording = Recording()
            stream = yield self._open(input, miss.config, **{**kwargs, "stream_mode": _RECORD})
            while (item := (yield flow.Next(stream))) is not flow.END:
                mode, chunk = item
                recording.add(mode, chunk)
                if mode in shape.modes:
                    yield flow.Emit((mode, chunk) if shape.pairs else chunk)
            yield from self._store(miss, recording.final(), recording)
            return
        total: Any = None
        stream = yield self._open(input, miss.config, **kwargs)
        while (chunk := (yield flow.Next(stream))) is not flow.END:
            total = _add(total, chunk)
            yield flow.Emit(chunk)
        yield from self._store(miss, total)

    def _open(self, input: Any, config: RunnableConfig, **kwargs: Any) -> flow.Open:
        """The step that opens the wrapped runnable's stream (``stream``/``astream``)."""
        return flow.Open(self.runnable.stream, self.runnable.astream, input, config, **kwargs)

    # ---------------------------------------------------------------- lookup
    def _lookup(
        self, key: ScopedKey | None, run_manager: Any, need_recording: bool = False
    ) -> flow.Plan[_Hit | None]:
        """The usable hit for ``key`` (or None), looked up as a child run of ``run_manager``."""
        if key is None:
            return None
        manager = _lookup_callbacks(run_manager.get_child())
        run = yield flow.callback(
            manager.on_chain_start, None, {"question": key.question}, name=LOOKUP_RUN_NAME
        )
        try:
            hit = _usable((yield from self._get(key)), need_recording)
        except GeneratorExit:
            raise
        except BaseException as exc:
            yield flow.callback(run.on_chain_error, exc)
            raise
        yield flow.callback(run.on_chain_end, _lookup_output(hit))
        return hit

    def _answer(self, hit: _Hit, input: Any) -> Any:
        """What ``invoke`` returns for a hit: the stored value (a graph's final state, with
        the caller's question in it)."""
        if self._is_graph:
            return with_question(hit.value, _question_field(input, self.key), self.key(input))
        return hit.value

    def _replay_hit(self, hit: _Hit, input: Any, shape: StreamShape | None) -> Iterator[Any]:
        if shape is not None and hit.recording is not None:
            field_name = _question_field(input, self.key)
            return hit.recording.replay(shape, field_name, self.key(input))
        return _replay(hit.value)

    # ----------------------------------------------------------------- batch
    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        """Answer hits from the cache; send only the misses to the chain, as one batch."""
        return flow.result(self._batch_plan(inputs, config, return_exceptions, kwargs))

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        """Async :meth:`batch` (the lookups run concurrently)."""
        return await flow.aresult(self._batch_plan(inputs, config, return_exceptions, kwargs))

    def _batch_plan(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None,
        return_exceptions: bool,
        kwargs: dict[str, Any],
    ) -> flow.Plan[list[Any]]:
        batch = _Batch(self, inputs, config)
        batch.found((yield flow.All([self._get(k) for k in batch.keys])))
        if batch.todo:
            runnable = self.runnable
            outputs = yield flow.Call(
                runnable.batch,
                runnable.abatch,
                batch.miss_inputs,
                batch.miss_configs,
                return_exceptions=return_exceptions,
                **kwargs,
            )
            for miss, output in batch.answered(outputs):
                yield from self._store(miss, output)
        return batch.results

    # ---------------------------------------------------------------- extras
    def invalidate(self, scope: str | None = None) -> int:
        """Drop every entry written under user scope ``scope`` (``None``: the active
        ``cache_scope`` or the default scope), for every chain and input; returns how many
        (``SemanticCache.invalidate(scope)``: a scope holds all its exact parts)."""
        return self.cache.invalidate(scope)

    async def ainvalidate(self, scope: str | None = None) -> int:
        """Async :meth:`invalidate`."""
        return await self.cache.ainvalidate(scope)

    # ------------------------------------------------------------- internals
    def _key(self, value: Any, config: RunnableConfig | None) -> ScopedKey | None:
        question = self.key(value)
        if question is None or not question.strip():
            logger.debug("semantic chain cache: no question in input, not cached")
            return None
        user_scope = resolve_user_scope(self.scope, config, self.scope_metadata_key)
        if fails_closed(self.cache, user_scope):
            return None
        exact = digest("chain", self.namespace, self.exact_key(value))
        return scoped_key(question, user_scope, exact, self.index_version)

    def _get(self, key: ScopedKey | None) -> flow.Plan[_Hit | None]:
        """The decoded hit for ``key``; a semantic hit is confirmed by ``confirm_with``
        when one is given."""
        if key is None:
            return None
        cache = self.cache
        found = yield flow.Call(
            cache.get, cache.aget, key.question, scope=key.scope, exact=key.exact
        )
        hit = _revive(found)
        if hit is None or self.confirm_with is None or hit.hit.exact:
            return hit
        confirm = self.confirm_with
        try:
            documents = yield flow.Call(confirm.invoke, confirm.ainvoke, key.question)
        except Exception as exc:  # noqa: BLE001 - evidence that cannot be had vetoes
            self._unconfirmed(exc)
            return None
        return self._confirmed(hit, documents)

    def _confirmed(self, hit: _Hit, documents: Any) -> _Hit | None:
        """``hit`` if the new question's retrieval agrees with its sources (recorded in the
        hit's decision), else None: the chain runs (rag_optimize.cache.decision.evidence)."""
        retrieved = [_primary_id(d) for d in _documents_in(documents)]
        vote = sources_agree(
            hit.hit.metadata.get("source_ids"), [i for i in retrieved if i], self.min_overlap
        )
        decision = hit.hit.metadata.get("cache_decision")
        if isinstance(decision, dict):
            decision["evidence"] = vote.as_dict()
        if vote.agree:
            return hit
        self.evidence_rejections += 1
        logger.debug("semantic chain cache: retrieval does not confirm the hit: %s", vote.reason)
        return None

    def _unconfirmed(self, exc: Exception) -> None:
        self.evidence_rejections += 1
        logger.warning("semantic chain cache: confirming retriever failed, not served: %s", exc)

    def _miss(self, key: ScopedKey | None, config: RunnableConfig | None) -> _Miss:
        config = ensure_config(config)
        miss = _Miss(key, config)
        if key is not None:
            miss.config = _with_handler(config, miss.sources)
        return miss

    def _entry(
        self, miss: _Miss, output: Any, recording: Recording | None = None
    ) -> tuple[Any, dict[str, Any]] | None:
        if miss.key is None or output is _UNSTORABLE or output is None:
            return None
        if isinstance(output, BaseMessageChunk):
            output = message_chunk_to_message(output)
        try:
            response = {"text": _answer_text(output), "value": encode_value(output)}
            if recording is not None:
                response["graph"] = recording.encode()
        except NotCacheable as exc:
            logger.debug("semantic chain cache: answer not cached: %s", exc)
            return None
        sources = list(dict.fromkeys([*miss.sources.ids, *_document_ids(_documents_in(output))]))
        metadata: dict[str, Any] = {"source_ids": sources}
        if self.index_version is not None:
            metadata["index_version"] = self.index_version
        return response, metadata

    def _store(
        self, miss: _Miss, output: Any, recording: Recording | None = None
    ) -> flow.Plan[None]:
        """Store a complete answer (nothing for an input without a key, or an answer that
        cannot be stored)."""
        entry = self._entry(miss, output, recording)
        if entry is not None and miss.key is not None:
            cache = self.cache
            yield flow.Call(
                cache.set,
                cache.aset,
                miss.key.question,
                entry[0],
                scope=miss.key.scope,
                exact=miss.key.exact,
                metadata=entry[1],
                ttl_seconds=self.ttl_seconds,
            )


class _Batch:
    """Which batch inputs were answered by the cache and which go to the chain."""

    def __init__(
        self,
        owner: SemanticCacheRunnable,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None,
    ) -> None:
        self.owner = owner
        self.inputs = inputs
        self.configs = get_config_list(config, len(inputs)) if inputs else []
        self.keys = [owner._key(i, c) for i, c in zip(inputs, self.configs, strict=True)]
        self.results: list[Any] = []
        self.todo: list[int] = []
        self.misses: dict[int, _Miss] = {}

    def found(self, hits: list[_Hit | None]) -> None:
        self.results = [None if hit is None else hit.value for hit in hits]
        self.todo = [n for n, hit in enumerate(hits) if hit is None]
        self.misses = {n: self.owner._miss(self.keys[n], self.configs[n]) for n in self.todo}

    @property
    def miss_inputs(self) -> list[Any]:
        return [self.inputs[n] for n in self.todo]

    @property
    def miss_configs(self) -> list[RunnableConfig]:
        return [self.misses[n].config for n in self.todo]

    def answered(self, outputs: list[Any]) -> list[tuple[_Miss, Any]]:
        """Put the chain's outputs in place; the (miss, output) pairs worth storing."""
        stored = []
        for n, output in zip(self.todo, outputs, strict=True):
            self.results[n] = output
            if not isinstance(output, Exception):
                stored.append((self.misses[n], output))
        return stored


def with_semantic_cache(
    runnable: Any,
    cache: SemanticCache,
    key: Callable[[Any], str | None] | None = None,
    *,
    exact_key: Callable[[Any], str] | None = None,
    scope: str | None = None,
    scope_metadata_key: str = SCOPE_METADATA_KEY,
    namespace: str | None = None,
    index_version: str | None = None,
    ttl_seconds: float | None = None,
    confirm_with: Any = None,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> SemanticCacheRunnable:
    """Wrap ``runnable`` (any LCEL chain, question in, answer out) with ``cache``.

    Args:
        runnable: the chain; anything ``coerce_to_runnable`` accepts.
        cache: the :class:`~rag_optimize.SemanticCache` to answer from.
        key: extracts the question from the input (default :func:`default_key`). An input
            without a question bypasses the cache.
        exact_key: input -> str that must match exactly (default: every other field of a
            dict input, with the default ``key``; nothing with a custom ``key``).
        scope: a fixed user scope; ``None`` resolves it per call (see the module docs).
        scope_metadata_key: the ``RunnableConfig`` metadata key holding a scope.
        namespace: the chain's identity in the exact part (default: the chain's ``repr``
            with memory addresses removed).
        index_version: version of the data behind the chain; exact part and entry metadata.
        ttl_seconds: lifetime of the entries written here (default: the cache's).
        confirm_with: a retriever: a semantic hit is served only when the new question's
            retrieval returns the cached answer's sources (at least ``min_overlap`` of the
            retrieved documents, default 0.5); see :mod:`rag_optimize.cache.decision.evidence`.

    Example::

        cached = with_semantic_cache(prompt | llm | StrOutputParser(), cache)
        cached.invoke({"question": "How do I reset my password?"})
    """
    return SemanticCacheRunnable(
        coerce_to_runnable(runnable),
        cache,
        key=key,
        exact_key=exact_key,
        scope=scope,
        scope_metadata_key=scope_metadata_key,
        namespace=namespace,
        index_version=index_version,
        ttl_seconds=ttl_seconds,
        confirm_with=confirm_with,
        min_overlap=min_overlap,
    )


def _with_handler(config: RunnableConfig, handler: BaseCallbackHandler) -> RunnableConfig:
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        new_callbacks: Any = manager
    else:
        new_callbacks = [*(callbacks or []), handler]
    return cast(RunnableConfig, {**config, "callbacks": new_callbacks})


def _lookup_callbacks(manager: Any) -> Any:
    """``manager`` marked so latency handlers time its run as the ``cache`` stage."""
    manager.add_metadata({STAGE_METADATA_KEY: stages.CACHE}, inherit=False)
    return manager


def _usable(hit: _Hit | None, need_recording: bool) -> _Hit | None:
    """A graph stream can only replay an entry that holds a graph recording."""
    if hit is not None and need_recording and hit.recording is None:
        logger.debug("semantic chain cache: entry has no graph recording, treated as a miss")
        return None
    return hit


def _lookup_output(hit: _Hit | None) -> dict[str, Any]:
    """The lookup run's output, for tracers: ``hit`` and, on a hit, how close it was."""
    if hit is None:
        return {"hit": False}
    return {
        "hit": True,
        "similarity": hit.hit.similarity,
        "matched_query": hit.hit.matched_query,
        "exact": hit.hit.exact,
    }


def _question_field(value: Any, key: Callable[[Any], str | None]) -> str | None:
    """The input field the default ``key`` read the question from (None for a custom key)."""
    if key is not default_key or not isinstance(value, dict):
        return None
    return next((n for n in QUESTION_FIELDS if isinstance(value.get(n), str)), None)


async def _aiter_of(value: Any) -> AsyncIterator[Any]:
    yield value


def _revive(hit: CacheHit | None) -> _Hit | None:
    """The stored answer of ``hit``; a malformed entry counts as a miss (logged)."""
    if hit is None:
        return None
    try:
        if not isinstance(hit.response, dict) or "value" not in hit.response:
            raise InvalidInputError("no 'value' field")
        graph = hit.response.get("graph")
        recording = Recording.decode(graph) if graph is not None else None
        return _Hit(decode_value(hit.response["value"]), hit, recording)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("semantic chain cache: ignoring a malformed entry: %s", exc)
        return None


def _answer_text(output: Any) -> str:
    """The text of an answer, for judges comparing a cached and a fresh answer."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage) and isinstance(output.content, str):
        return output.content
    if isinstance(output, dict):
        for name in ("answer", "output", "text", "content", "result"):
            if isinstance(output.get(name), str):
                return str(output[name])
    return ""


def _add(total: Any, chunk: Any) -> Any:
    """Accumulate stream chunks the way LangChain does; ``_UNSTORABLE`` if they do not add."""
    if total is _UNSTORABLE:
        return total
    if total is None:
        return AddableDict(chunk) if isinstance(chunk, dict) else chunk
    try:
        if isinstance(total, dict) and isinstance(chunk, dict):
            return AddableDict(total) + AddableDict(chunk)
        return total + chunk
    except TypeError:
        return _UNSTORABLE


def _replay(value: Any) -> Iterator[Any]:
    """A stored answer as stream chunks that add up to it."""
    if isinstance(value, str):
        yield from _WORD_CHUNK.findall(value) or [value]
    elif isinstance(value, dict):
        rest = AddableDict({k: v for k, v in value.items() if not isinstance(v, str)})
        if rest or not value:
            yield rest
        for name, text in value.items():
            if isinstance(text, str):
                for piece in _WORD_CHUNK.findall(text) or [text]:
                    yield AddableDict({name: piece})
    else:
        yield value


def _documents_in(value: Any) -> list[Document]:
    if isinstance(value, Document):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in _documents_in(v)]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in _documents_in(v)]
    return []


def _document_ids(documents: Sequence[Any]) -> list[str]:
    ids = []
    for doc in documents:
        if not isinstance(doc, Document):
            continue
        for found in (doc.id, doc.metadata.get("id"), doc.metadata.get("source")):
            if found is not None and str(found) not in ids:
                ids.append(str(found))
    return ids


def _primary_id(doc: Document) -> str | None:
    """The id a retrieved document is matched by: ``Document.id``, else ``metadata["id"]``,
    else ``metadata["source"]``."""
    for found in (doc.id, doc.metadata.get("id"), doc.metadata.get("source")):
        if found is not None:
            return str(found)
    return None


def _stable_repr(value: Any) -> str:
    """``repr`` without memory addresses, so it is the same in every process."""
    return _ADDRESS.sub("", repr(value))


__all__ = ["SemanticCacheRunnable", "default_exact_key", "default_key", "with_semantic_cache"]
