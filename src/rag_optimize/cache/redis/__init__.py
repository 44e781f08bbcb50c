"""The Redis wing of the cache: :class:`RedisStore` and what it is built from.

``store`` (the :class:`~rag_optimize.cache.store.Store` over Redis: lazy start, the drivers),
``options`` (its option groups, validated), ``server`` (what the server has; the clients),
``plans`` (the calls a plan yields, the rules both paths share), ``vsets`` (the server-side
path on Redis 8 vector sets, also on a cluster), ``mirrored`` (the mirror path for servers
without vector search: ``mirror``, the in-process vectors, and ``sync``, the change follower),
``codec`` (entries to and from Redis hashes, never pickle), ``scripts`` (the mirror layout's
Lua scripts), ``replicas`` (lookups on replicas, changes confirmed with ``WAIT``) and
``breaker`` (the circuit breaker that makes it fail open). Only
:class:`RedisStore` is public; the other modules may move.
"""

from rag_optimize.cache.redis.store import RedisStore

__all__ = ["RedisStore"]
