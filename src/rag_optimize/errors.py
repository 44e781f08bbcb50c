"""One exception hierarchy for the whole package.

Every error raised on purpose by rag-optimize derives from :class:`RagOptimizeError`, so an
application can catch the package's errors in one place. Input errors also derive from the
built-in ``ValueError`` / ``TypeError`` so code written against the standard contract keeps
working.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EmbeddingError",
    "InvalidInputError",
    "InvalidTypeError",
    "InvalidVectorError",
    "QueueFull",
    "RagOptimizeError",
    "RetrievalError",
    "StoreError",
    "UnknownOptionError",
]


class RagOptimizeError(Exception):
    """Base class of every error rag-optimize raises on purpose."""


class ConfigurationError(RagOptimizeError, ValueError):
    """An option passed to a component is out of range or unknown."""


class InvalidInputError(RagOptimizeError, ValueError):
    """A call received a value it cannot work with (empty query, bad k, ...)."""


class InvalidVectorError(InvalidInputError):
    """A vector is empty, contains NaN/inf, is all zeros, or has the wrong dimension."""


class EmbeddingError(RagOptimizeError):
    """The wrapped embedding model failed."""


class StoreError(RagOptimizeError):
    """A cache store backend failed (connection lost, timeout, corrupt data)."""


class QueueFull(RagOptimizeError):
    """A bounded queue is full and the caller asked not to wait."""


class RetrievalError(RagOptimizeError):
    """Retrieval could not produce any result (for example every branch failed)."""


class InvalidTypeError(InvalidInputError, TypeError):
    """A call received a value of the wrong type (a number where a str belongs, ...).

    Also a ``TypeError``, so code that caught the built-in error keeps working."""


class UnknownOptionError(ConfigurationError, TypeError):
    """A keyword option that the component does not have (a misspelt ``threshhold=``).

    Also a ``TypeError``, what Python raises for an unexpected keyword argument, so code
    that caught that keeps working."""
