"""Checks of user input shared by every component (the cache, the retrievers, the adapters).

Each check returns the value it accepted or raises an error from :mod:`rag_optimize.errors`
naming the bad value; wrong types raise :class:`~rag_optimize.errors.InvalidTypeError`, which
is both a ``ValueError`` (like every input error here) and a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping

from rag_optimize.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidTypeError,
    UnknownOptionError,
)

__all__ = ["check_int", "check_options", "check_query"]


def check_query(query: object) -> str:
    """Return ``query`` if it is a non-blank ``str``, else raise a clear error."""
    if not isinstance(query, str):
        raise InvalidTypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query is empty (or only whitespace)")
    return query


def check_int(name: str, value: object, least: int) -> int:
    """Return the option ``value`` if it is an ``int`` (not a bool) >= ``least``, else raise a
    :class:`~rag_optimize.errors.ConfigurationError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def check_options(options: Mapping[str, object], allowed: type, owner: str) -> None:
    """Refuse keyword ``options`` that the ``TypedDict`` ``allowed`` does not declare, with
    an :class:`~rag_optimize.errors.UnknownOptionError` naming each and listing the valid
    ones (``owner`` is who takes them, for the message)."""
    known = getattr(allowed, "__annotations__", {})
    unknown = sorted(name for name in options if name not in known)
    if unknown:
        raise UnknownOptionError(
            f"{owner} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(known))}"
        )
