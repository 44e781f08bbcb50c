"""Scopes without plumbing: a scope set once for a block of code (a request, a tenant).

``with cache_scope("tenant-a"): chain.invoke(...)`` makes every cache lookup and write in
that block, in this thread or task, use scope ``"tenant-a"`` when the call itself names no
scope. It works through LangChain's global ``set_llm_cache`` because the value travels in a
``contextvars.ContextVar``, which asyncio tasks and LangChain's thread pools copy.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from rag_optimize.cache.keys import check_scope
from rag_optimize.errors import InvalidTypeError

__all__ = ["cache_scope", "current_scope"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rag_optimize_cache_scope", default=None
)


@contextmanager
def cache_scope(scope: str) -> Iterator[str]:
    """Use ``scope`` for cache calls in this block that do not pass one explicitly."""
    if scope is None:
        raise InvalidTypeError("cache_scope() needs a str scope, got None")
    token = _current.set(check_scope(scope))
    try:
        yield scope
    finally:
        _current.reset(token)


def current_scope() -> str | None:
    """The scope set by the innermost active :func:`cache_scope`, or ``None``."""
    return _current.get()
