"""Checks of user input shared by every component (the cache, the retrievers, the adapters).

Each check returns the value it accepted or raises an error from :mod:`rag_optimize.errors`
naming the bad value; wrong types raise :class:`~rag_optimize.errors.InvalidTypeError`, which
is both a ``ValueError`` (like every input error here) and a ``TypeError``.
"""

from __future__ import annotations

from rag_optimize.errors import InvalidInputError, InvalidTypeError

__all__ = ["check_query"]


def check_query(query: object) -> str:
    """Return ``query`` if it is a non-blank ``str``, else raise a clear error."""
    if not isinstance(query, str):
        raise InvalidTypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query is empty (or only whitespace)")
    return query
