"""Replication lag of RedisStore writes: how long a change stays invisible on a replica.

Replica reads (``read_from_replicas=True``) confirm a process's own changes with ``WAIT``; a
change made by another process without it is on a replica after the replication lag. This
measures that window. A master and one replica (tests/redis_server.py
``RedisSentinelSetup``, no Sentinel; ``--replicaof``, diskless sync) on free loopback ports;
never touches 6379. Redis 7 (the mirror path) and Redis 8.2 (the server path), one after
the other.

For each write: ``RedisStore.set`` on the master (answers of about 2 KB), then the master's
replication offset (``INFO replication``) is read and the replica's processed offset is
polled until it reaches it; the lag is the time from ``set`` returning to that poll. Two
phases: idle (nothing else running), and loaded (2 threads writing without pause and 2
threads looking up on the replica through a ``read_from_replicas`` store, beside the timed
writer). The poll itself is a round trip (its p50 is reported: a lag below it reads as one
poll).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_replication_lag.py
[--writes 500] (writes benchmarks/results/cache_redis_replication_lag.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache  # noqa: E402
from tests.redis_server import REDIS_BIN, RedisSentinelSetup, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_replication_lag.json"
ANSWER = "an answer of a couple of kilobytes. " * 56


def offset(client: Any) -> int:
    return int(client.info("replication")["master_repl_offset"])


def percentiles_ms(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(array, 50)), 3),
            "p99": round(float(np.percentile(array, 99)), 3),
            "max": round(float(array.max()), 3), "n": len(values),
            "slowest_at": int(array.argmax()), "over_100ms": int((array > 100).sum())}


def timed_writes(cache: SemanticCache, master: Any, replica: Any, tag: str,
                 writes: int) -> tuple[list[float], list[float]]:
    lags, polls = [], []
    for i in range(writes):
        cache.set(f"{tag} question number {i} about topic {i % 97}", {"answer": ANSWER})
        done = time.perf_counter()
        target = offset(master)
        while True:
            start = time.perf_counter()
            reached = offset(replica) >= target
            polls.append(time.perf_counter() - start)
            if reached:
                lags.append(time.perf_counter() - done)
                break
    return lags, polls


def run(binary: str, writes: int) -> dict[str, Any]:
    import redis

    setup = RedisSentinelSetup(replicas=1, sentinels=0, binary=binary).start()
    try:
        master = redis.Redis(port=setup.master.port)
        replica = redis.Redis(port=setup.replicas[0].port)
        embedder = HashingEmbedder(dim=384)
        store = RedisStore(setup.master.url, "lag", max_entries=None, timeout_ms=1000)
        cache = SemanticCache(embedder, threshold=0.9, verifier=None, store=store)
        loads = [os.getloadavg()[0]]
        lags, polls = timed_writes(cache, master, replica, "idle", writes)
        out: dict[str, Any] = {"path": store.status().get("search_path")}
        out["idle"] = {"lag_ms": percentiles_ms(lags), "poll_ms": percentiles_ms(polls)}
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            c = SemanticCache(embedder, threshold=0.9, verifier=None,
                              store=RedisStore(setup.master.url, "lag", max_entries=None,
                                               timeout_ms=1000))
            i = 0
            while not stop.is_set():
                c.set(f"background {n} question {i}", {"answer": ANSWER})
                i += 1

        def reader() -> None:
            c = SemanticCache(embedder, threshold=0.9, verifier=None,
                              store=RedisStore(setup.master.url, "lag", max_entries=None,
                                               timeout_ms=1000, read_from_replicas=True))
            i = 0
            while not stop.is_set():
                c.get(f"idle question number {i % writes} about topic {i % 97}")
                i += 1

        def guarded(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported in the JSON
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(writer, n)) for n in range(2)]
        threads += [threading.Thread(target=guarded, args=(reader,)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        loads.append(os.getloadavg()[0])
        lags, polls = timed_writes(cache, master, replica, "loaded", writes)
        loads.append(os.getloadavg()[0])
        stop.set()
        for t in threads:
            t.join()
        out["loaded"] = {"lag_ms": percentiles_ms(lags), "poll_ms": percentiles_ms(polls),
                         "background_errors": [repr(e) for e in errors]}
        out["load_average"] = [round(x, 2) for x in loads]
        store.close()
        return out
    finally:
        setup.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    result = {"redis7_mirror": run(REDIS_BIN, args.writes),
              "redis8_server": run(redis8_bin(), args.writes)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
