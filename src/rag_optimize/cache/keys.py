"""How queries and scopes become lookup keys."""

from __future__ import annotations

import hashlib

from rag_optimize.errors import InvalidInputError

DEFAULT_SCOPE = ""


def check_query(query: object) -> str:
    """Return ``query`` if it is a non-empty string, else raise a clear error."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query is empty (or only whitespace)")
    return query


def normalise_query(query: str) -> str:
    """The exact-match key of a query: whitespace collapsed, case folded.

    Two queries with the same key are answered from a hash lookup without embedding.
    """
    return " ".join(query.split()).casefold()


def check_scope(scope: object) -> str:
    """Return the scope as a string; ``None`` is the default (shared) scope."""
    if scope is None:
        return DEFAULT_SCOPE
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a str or None, got {type(scope).__name__}")
    return scope


def digest(*parts: str) -> str:
    """A short, collision-resistant hex digest of ``parts`` (unambiguous concatenation)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
