"""Judges: decide whether a cached answer would have been right, given the model's real one.

A judge is any callable ``judge(query, cached_answer, fresh_answer) -> bool``. Shadow mode and
the error budget's probes call it when the model's real answer for a query arrives (the
``set`` that follows a lookup) and compare it with the stored answer the cache would have
served. An object may also define ``async ajudge(...)`` to be used by the async methods;
otherwise a plain function runs in a worker thread there, and a coroutine function is awaited.

* :class:`ExactMatchJudge`: equal after whitespace/case normalisation. Right for answers that
  are ids or short facts; for generated prose it calls every paraphrased answer wrong.
* :class:`EmbeddingJudge` (the default): cosine similarity of the two answers' embeddings at
  least ``min_similarity``. Cheap and model-free, but itself a similarity threshold: two
  answers that differ in one number look alike. Use an LLM judge where that matters.
* An LLM judge is any callable, e.g. ``lambda q, a, b: llm.invoke(prompt(q, a, b)) == "yes"``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rag_optimize.embedding.protocol import Embedder, aembed_query, check_embedder
from rag_optimize.embedding.vectors import unit_vector
from rag_optimize.errors import ConfigurationError, InvalidTypeError

Judge = Callable[[str, Any, Any], bool | Awaitable[bool]]
"""``judge(query, cached_answer, fresh_answer) -> bool``: was the cached answer right?
(A coroutine function is allowed; it is only usable from the async methods.)"""


def answer_text(answer: Any) -> str:
    """The text a judge compares: a str as is, a dict's ``"text"``/``"content"`` when it is a
    str, anything else as canonical JSON."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, dict):
        for key in ("text", "content", "answer"):
            if isinstance(answer.get(key), str):
                return str(answer[key])
    return json.dumps(answer, sort_keys=True, default=str)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


class ExactMatchJudge:
    """Right when the two answers are equal after whitespace and case normalisation."""

    def __call__(self, query: str, cached: Any, fresh: Any) -> bool:
        return _normalise(answer_text(cached)) == _normalise(answer_text(fresh))

    async def ajudge(self, query: str, cached: Any, fresh: Any) -> bool:
        """Async twin (no I/O)."""
        return self(query, cached, fresh)


class EmbeddingJudge:
    """Right when the answers' embeddings have cosine similarity >= ``min_similarity``.

    Identical answers (after normalisation) are right without calling the model.
    """

    def __init__(self, embedder: Embedder, min_similarity: float = 0.9) -> None:
        if not (0.0 < min_similarity <= 1.0):
            raise ConfigurationError(f"min_similarity must be in (0, 1], got {min_similarity}")
        self.embedder = check_embedder(embedder)
        self.min_similarity = min_similarity

    def __call__(self, query: str, cached: Any, fresh: Any) -> bool:
        a, b = answer_text(cached), answer_text(fresh)
        if _normalise(a) == _normalise(b):
            return True
        va, vb = self.embedder.embed_documents([a, b])
        return self._close(va, vb)

    async def ajudge(self, query: str, cached: Any, fresh: Any) -> bool:
        """Async twin: embeds with the embedder's native async method when it has one."""
        a, b = answer_text(cached), answer_text(fresh)
        if _normalise(a) == _normalise(b):
            return True
        va, vb = await asyncio.gather(
            aembed_query(self.embedder, a), aembed_query(self.embedder, b)
        )
        return self._close(va, vb)

    def _close(self, va: Any, vb: Any) -> bool:
        return float(np.dot(unit_vector(va), unit_vector(vb))) >= self.min_similarity


async def ajudge(judge: Judge, query: str, cached: Any, fresh: Any) -> bool:
    """Run any judge from async code without blocking the event loop."""
    native = getattr(judge, "ajudge", None)
    if native is not None:
        return bool(await native(query, cached, fresh))
    if inspect.iscoroutinefunction(judge):
        return bool(await judge(query, cached, fresh))
    verdict = await asyncio.to_thread(judge, query, cached, fresh)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


def judge_now(judge: Judge, query: str, cached: Any, fresh: Any) -> bool:
    """Run a judge from sync code; an async-only judge is an error here (use ``aset``)."""
    verdict = judge(query, cached, fresh)
    if inspect.isawaitable(verdict):
        close = getattr(verdict, "close", None)
        if close is not None:
            close()
        raise InvalidTypeError(
            "this judge is async; it can only judge writes made with aset(), not set()"
        )
    return bool(verdict)


def check_judge(judge: object) -> Judge:
    """``judge`` if it is callable, else a clear error."""
    if not callable(judge):
        raise InvalidTypeError(
            f"judge must be a callable judge(query, cached_answer, fresh_answer) -> bool, "
            f"got {type(judge).__name__}"
        )
    return judge
