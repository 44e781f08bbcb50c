"""The store's own clients send commands on a pooled connection (``cache/redis/direct.py``):
the same replies and errors as ``execute_command``, a connection never handed back with an
unread reply, and other clients untouched. Against a real Redis 7 server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError, TimeoutError

from rag_optimize.cache.redis.direct import aexecute, execute, own
from rag_optimize.cache.redis.scripts import LuaScript, arun_script, run_script
from rag_optimize.cache.redis.server import async_client, sync_client
from tests.redis_server import RedisServer, redis_server  # noqa: F401

# busy for ~0.3 s on the server, then answers: a reply that arrives after a client timeout
SLOW = "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] " \
       "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 300000 return 'late'"


class Counting(redis.Redis):
    """A caller's client whose ``execute_command`` counts its calls."""

    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).calls += 1
        return super().execute_command(*args, **options)


def test_own_clients_answer_as_execute_command(redis_server: RedisServer) -> None:  # noqa: F811
    client = sync_client(redis_server.url, {"socket_timeout": 2.0}, cluster=False)
    plain = redis.Redis.from_url(redis_server.url)
    try:
        for c in (client, plain):
            execute(c, "DEL", "direct:h")
            execute(c, "HSET", "direct:h", "a", "1", "b", b"\x00\xff")
        script = "return {redis.call('HGETALL', KEYS[1]), 7, {'x', false}}"
        assert execute(client, "HGETALL", "direct:h") == plain.execute_command(
            "HGETALL", "direct:h"
        )
        assert execute(client, "EVAL", script, 1, "direct:h") == plain.execute_command(
            "EVAL", script, 1, "direct:h"
        )
        assert execute(client, "GET", "direct:missing") is None
    finally:
        client.close()
        plain.close()


def test_an_error_reply_is_raised_and_the_connection_stays_usable(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = sync_client(redis_server.url, {"socket_timeout": 2.0}, cluster=False)
    try:
        execute(client, "SET", "direct:s", "v")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            execute(client, "HGET", "direct:s", "f")
        assert execute(client, "GET", "direct:s") == b"v"
        pool = client.connection_pool
        assert len(pool._in_use_connections) == 0  # every connection was given back
    finally:
        client.close()


def test_a_timed_out_reply_is_never_read_by_the_next_command(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = sync_client(redis_server.url, {"socket_timeout": 0.05}, cluster=False)
    try:
        execute(client, "SET", "direct:t", "right")
        with pytest.raises(TimeoutError):
            execute(client, "EVAL", SLOW, 0)
        time.sleep(0.4)  # the late reply has arrived on the timed-out socket by now
        assert execute(client, "GET", "direct:t") == b"right"
    finally:
        client.close()


def test_a_callers_client_goes_through_its_execute_command(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = Counting.from_url(redis_server.url)
    single = own(redis.Redis.from_url(redis_server.url, single_connection_client=True))
    try:
        Counting.calls = 0
        execute(client, "SET", "direct:c", "1")
        assert run_script(client, LuaScript("t", "return ARGV[1]"), (), ("x",)) == b"x"
        assert Counting.calls == 3  # SET, then EVALSHA (not loaded yet) and EVAL
        # a single-connection client keeps its own lock and connection: never marked, so
        # no second connection is taken from its pool
        assert execute(single, "GET", "direct:c") == b"1"
        assert len(single.connection_pool._available_connections) == 0
        assert len(single.connection_pool._in_use_connections) == 1
    finally:
        client.close()
        single.close()


def test_run_script_loads_a_script_the_server_does_not_know(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = sync_client(redis_server.url, {"socket_timeout": 2.0}, cluster=False)
    script = LuaScript("direct_echo", "return {KEYS[1], ARGV[1]}")
    try:
        execute(client, "SCRIPT", "FLUSH")
        assert run_script(client, script, ("k",), ("a",)) == [b"k", b"a"]  # EVAL
        assert run_script(client, script, ("k",), ("b",)) == [b"k", b"b"]  # EVALSHA
    finally:
        client.close()


def test_async_twin_answers_and_recovers_from_cancellation(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async def main() -> None:
        client = async_client(redis_server.url, {"socket_timeout": 2.0}, cluster=False)
        try:
            await aexecute(client, "SET", "direct:a", "right")
            script = LuaScript("direct_async", "return redis.call('GET', KEYS[1])")
            assert await arun_script(client, script, ("direct:a",), ()) == b"right"
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await aexecute(client, "HGET", "direct:a", "f")
            with pytest.raises(asyncio.TimeoutError):  # cancelled while reading
                await asyncio.wait_for(aexecute(client, "EVAL", SLOW, 0), 0.05)
            await asyncio.sleep(0.4)
            assert await aexecute(client, "GET", "direct:a") == b"right"
        finally:
            await client.aclose()

    asyncio.run(main())
