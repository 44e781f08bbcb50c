"""Commands on the store's own plain clients, sent and read on a pooled connection.

redis-py's per-command layer (the retry wrapper, the deprecated-argument check, the
observability hooks, the maintenance-notification check) is Python the store does not need:
skipping it saved 8-9 us a call in a tight loop of empty scripts, and 0.06-0.10 ms a semantic
lookup at 100k entries, where that code runs right after the local scan (its instructions and
data likely out of the caches by then); 0.01-0.02 ms an exact repeat (BENCHMARKS.md, issue 14:
``cache_redis_round_trip.py``, ``cache_redis_client.py``). The clients the store makes
itself (:func:`own`) never retry and record nothing, so their commands skip that layer: a
connection is taken from the pool, the command is sent, its reply read and the connection
given back. redis-py still connects, health-checks and, on any socket error or
interruption, disconnects the connection (it is never handed back with an unread reply).

Every other client (the caller's own, a cluster client, a single-connection client, a
pipeline) goes through ``execute_command`` as before, so its retries and instrumentation
apply.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["aexecute", "execute", "own"]

_OWNED: weakref.WeakSet[Any] = weakref.WeakSet()


def own(client: Any) -> Any:
    """Mark ``client`` (a plain ``redis.Redis`` or ``redis.asyncio.Redis`` the store made,
    with no retries) as one whose commands may skip redis-py's per-command layer."""
    if getattr(client, "connection", None) is None:  # not a single-connection client
        _OWNED.add(client)
    return client


def execute(client: Any, *command: Any) -> Any:
    """``client.execute_command(*command)``; on a client marked by :func:`own`, sent and
    read on a pooled connection directly (the same reply, raised errors included)."""
    if client not in _OWNED:
        return client.execute_command(*command)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_command(*command)
        return conn.read_response()
    finally:
        pool.release(conn)


async def aexecute(client: Any, *command: Any) -> Any:
    """Async twin of :func:`execute` for ``redis.asyncio`` clients."""
    if client not in _OWNED:
        return await client.execute_command(*command)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_command(*command)
        return await conn.read_response()
    finally:
        await pool.release(conn)
