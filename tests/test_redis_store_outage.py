"""RedisStore fails open: a killed or a slow server never reaches or stalls the caller."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from tests.redis_server import RedisServer, wait_until
from tests.rendezvous import MEET_S

QUERIES = [f"outage question number {i} about topic {i * 7}" for i in range(20)]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    yield srv
    srv.stop()


def fill(cache: SemanticCache) -> bool:
    return all(cache.set(q, {"q": q}) for q in QUERIES)


@pytest.mark.slow
def test_sigkill_during_lookups_from_threads_and_tasks(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rag_optimize")
    # 200 ms: this test is about a dead server, not about timeouts of a CPU-starved process
    store = RedisStore(server.url, "outage", cooldown_ms=200, timeout_ms=200)
    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.8, store=store)
    assert fill(cache)
    phase = ["up"]
    stop = threading.Event()
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def record(started: str, hit: Any) -> None:
        if hit is not None:
            assert hit.response == {"q": hit.matched_query}
        with lock:
            results.append((started, hit is not None))

    def thread_worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            started = phase[0]
            try:
                record(started, cache.get(QUERIES[i % len(QUERIES)]))
            except BaseException as exc:  # noqa: BLE001 - must never happen
                errors.append(exc)
            i += 1
            time.sleep(0.001)

    async def task_worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            started = phase[0]
            try:
                record(started, await cache.aget(QUERIES[i % len(QUERIES)]))
            except BaseException as exc:  # noqa: BLE001 - must never happen
                errors.append(exc)
            i += 1
            await asyncio.sleep(0.001)

    async def tasks() -> None:
        await asyncio.gather(*(task_worker(i) for i in range(8)))

    workers = [threading.Thread(target=thread_worker, args=(i,)) for i in range(8)]
    workers.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        server.kill()
        phase[0] = "down"
        time.sleep(0.6)
        phase[0] = "restarting"
        server.start()  # same port, empty (no persistence)
        assert wait_until(lambda: fill(cache), timeout=10.0)
        phase[0] = "back"
        assert wait_until(lambda: sum(1 for p, h in results if p == "back" and h) > 50, 10.0)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert not errors, errors[:3]
    by_phase = {p: [h for q, h in results if q == p] for p in ("up", "down", "back")}
    assert any(by_phase["up"]) and any(by_phase["back"])
    assert len(by_phase["down"]) > 20 and not any(by_phase["down"])
    stats = cache.stats
    assert stats.store_errors > 0 and store.breaker.opened >= 1
    # reloads its mirror after the restart; the follower does it in the background, so the
    # hits above (own writes reach the mirror at once) can come before it: wait for it
    assert wait_until(lambda: store.status()["loads"] >= 2, timeout=10.0), store.status()
    # logged on state changes (kill, failed probes, restart), not per call
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 30, [r.getMessage() for r in warnings]
    assert stats.store_errors >= 50 * len(warnings)
    store.close()


@pytest.mark.slow
def test_slow_server_does_not_stall_callers(server: RedisServer) -> None:
    store = RedisStore(server.url, "slow", cooldown_ms=100, timeout_ms=50)
    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.8, store=store)
    assert fill(cache)
    assert cache.get(QUERIES[0]) is not None
    calls = 10  # per caller, every one while the server hangs
    answered: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def record(offset: int) -> None:
        with lock:
            answered.append(offset)

    def caller(offset: int) -> None:
        try:
            for i in range(offset, offset + calls):
                cache.get(QUERIES[i % len(QUERIES)])
                record(offset)
        except BaseException as exc:  # noqa: BLE001 - must never happen
            errors.append(exc)

    async def async_callers() -> None:
        async def one(offset: int) -> None:
            for i in range(offset, offset + calls):
                await cache.aget(QUERIES[i % len(QUERIES)])
                record(offset)

        try:
            await asyncio.gather(*(one(i) for i in range(10, 14)))
        except BaseException as exc:  # noqa: BLE001 - must never happen
            errors.append(exc)

    callers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(3)]
    callers.append(threading.Thread(target=asyncio.run, args=(async_callers(),), daemon=True))
    # SIGSTOP: the server hangs (connections open, nothing answered) until the test resumes it,
    # and it resumes it only after the callers are done: a caller that waited for an answer
    # anywhere would still be waiting, so no duration is measured.
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        for c in callers:
            c.start()
        wait_until(lambda: not any(c.is_alive() for c in callers), timeout=MEET_S)
        stalled = sum(c.is_alive() for c in callers)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert stalled == 0, f"{stalled} of {len(callers)} callers waited for the hung server"
    assert errors == []
    assert sorted(set(answered)) == [0, 1, 2, 10, 11, 12, 13]
    assert len(answered) == 7 * calls
    assert cache.stats.store_errors > 0
    assert wait_until(lambda: cache.get(QUERIES[1]) is not None, timeout=5.0)
    store.close()


def test_unreachable_server_at_start_is_a_cold_cache(clock: Any) -> None:
    dead = RedisServer()  # never started: connection refused
    store = RedisStore(dead.url, "cold", startup_wait_ms=100, cooldown_ms=100)
    cache = SemanticCache(HashingEmbedder(dim=64), store=store)
    assert cache.get("anything at all") is None
    assert cache.set("anything at all", 1) is False
    assert len(cache) == 0
    assert cache.stats.store_errors >= 1
    store.close()
