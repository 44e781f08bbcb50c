"""The records the cache stores and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag_optimize.cache.decision.words import QueryWords
from rag_optimize.embedding.vectors import FloatVector

__all__ = ["CacheEntry", "CacheHit", "Candidate"]


@dataclass(slots=True)
class CacheEntry:
    """One cached answer.

    ``response`` and ``metadata`` must be JSON-serialisable so the same entry can live in
    any store (in-process or Redis) unchanged. ``threshold`` is the entry's own decision
    threshold when it has one (learned from feedback), else the cache's is used.
    ``partition`` is the digest of the call's exact part (``exact=``, see
    :func:`~rag_optimize.cache.keys.exact_digest`), ``""`` when it had none: a store only
    ever answers a lookup from entries of the same ``scope`` *and* ``partition``.
    ``words``: the query's word vectors for the decision's token alignment, when the cache
    had them at write time (see :mod:`~rag_optimize.cache.decision.words`); ``None`` makes
    alignment compute them if it needs them.
    """

    id: str
    scope: str
    query: str
    query_key: str
    vector: FloatVector
    response: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float | None = None
    threshold: float | None = None
    partition: str = ""
    words: QueryWords | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A nearest-neighbour match found by a store's vector search, before any decision."""

    entry_id: str
    similarity: float
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What a lookup that found an answer returns.

    ``similarity`` is the cosine similarity between the query and ``matched_query`` (1.0 for
    an exact repeat); ``age_seconds`` is how long ago the answer was stored; ``metadata``
    carries what was stored with the answer plus the decision (``threshold``, ``exact``).
    """

    response: Any
    similarity: float
    matched_query: str
    age_seconds: float
    metadata: dict[str, Any]
    entry_id: str = ""
    scope: str = ""
    exact: bool = False
