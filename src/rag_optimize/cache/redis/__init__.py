"""The Redis wing of the cache: :class:`RedisStore` and what it is built from.

``store`` (the :class:`~rag_optimize.cache.store.Store` over Redis, each operation a plan run by
a sync and an async driver), ``codec`` (entries to and from Redis hashes, never pickle),
``scripts`` (the Lua scripts), ``mirror`` (the in-process vector mirror), ``sync`` (the change
follower that keeps the mirror current) and ``breaker`` (the circuit breaker that makes it fail
open). Only :class:`RedisStore` is public; the other modules may move.
"""

from rag_optimize.cache.redis.store import RedisStore

__all__ = ["RedisStore"]
